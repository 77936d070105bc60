"""ONNX Runtime vs PyTorch sampling throughput: the same DDPM chain through OnnxSampler and through torch, one run.

Methods (per batch size, in the same process, on the same model, schedule and number of steps):
  naive                    `ddpm_fast.reference.sample`: the seed's loop, fp32, eager, one op at a time.
  torch_eager              FastSampler(dtype=float32, compile=False, cuda_graphs=False, channels_last=False):
                           "PyTorch eager", the fused update but no compile, no graphs, NCHW.
  fast                     FastSampler with its default options for the device (bf16 where native, channels-last,
                           torch.compile; CUDA graphs on a GPU). Not compiled in smoke mode.
  ort_cpu_step_fp32        OnnxSampler on the CPU provider with the fp32 ddpm_step graph (U-Net + update in ONNX
                           Runtime, one call per step; I/O binding to torch buffers). CPU runs only.
  ort_cpu_model_fp32       OnnxSampler on the CPU provider with the fp32 model graph: the U-Net in ONNX Runtime,
                           the fused update in torch. CPU runs only; not in smoke mode.
  ort_cuda_step_fp16       GPU only: the CUDA provider with the fp16 ddpm_step graph (fp32 x_t in and out), I/O
                           binding (always on in OnnxSampler).
  ort_cuda_step_fp16_graph the same with ONNX Runtime's CUDA graph (OnnxSampler(cuda_graph=True)).
  ort_cuda_step_fp32       the fp32 ddpm_step graph on the CUDA provider.
  ort_cuda_step_fp16_contrib  the fp16 step graph rewritten into ORT's CUDA contrib ops (fuse_contrib_ops: NHWC
                           GroupNorm / SkipGroupNorm, NhwcConv), when that module is present.
The ORT CUDA methods run on a side torch stream (OnnxSampler hands ORT torch's current stream; the legacy default
stream cannot be captured into a CUDA graph). When onnxruntime lacks the CUDA provider they are reported as
unavailable with that reason; `onnxruntime.get_available_providers()` is recorded either way.

Steps: a ddpm_step graph bakes its whole chain's coefficients, so OnnxSampler samples only the full chain of the
exported schedule. Every file is therefore exported with a linear schedule of exactly `steps_timed` steps
(NoiseSchedule.linear(steps_timed)) and every method samples that same short schedule: the same number of U-Net
calls and updates each. A step costs the same whichever timestep it is, so images/s are stated for a T = 1000 chain,
batch / (1000 x seconds per step), as in test_sampling.py. Timings: the whole sample() call, wall clock (synchronised
on a GPU), after a warm-up chain; median of `repeats` runs taken round-robin (a shared machine: its load average is
recorded, and the fastest run of each method is reported beside the median). Setup (export, ORT session, compile,
graph capture) is reported apart and is never in a timing. On a 2-core machine that other jobs share, torch's
OpenMP loops suffer more than ONNX Runtime's thread pool when a core is taken (measured: one busy-looping process
slows a ddpm-cifar10 forward 3.3x in torch, an ORT step 2.2x; other torch jobs on the machine made torch's chains vary
10x or more between runs while ORT's barely moved), so on a loaded machine the CPU medians favour ORT; the best runs
are closer to the figures of a quiet machine.

GPU: ddpm-cifar10 (35.7M parameters, random seeded weights) at 32x32, batch 1 and 64, 50 steps. Issue goals on an
H100/H200: FastSampler >= 1.3x the best ORT CUDA method at batch 1, and the best ORT CUDA fp16 method within 1.5x of
FastSampler (fast / ORT fp16 <= 1.5) at every batch.
CPU (2 cores): ddpm-cifar10 at 32x32 for batch 1 and the tiny preset at 32x32 for batch 64, 3 steps. ddpm-cifar10 at
batch 64 takes ~5-6 s per forward on two quiet cores (torch fp32; an ORT step ~5 s; 20 s when the machine is loaded):
warm-up plus 7 repeats of 5 methods at 3 steps would be ~10 min for that case alone, so the batch-64 CPU case uses
the tiny preset; DDPM_FAST_ONNX_PRESET=ddpm-cifar10 forces one preset for every batch.
Smoke mode (--benchmark-disable, CI on the torch references): tiny at 16x16, batch 1, 2 steps, one export (the
fp32 ddpm_step graph), whole-model runs on the torch references (`cpu_reference`), FastSampler not compiled.
Quick mode (`ddpm-fast bench --quick`): batch 1, 3 repeats; on a CPU the tiny preset at 32x32 and the step graph only
(no model-graph export).

Correctness before timing: the ORT CPU fp32 step graph with generator noise equals FastSampler fp32 eager within 1e-4
(on the timed case on a CPU; at batch 1 on a CPU copy of the model on a GPU machine); on a GPU, every ORT CUDA
method's difference from FastSampler fp32 eager (no TF32) on the same noise is recorded. Every timed method's images
must be finite and in [-1, 1].

Env: DDPM_FAST_ONNX_BATCHES=1,64, DDPM_FAST_ONNX_STEPS=3, DDPM_FAST_ONNX_PRESET=<preset>.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from typing import Callable, Optional

import pytest
import torch

import ddpm_fast as df
import test_sampling as sampling  # the end-to-end benchmark's helpers (its test function is not collected here)
from ddpm_fast.cli.bench import THREADS_ENV
from ddpm_fast.kernels import cpu_reference, launch

T_FULL = sampling.T_FULL
BATCHES = [1, 64]
QUICK_BATCHES = [1]
GPU_STEPS_TIMED, CPU_STEPS_TIMED, SMOKE_STEPS = 50, 3, 2
GPU_REPEATS, CPU_REPEATS, QUICK_REPEATS = 5, 7, 3
GPU_PRESET = "ddpm-cifar10"
CPU_PRESETS = {1: "ddpm-cifar10"}  # any other batch: "tiny" (ddpm-cifar10 at batch 64 is minutes per method)
PARITY_TOLERANCE = 1e-4
PARITY_SEED = 1
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
REQUIRED = ("naive", "torch_eager", "fast", "ort_cpu_step_fp32")  # the rest are reported as unavailable on failure

# The goals (GPU): FastSampler over the best ORT CUDA method at batch 1; the best ORT CUDA fp16 method
# within this factor of FastSampler at every batch.
GPU_GOAL_FAST_OVER_ORT = (1, 1.3)
GPU_GOAL_ORT_FP16_WITHIN = 1.5

_EXPORTS: dict[tuple, dict] = {}  # (preset, size, graph, dtype, steps) -> {"path", "seconds"}: shared by the cases


def benchmark_shapes():
    return [(batch, 3, 32, 32) for batch in (sampling._env_ints("DDPM_FAST_ONNX_BATCHES") or BATCHES)]


def quick_shapes():
    return [(batch, 3, 32, 32) for batch in (sampling._env_ints("DDPM_FAST_ONNX_BATCHES") or QUICK_BATCHES)]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_runtime")


def _guard():
    """Whole-model runs take the torch references on CPU tensors under the interpreter (minutes otherwise)."""
    return cpu_reference() if launch.TRITON_INTERPRETED else contextlib.nullcontext()


_sync = sampling._sync
Method = sampling.Method


# ---------------------------------------------------------------------------------------------------- exports


class Exports:
    """The ONNX files of one case, exported on first use and shared with later cases (one export of ddpm-cifar10
    costs about a minute on a 2-core CPU). Records what each case used and what each export cost."""

    def __init__(self, folder, model, preset: str, size: int, steps: int):
        self.folder, self.model, self.preset, self.size, self.steps = folder, model, preset, size, steps
        self.used: dict[str, dict] = {}

    def path(self, graph: str, dtype: torch.dtype):
        from ddpm_fast.export import export_onnx

        dtype_name = str(dtype).replace("torch.", "")
        key = (self.preset, self.size, graph, dtype_name, self.steps)
        name = f"{self.preset}-{self.size}px-{graph}-{dtype_name}-T{self.steps}.onnx"
        entry = _EXPORTS.get(key)
        reused = entry is not None and entry["path"].is_file()
        if not reused:
            start = time.perf_counter()
            with _guard():
                path = export_onnx(self.model, self.folder / name, sample_shape=(3, self.size, self.size),
                                   graph=graph, schedule=df.NoiseSchedule.linear(self.steps), dtype=dtype)
            entry = {"path": path, "seconds": time.perf_counter() - start}
            _EXPORTS[key] = entry
        self.used[name] = {"seconds": entry["seconds"], "reused": reused,
                           "mb": entry["path"].stat().st_size / 2**20}
        return entry["path"]

    def contrib(self, source):
        """The fp16 step graph rewritten into ORT's CUDA contrib ops (no re-export: ORT's optimizer on the file)."""
        from ddpm_fast.export.contrib_ops import fuse_contrib_ops

        target = source.with_name(source.stem + "-contrib.onnx")
        start = time.perf_counter()
        if not target.is_file():
            fuse_contrib_ops(source, target)
        self.used[target.name] = {"seconds": time.perf_counter() - start, "reused": False,
                                  "mb": target.stat().st_size / 2**20, "fuse_contrib_ops": True}
        return target


# ---------------------------------------------------------------------------------------------------- methods


def fast_method(name: str, model, schedule, batch: int, shape: tuple, device: torch.device, **options) -> Method:
    """FastSampler on the short schedule, seeded (in-kernel Philox noise); the whole sample() call is timed."""
    sampler = df.FastSampler(model, schedule, sample_shape=shape, device=device, **options)

    def run(steps: int):
        assert steps == schedule.num_timesteps
        _sync(device)
        start = time.perf_counter()
        images = sampler.sample(batch, seed=0)
        _sync(device)
        return images, time.perf_counter() - start

    method = Method(name, run, {"dtype": str(sampler.dtype).replace("torch.", ""),
                                "channels_last": sampler.channels_last, "compile": sampler.compiled,
                                "cuda_graphs": sampler.cuda_graphs, "steps_per_graph": sampler.steps_per_graph})
    method.sampler = sampler
    method.prepare = lambda: sampler.warm_up(batch)
    return method


def session_options():
    """ONNX Runtime's options: its default thread pool, or as many intra-op threads as torch has under
    `ddpm-fast bench --threads N`, so neither runtime gets more cores than the other."""
    if not os.environ.get(THREADS_ENV):
        return None
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return options


def ort_threads() -> str:
    return str(torch.get_num_threads()) if os.environ.get(THREADS_ENV) else "default (one per physical core)"


def ort_method(name: str, path, batch: int, providers: list, *, cuda_graph: bool = False,
               stream: Optional["torch.cuda.Stream"] = None) -> Method:
    """OnnxSampler from an export_onnx file, seeded like FastSampler; the whole sample() call is timed. On the CUDA
    provider the sampler is built and run on `stream` (the ORT session takes torch's current stream)."""
    from ddpm_fast.export import OnnxSampler

    def on_stream():
        return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

    start = time.perf_counter()
    with on_stream():
        sampler = OnnxSampler(path, providers=providers, cuda_graph=cuda_graph, session_options=session_options())
    session_seconds = time.perf_counter() - start
    if CUDA in providers and not sampler.uses_cuda:
        raise RuntimeError(f"the session took {sampler.session.get_providers()}, not the CUDA provider")
    steps_in_file = sampler.schedule.num_timesteps

    def run(steps: int):
        assert steps == steps_in_file
        with on_stream():
            _sync(sampler.device)
            start = time.perf_counter()
            with _guard():
                images = sampler.sample(batch, seed=0)
            _sync(sampler.device)
        return images, time.perf_counter() - start

    method = Method(name, run, {"dtype": sampler.metadata["dtype"], "graph": sampler.graph,
                                "provider": sampler.session.get_providers()[0], "cuda_graph": sampler.cuda_graph,
                                "io_binding": True, "file": path.name})
    method.sampler = sampler
    method.setup_seconds = session_seconds
    method.on_stream = on_stream
    return method


def _optional(methods: list, unavailable: dict, name: str, build: Callable[[], Method]) -> None:
    try:
        methods.append(build())
    except Exception as error:  # noqa: BLE001 — an optional method this machine cannot build is reported
        unavailable[name] = f"failed: {type(error).__name__}: {str(error)[:300]}"


def build_methods(model, schedule, batch: int, shape: tuple, device: torch.device, smoke: bool,
                  exports: Exports, providers: list, no_ort: Optional[str],
                  quick: bool = False) -> tuple[list[Method], dict]:
    """Every method this machine runs, and {name: reason} for the ones it cannot (no_ort: why there is no
    onnxruntime at all, if so: then the torch methods alone are measured)."""
    methods = [sampling.naive_method(model, batch, shape, device),
               fast_method("torch_eager", model, schedule, batch, shape, device, dtype=torch.float32, compile=False,
                           cuda_graphs=False, channels_last=False)]
    # compiling takes minutes on a CI CPU; the smoke run proves the suite, not the speed
    methods.append(fast_method("fast", model, schedule, batch, shape, device, **({"compile": False} if smoke else {})))
    unavailable = {}
    cuda_names = ("ort_cuda_step_fp16", "ort_cuda_step_fp16_graph", "ort_cuda_step_fp32", "ort_cuda_step_fp16_contrib")
    if no_ort:
        for name in ("ort_cpu_step_fp32", "ort_cpu_model_fp32", *cuda_names):
            unavailable[name] = no_ort
        return methods, unavailable
    if device.type != "cuda":
        methods.append(ort_method("ort_cpu_step_fp32", exports.path("ddpm_step", torch.float32), batch, [CPU]))
        if smoke or quick:
            unavailable["ort_cpu_model_fp32"] = (f"skipped in {'smoke' if smoke else 'quick'} mode (one more export, "
                                                 "~20 s on a 2-core CPU)")
        else:
            _optional(methods, unavailable, "ort_cpu_model_fp32",
                      lambda: ort_method("ort_cpu_model_fp32", exports.path("model", torch.float32), batch, [CPU]))
        for name in cuda_names:
            unavailable[name] = "no CUDA device in this run (CPU machine)"
        return methods, unavailable

    for name in ("ort_cpu_step_fp32", "ort_cpu_model_fp32"):
        unavailable[name] = "not run on the GPU machine (ORT CPU vs PyTorch CPU is the CPU run's comparison)"
    if CUDA not in providers:
        for name in cuda_names:
            unavailable[name] = f"this onnxruntime has no CUDAExecutionProvider (providers: {', '.join(providers)})"
        return methods, unavailable
    stream = torch.cuda.Stream(device)
    gpu = [CUDA, CPU]
    _optional(methods, unavailable, "ort_cuda_step_fp16",
              lambda: ort_method("ort_cuda_step_fp16", exports.path("ddpm_step", torch.float16), batch, gpu,
                                 stream=stream))
    _optional(methods, unavailable, "ort_cuda_step_fp16_graph",
              lambda: ort_method("ort_cuda_step_fp16_graph", exports.path("ddpm_step", torch.float16), batch, gpu,
                                 cuda_graph=True, stream=stream))
    _optional(methods, unavailable, "ort_cuda_step_fp32",
              lambda: ort_method("ort_cuda_step_fp32", exports.path("ddpm_step", torch.float32), batch, gpu,
                                 stream=stream))
    _optional(methods, unavailable, "ort_cuda_step_fp16_contrib",
              lambda: ort_method("ort_cuda_step_fp16_contrib",
                                 exports.contrib(exports.path("ddpm_step", torch.float16)), batch, gpu,
                                 stream=stream))
    return methods, unavailable


# ---------------------------------------------------------------------------------------------------- checks


def parity(methods: list[Method], model, schedule, batch: int, shape: tuple, device: torch.device,
           exports: Exports, has_ort: bool, unavailable: dict) -> dict:
    """The ORT CPU fp32 step graph and FastSampler fp32 eager give the same images from the same torch noise
    (generator=): asserted within PARITY_TOLERANCE. On a GPU machine the check runs on a CPU copy at batch 1, and each
    ORT CUDA method's difference from FastSampler fp32 eager on the GPU (TF32 off) is recorded; an ORT CUDA method
    that fails here is taken out of `methods` and reported in `unavailable`."""
    def gen():
        return torch.Generator().manual_seed(PARITY_SEED)

    by_name = {m.name: m for m in methods}
    result = {}
    with torch.no_grad(), _guard():
        if device.type != "cuda":
            expected = by_name["torch_eager"].sampler.sample(batch, generator=gen())
            for name in ("ort_cpu_step_fp32", "ort_cpu_model_fp32"):
                if name in by_name:
                    got = by_name[name].sampler.sample(batch, generator=gen())
                    result[f"{name}_vs_torch_eager_max_abs"] = (got - expected).abs().max().item()
        elif has_ort:
            from ddpm_fast.export import OnnxSampler

            cpu_fast = df.FastSampler(model, schedule, sample_shape=shape, device="cpu", dtype=torch.float32,
                                      compile=False, cuda_graphs=False, channels_last=False)
            cpu_ort = OnnxSampler(exports.path("ddpm_step", torch.float32), providers=[CPU])
            expected = cpu_fast.sample(1, generator=gen())
            got = cpu_ort.sample(1, generator=gen())
            result["ort_cpu_step_fp32_vs_torch_eager_max_abs (CPU, batch 1)"] = (got - expected).abs().max().item()
    for name, error in result.items():
        assert error < PARITY_TOLERANCE, f"parity: {name} = {error:.3g} (tolerance {PARITY_TOLERANCE})"
    if device.type == "cuda":
        with torch.no_grad(), sampling._no_tf32():
            expected = by_name["torch_eager"].sampler.sample(batch, generator=gen())
            for method in [m for m in methods if m.name.startswith("ort_cuda")]:
                try:
                    with method.on_stream():
                        got = method.sampler.sample(batch, generator=gen())
                        torch.cuda.current_stream().synchronize()
                except Exception as error:  # noqa: BLE001 — an optional method this machine cannot run is reported
                    methods.remove(method)
                    unavailable[method.name] = f"failed: {type(error).__name__}: {str(error)[:300]}"
                    continue
                result[f"{method.name}_vs_torch_eager_max_abs (not asserted)"] = (got - expected).abs().max().item()
    return result


# ------------------------------------------------------------------------------------------------ the benchmark


def goals(batch: int, images_per_s: dict, device: torch.device) -> tuple[dict, list]:
    """({goal: met}, [goals that could not be measured]) for the issue's GPU goals; none on a CPU."""
    if device.type != "cuda":
        return {}, []
    fast = images_per_s["fast"]
    met, unmeasured = {}, []
    cuda = [name for name in images_per_s if name.startswith("ort_cuda")]
    fp16 = [name for name in cuda if "fp16" in name]
    goal_batch, factor = GPU_GOAL_FAST_OVER_ORT
    first = f"fast >= {factor:g}x best ORT CUDA"
    if batch == goal_batch:
        if cuda:
            met[first] = fast >= factor * max(images_per_s[name] for name in cuda)
        else:
            unmeasured.append(first)
    second = f"best ORT CUDA fp16 within {GPU_GOAL_ORT_FP16_WITHIN:g}x of fast"
    if fp16:
        met[second] = GPU_GOAL_ORT_FP16_WITHIN * max(images_per_s[name] for name in fp16) >= fast
    else:
        unmeasured.append(second)
    return met, unmeasured


def test_onnx_runtime(benchmark, device, smoke, quick, shape, export_dir):
    try:
        import onnxruntime as ort
    except ImportError as error:  # the GPU machine may lack the [onnx] extra: measure the torch methods alone
        ort, no_ort = None, f"onnxruntime is not installed here ({error})"
    else:
        no_ort = None
    batch = shape[0]
    on_gpu = device.type == "cuda"
    forced = os.environ.get("DDPM_FAST_ONNX_PRESET", "").strip()
    if smoke:
        preset, size = "tiny", 16
    else:
        cpu_preset = "tiny" if quick else CPU_PRESETS.get(batch, "tiny")
        preset, size = forced or (GPU_PRESET if on_gpu else cpu_preset), shape[2]
    sample_shape = (3, size, size)
    steps = SMOKE_STEPS if smoke else (sampling._env_ints("DDPM_FAST_ONNX_STEPS") or
                                       [GPU_STEPS_TIMED if on_gpu else CPU_STEPS_TIMED])[0]
    repeats = 1 if smoke else (QUICK_REPEATS if quick else (GPU_REPEATS if on_gpu else CPU_REPEATS))
    providers = ort.get_available_providers() if ort is not None else []
    benchmark.group = f"onnx runtime ({'GPU' if on_gpu else 'CPU'})"
    if not smoke:
        torch._dynamo.reset()  # each case compiles afresh: honest setup_seconds, no recompile limit

    load_before = os.getloadavg()  # a shared CPU machine: the busier it is, the noisier the figures
    torch.manual_seed(0)
    model = df.UNet.from_preset(preset, sample_size=size).eval()
    parameters = sum(p.numel() for p in model.parameters())
    schedule = df.NoiseSchedule.linear(steps)  # every method's chain: exactly `steps` steps
    exports = Exports(export_dir, model, preset, size, steps)
    model = model.to(device)
    with torch.no_grad():
        methods, unavailable = build_methods(model, schedule, batch, sample_shape, device, smoke, exports, providers,
                                             no_ort, quick)
        checked = parity(methods, model, schedule, batch, sample_shape, device, exports, ort is not None,
                         unavailable)

        warm_up = {}
        for method in list(methods):  # warm-up: compile, capture, cuDNN search, lazy init; then the images checked
            start = time.perf_counter()
            try:
                with _guard():
                    if hasattr(method, "prepare"):
                        method.setup_seconds += method.prepare()
                    images, _ = method.run(steps)
            except Exception as error:  # noqa: BLE001 — an optional method this machine cannot run is reported
                if method.name in REQUIRED:
                    raise
                methods.remove(method)
                unavailable[method.name] = f"failed: {type(error).__name__}: {str(error)[:300]}"
                continue
            warm_up[method.name] = time.perf_counter() - start
            sampling.check_images(method.name, images, batch, sample_shape)
        for _ in range(repeats):  # round-robin, so a slow patch of a shared machine hits every method alike
            for method in methods:
                with _guard():
                    method.samples.append(method.run(steps)[1])
        fell_back = sampling.record_what_ran(methods)

    per_step = {m.name: statistics.median(m.samples) / steps for m in methods}
    best_per_step = {m.name: min(m.samples) / steps for m in methods}
    for method in methods:
        if method.name == "naive":  # its setup: what its first (warm-up) chain took beyond a timed one
            method.setup_seconds = max(0.0, warm_up[method.name] - statistics.median(method.samples))
        elif method.name.startswith("ort"):  # the session, plus what its first chain took beyond a timed one
            method.setup_seconds += max(0.0, warm_up[method.name] - statistics.median(method.samples))
    images_per_s = {name: batch / (seconds * T_FULL) for name, seconds in per_step.items()}
    best_images_per_s = {name: batch / (seconds * T_FULL) for name, seconds in best_per_step.items()}
    ort_names = [name for name in images_per_s if name.startswith("ort")]
    best_ort = max(ort_names, key=images_per_s.get) if ort_names else None
    met, unmeasured = goals(batch, images_per_s, device)
    if "fast" in fell_back:  # its figures are not ours: no goal of FastSampler's is met by them
        met = {"fast ran without falling back": False}
    benchmark.extra_info.update({
        "kind": "onnx_runtime", "preset": preset, "parameters": parameters, "batch": batch,
        "sample_shape": list(sample_shape), "device": device.type, "num_timesteps": T_FULL, "steps_timed": steps,
        "repeats": repeats,
        "note": f"every method samples the same {steps}-step linear schedule (the step graphs bake it) after a "
                f"warm-up chain; the whole sample() call is timed, median of {repeats} round-robin runs; images/s "
                f"are stated for a {T_FULL}-step chain, batch / ({T_FULL} x seconds per step)"
                + ("" if on_gpu or smoke or forced or preset != "tiny" else
                   "; quick mode: the tiny preset on a CPU (a ddpm-cifar10 export and its runs take minutes)" if quick
                   else f"; CPU batch {batch} uses the tiny preset (ddpm-cifar10 at batch 64 is ~5-6 s per forward on "
                   "two quiet cores, ~10 min for this case's runs)"),
        "seconds_per_step": per_step, "chain_seconds": {m.name: m.samples for m in methods},
        "images_per_s": images_per_s, "setup_seconds": {m.name: m.setup_seconds for m in methods},
        "warm_up_seconds": warm_up, "options": {m.name: m.options for m in methods}, "unavailable": unavailable,
        "fell_back": fell_back,
        "speedup_vs_naive": {name: v / images_per_s["naive"] for name, v in images_per_s.items()},
        "speedup_vs_torch_eager": {name: v / images_per_s["torch_eager"] for name, v in images_per_s.items()},
        "fast_over": {name: images_per_s["fast"] / images_per_s[name] for name in ort_names},
        "best_seconds_per_step": best_per_step, "best_images_per_s": best_images_per_s,
        "fast_over_best_runs": {name: best_images_per_s["fast"] / best_images_per_s[name] for name in ort_names},
        "torch_eager_over": {name: images_per_s["torch_eager"] / images_per_s[name] for name in ort_names},
        "best_ort": best_ort, "goals": met, "goals_unmeasured": unmeasured,
        "onnxruntime": ort.__version__ if ort is not None else no_ort, "providers": providers,
        "cuda_provider_usable": on_gpu and CUDA in providers,
        "ort_intra_op_threads": ort_threads(), "torch_threads": torch.get_num_threads(),
        "export_seconds": {name: used["seconds"] for name, used in exports.used.items()}, "exports": exports.used,
        "parity": checked, "parity_tolerance": PARITY_TOLERANCE,
        "load_average": {"before": load_before, "after": os.getloadavg()},
    })

    fast = next(m for m in methods if m.name == "fast")

    def timed():  # what pytest-benchmark records: one more FastSampler chain of steps_timed steps
        with _guard():
            fast.run(steps)
        _sync(device)

    benchmark.pedantic(timed, rounds=1, warmup_rounds=0)
