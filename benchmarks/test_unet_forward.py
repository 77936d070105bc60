"""U-Net forward throughput: our UNet (bf16 channels-last, eager and torch.compile) vs fp32 eager and diffusers.

Variants, in one run per batch size, same weights:
  fp32_eager               our UNet in fp32, NCHW, eager: the naive reference.
  bf16_cl_eager            our UNet in bf16 channels-last, eager (fused GroupNorm kernels).
  bf16_cl_compiled         the same under torch.compile(fullgraph=True): ours, the headline.
  diffusers_fp32_eager     diffusers' UNet2DModel with the same weights, fp32 eager.
  diffusers_fp16_compile   the same in fp16 under torch.compile (GPU; on a CPU fp32 + compile:
                           diffusers_fp32_compile).
Images/s, and achieved TFLOP/s over the bf16 matmul rate measured once in the same session (benchmarks/models.py: one
ddpm-cifar10 forward at 32x32 is 12.4 GFLOP per image; other presets are counted by torch's FlopCounterMode). Every
variant's output is checked against fp32 eager before it is timed; inputs rotate through several sets.
GPU and full CPU runs: ddpm-cifar10 at 32x32, each batch size compiled afresh (static shapes). Quick runs
(`ddpm-fast bench --quick`): batch 2 and 8 (16 on a GPU), the tiny preset at 32x32 on a CPU, the models built and
compiled once with dynamic shapes for both batch sizes (compiling costs ~30 s per model on 2 CPU cores). Smoke mode
(CI, the interpreter): tiny at 16x16, batch 1, the eager variants once.
"""

from __future__ import annotations

import torch

import ddpm_fast as df
from models import diffusers_compiled_dtype, diffusers_unet, dtype_name, gflop_per_image
from timing import Rotating, compare_seconds

GPU_BATCHES = [1, 16, 64, 256, 512]
CPU_BATCHES = [1, 8]
RELATIVE_TOLERANCE = 3e-2  # bf16 / fp16 against fp32, relative L2 error of the output
_QUICK_BUILT: dict = {}  # quick mode: (preset, size) -> the models, compiled once (dynamic shapes) for every batch


def benchmark_shapes():
    batches = GPU_BATCHES if torch.cuda.is_available() else CPU_BATCHES
    return [(batch, 3, 32, 32) for batch in batches]


def quick_shapes():
    # Batch 2, not 1: torch.compile specializes a size of 1, so one dynamic-shape compile serves both sizes only
    # from 2 on.
    return [(2, 3, 32, 32), (16 if torch.cuda.is_available() else 8, 3, 32, 32)]


def build_variants(reference, device: torch.device, smoke: bool, unavailable: dict, dynamic=None) -> dict:
    """{name: (role, run(x, x_channels_last, t))}: role is "naive", "ours" or "peer"; `dynamic` goes to
    torch.compile."""
    fast = type(reference)(reference.config).eval().to(device)
    fast.load_state_dict(reference.state_dict())
    fast = fast.to(torch.bfloat16, memory_format=torch.channels_last)
    variants = {"fp32_eager": ("naive", lambda x, x_cl, t: reference(x, t)),
                "bf16_cl_eager": ("ours", lambda x, x_cl, t: fast(x_cl, t))}
    if not smoke:  # compiling a whole model on a CI CPU takes minutes; tests/test_unet.py covers compile
        compiled = torch.compile(fast, fullgraph=True, dynamic=dynamic)
        variants["bf16_cl_compiled"] = ("ours", lambda x, x_cl, t: compiled(x_cl, t))
    try:
        theirs = diffusers_unet(reference, device, torch.float32)
    except ImportError as error:
        unavailable["diffusers"] = f"unavailable: {error}"
        return variants
    variants["diffusers_fp32_eager"] = ("peer", lambda x, x_cl, t: theirs(x, t).sample)
    if smoke:
        unavailable["diffusers compile"] = "skipped in smoke mode (compile takes minutes on a CI CPU)"
        return variants
    dtype = diffusers_compiled_dtype(device)
    theirs_compiled = torch.compile(diffusers_unet(reference, device, dtype), dynamic=dynamic)
    variants[f"diffusers_{dtype_name(dtype)}_compile"] = (
        "peer", lambda x, x_cl, t: theirs_compiled(x.to(dtype), t).sample)
    return variants


def test_unet_forward(benchmark, device, smoke, quick, shape, bf16_matmul_tflops):
    on_gpu = device.type == "cuda"
    preset = "tiny" if smoke or (quick and not on_gpu) else "ddpm-cifar10"
    shape = (shape[0], 3, 16, 16) if smoke else shape
    benchmark.group = f"unet forward ({preset})"
    built = _QUICK_BUILT.get((preset, shape[2])) if quick else None
    if built is None:
        if not smoke:
            torch._dynamo.reset()  # each batch size compiles afresh, for its static shapes
        torch.manual_seed(0)
        reference = df.UNet.from_preset(preset, sample_size=shape[2]).eval()
        gflop, counted = gflop_per_image(reference, preset, shape)
        reference = reference.to(device)
        unavailable = {}
        variants = build_variants(reference, device, smoke, unavailable, dynamic=True if quick else None)
        built = (gflop, counted, variants, unavailable)
        if quick:
            _QUICK_BUILT[(preset, shape[2])] = built
    gflop, counted, variants, unavailable = built

    def make():
        x = torch.randn(shape, device=device)
        return x, x.contiguous(memory_format=torch.channels_last), torch.randint(0, 1000, (shape[0],), device=device)

    rotating = Rotating(make, 3 * x_bytes(shape), budget_bytes=64 << 20, cap=1 if smoke else 8)
    with torch.no_grad():
        first = rotating.sets[0]
        expected = variants["fp32_eager"][1](*first)
        for name, (_, run) in variants.items():  # each output checked before anything is timed
            relative = ((run(*first).float() - expected).norm() / expected.norm()).item()
            assert relative < RELATIVE_TOLERANCE, f"{name}: relative error {relative:.3g} against fp32 eager"
        times = compare_seconds({name: lambda run=run: run(*rotating.next()) for name, (_, run) in variants.items()},
                                device, smoke)
    ceiling = bf16_matmul_tflops
    tflops = {name: gflop * shape[0] / seconds / 1e3 for name, seconds in times.items()}
    roles = {name: role for name, (role, _) in variants.items()}
    ours = "bf16_cl_compiled" if "bf16_cl_compiled" in times else "bf16_cl_eager"
    peers = [name for name, role in roles.items() if role == "peer"]
    best_peer = min(peers, key=times.get) if peers else None
    benchmark.extra_info.update({
        "kind": "unet_forward", "preset": preset, "shape": list(shape), "batch": shape[0], "seconds": times,
        "roles": roles, "images_per_s": {name: shape[0] / seconds for name, seconds in times.items()},
        "gflop_per_image": gflop, "counted_gflop_per_image": counted, "tflops": tflops,
        "matmul_tflops": ceiling, "fraction_of_matmul": {name: v / ceiling for name, v in tflops.items()},
        "speedup_vs_fp32_eager": {name: times["fp32_eager"] / seconds for name, seconds in times.items()},
        "ours": ours, "best_peer": best_peer,
        "speedup_vs_best_peer": times[best_peer] / times[ours] if best_peer else None,
        "best": min(times, key=times.get), "unavailable": unavailable,
    })

    def timed():  # what pytest-benchmark records: our headline variant
        with torch.no_grad():
            variants[ours][1](*rotating.next())
        if on_gpu:
            torch.cuda.synchronize()

    benchmark.pedantic(timed, rounds=1 if smoke else (3 if quick else 10), warmup_rounds=0 if smoke else 1)


def x_bytes(shape) -> int:
    return shape[0] * shape[1] * shape[2] * shape[3] * 4
