"""U-Net forward throughput: fp32 eager vs bf16 channels-last eager vs bf16 channels-last torch.compile.

Images/s, and achieved TFLOP/s over the bf16 matmul rate measured in the same run (DESIGN §4: one ddpm-cifar10
forward at 32×32 is 12.4 GFLOP per image). In smoke mode (CI, the interpreter) the tiny preset at 16×16 runs the two
eager variants once, to prove the suite works; its FLOPs come from torch's FlopCounterMode.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import ddpm_fast as df
from timing import median_seconds

CIFAR_GFLOP_PER_IMAGE = 12.4
GPU_BATCHES = [1, 16, 64, 256, 512]
CPU_BATCHES = [1, 8]


def benchmark_shapes():
    batches = GPU_BATCHES if torch.cuda.is_available() else CPU_BATCHES
    return [(batch, 3, 32, 32) for batch in batches]


def matmul_tflops(device: torch.device, smoke: bool) -> float:
    """The device's dense bf16 matmul rate, measured now (the ceiling the U-Net's convolutions aim at)."""
    size = 8192 if device.type == "cuda" else (256 if smoke else 1024)
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    return 2 * size ** 3 / median_seconds(lambda: a @ b, device, smoke) / 1e12


def counted_gflop_per_image(model, shape) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *shape[1:]), torch.tensor([1]))
    return counter.get_total_flops() / 1e9


def test_unet_forward(benchmark, device, smoke, shape):
    preset = "tiny" if smoke else "ddpm-cifar10"
    shape = (shape[0], 3, 16, 16) if smoke else shape
    benchmark.group = f"unet forward ({preset})"
    torch.manual_seed(0)
    reference = df.UNet.from_preset(preset).eval()
    counted = counted_gflop_per_image(reference, shape)
    gflop_per_image = CIFAR_GFLOP_PER_IMAGE if preset == "ddpm-cifar10" and shape[2:] == (32, 32) else counted
    reference = reference.to(device)
    fast = df.UNet.from_preset(preset).eval().to(device)
    fast.load_state_dict(reference.state_dict())
    fast = fast.to(torch.bfloat16, memory_format=torch.channels_last)

    x = torch.randn(shape, device=device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (shape[0],), device=device)
    variants = {"fp32_eager": lambda: reference(x, t), "bf16_cl_eager": lambda: fast(x_cl, t)}
    if not smoke:  # compiling the full model on a CI CPU takes minutes; tests/test_unet.py covers compile
        compiled = torch.compile(fast, fullgraph=True)
        variants["bf16_cl_compiled"] = lambda: compiled(x_cl, t)

    with torch.no_grad():
        expected = variants["fp32_eager"]()
        for name, run in variants.items():
            relative = ((run().float() - expected).norm() / expected.norm()).item()
            assert relative < 3e-2, f"{name}: relative error {relative:.3g} against fp32"
        times = {name: median_seconds(run, device, smoke) for name, run in variants.items()}
    ceiling = matmul_tflops(device, smoke)
    tflops = {name: gflop_per_image * shape[0] / seconds / 1e3 for name, seconds in times.items()}
    best = min(times, key=times.get)
    benchmark.extra_info.update({
        "kind": "unet_forward", "preset": preset, "shape": list(shape), "seconds": times,
        "images_per_s": {name: shape[0] / seconds for name, seconds in times.items()},
        "gflop_per_image": gflop_per_image, "counted_gflop_per_image": counted, "tflops": tflops,
        "matmul_tflops": ceiling, "fraction_of_matmul": {name: v / ceiling for name, v in tflops.items()},
        "speedup_vs_fp32_eager": {name: times["fp32_eager"] / seconds for name, seconds in times.items()},
        "best": best,
    })

    def timed():
        with torch.no_grad():
            variants[best]()
        if device.type == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(timed, rounds=1 if smoke else 10, warmup_rounds=0 if smoke else 2)
