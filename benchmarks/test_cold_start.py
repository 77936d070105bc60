"""Cold start: a fresh process, from its start to its first images, against the same chain run warm.

Methods (each a fresh Python process, run in turn; each samples the same chain twice, cold and then warm):
  fast_pt2      FastSampler.from_pretrained(package): the U-Net compiled ahead of time by `export_pt2` (done once,
                before, in this process: export_seconds) and loaded; nothing is compiled in the process.
  fast          FastSampler.from_pretrained(folder) with its defaults (on a CPU the policy compiles only a chain long
                enough to pay for it; on a GPU it compiles).
  fast_compile  the same with compile=True: the torch.compile a package replaces. Its process gets an empty inductor
                cache (TORCHINDUCTOR_CACHE_DIR), as a new machine or a new model version has.
  fast_compile_cached  compile=True again, in a process given the cache fast_compile filled: what torch's own
                compile caches save a later process (dynamo still traces; inductor finds its compiled code).
  diffusers     diffusers' DDPMPipeline on UNet2DModel with the same weights, eager (what users run instead).
Each process reports the seconds from before its `import torch` to the first chain's images (cold: imports, loading,
setup, compile and the chain) and the second chain's seconds (warm). cold_over_warm = cold / warm per method. Issue
goal: fast_pt2's cold ≤ 1.5× its warm chain ("≤ 1.5× the warm time, by loading compiled code instead of compiling").

Cases (preset, H = W, batch, DDPM steps; random seeded weights, setup linear T = 1000, seed=0): ddpm-cifar10 at batch
16 with 20 steps (the issue's case) and the tiny preset at batch 1 with 20 steps; float32 on a CPU (the sampler's
default there, and the package's dtype), bf16 for CUDA on a GPU. Smoke mode (--benchmark-disable, CI): tiny at 8×8,
batch 2, 2 steps, fast_pt2 and fast (every process on the torch references). Quick mode (`ddpm-fast bench --quick`):
tiny at batch 1, 10 steps, without the compiling methods.
Each method's first images are checked against fast's (within 1e-3: a package runs inductor's fp32 code).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file

import ddpm_fast as df
from ddpm_fast.export import export_pt2
from ddpm_fast.models.pt2_package import load_pt2

CHILD = r"""
import json, sys, time
start = float(sys.argv[1])  # the parent's clock just before it started this process
import torch
import ddpm_fast as df
method, folder, package, batch, steps, out = sys.argv[2:8]
batch, steps = int(batch), int(steps)
sampler = None
if method == "diffusers":
    import diffusers
    from ddpm_fast.models.config import config_to_diffusers
    ours = df.UNet.load(folder)
    unet = diffusers.UNet2DModel.from_config(config_to_diffusers(ours.config))
    unet.load_state_dict(ours.state_dict(), strict=True)
    unet = unet.to("cuda" if torch.cuda.is_available() else "cpu").eval().requires_grad_(False)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                                        beta_end=0.02, variance_type="fixed_small", clip_sample=False)
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)

    def chain():
        with torch.no_grad():
            images = pipe(batch_size=batch, num_inference_steps=steps, output_type="np",
                          generator=torch.Generator().manual_seed(0)).images
        return torch.from_numpy(images).permute(0, 3, 1, 2) * 2.0 - 1.0
else:
    if method == "fast_pt2":
        sampler = df.FastSampler.from_pretrained(package)
    else:
        sampler = df.FastSampler.from_pretrained(folder, compile=True if method.startswith("fast_compile") else None)

    def chain():
        return sampler.sample(batch, seed=0, num_inference_steps=steps).float().cpu()
first = chain()
cold = time.time() - start
again = time.perf_counter()
chain()
warm = time.perf_counter() - again
from ddpm_fast import files
files.save_tensors(out + ".safetensors", {"images": first.contiguous()})
report = sampler.last_report if sampler is not None else None
with open(out, "w") as handle:
    json.dump({"cold_seconds": cold, "warm_seconds": warm,
               "decision": report.compile_decision if report is not None else "diffusers eager",
               "fallbacks": list(report.fallbacks) if report is not None else []}, handle)
"""

METHODS = ("fast_pt2", "fast", "fast_compile", "fast_compile_cached", "diffusers")


def benchmark_shapes():
    """(preset, H = W, batch, DDPM steps) of each case; smoke mode runs the first at 8x8, batch 2, 2 steps."""
    return [("tiny", 32, 1, 20), ("ddpm-cifar10", 32, 16, 20)]


def quick_shapes():
    return [("tiny", 32, 1, 10)]


GOAL_COLD_OVER_WARM = 1.5
GOAL_CASE = ("ddpm-cifar10", 32, 16, 20)  # the issue's: a goal for this case only


def _child_env(cache_dir: str | None) -> dict:
    """This environment without the interpreter (a user's process: CPU tensors take the torch references), with
    an inductor cache of its own where given."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if cache_dir is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    return env


def test_cold_start(benchmark, device, smoke, quick, shape, tmp_path):
    preset, size, batch, steps = (shape[0], 8, 2, 2) if smoke else shape
    benchmark.group = f"cold start ({preset}, batch {batch})"
    torch.manual_seed(0)
    unet = df.UNet.from_preset(preset, sample_size=size).eval()
    setup = df.DiffusionSetup.from_schedule(df.NoiseSchedule.linear(1000), sample_shape=unet.config.sample_shape)
    folder = unet.save(tmp_path / "unet", setup=setup)
    package = tmp_path / "unet.pt2"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    start = time.perf_counter()
    export_pt2(folder, package, device=device.type, dtype=dtype)
    export_seconds = time.perf_counter() - start
    methods = ("fast_pt2", "fast") if smoke else ("fast_pt2", "fast", "diffusers") if quick else METHODS
    results, images = {}, {}
    cache = tempfile.mkdtemp(prefix="inductor-", dir=tmp_path)  # fast_compile fills it, fast_compile_cached reads it
    for method in methods:
        out = tmp_path / f"{method}.json"
        argv = [sys.executable, "-c", CHILD, repr(time.time()), method, str(folder), str(package), str(batch),
                str(steps), str(out)]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=1800,
                             env=_child_env(cache if method.startswith("fast_compile") else None))
        assert run.returncode == 0, f"{method}: {run.stderr[-3000:]}"
        results[method] = json.loads(out.read_text())
        images[method] = load_file(f"{out}.safetensors")["images"]
    for method in methods:  # the same chain: the package's (or diffusers') images are fast's
        if method != "diffusers":
            torch.testing.assert_close(images[method], images["fast"], rtol=1e-3, atol=1e-3, msg=method)
        assert images[method].isfinite().all(), method
    benchmark.pedantic(lambda: load_pt2(package), rounds=1, iterations=1)  # loading a package, in this process
    cold = {method: result["cold_seconds"] for method, result in results.items()}
    warm = {method: result["warm_seconds"] for method, result in results.items()}
    ratio = {method: cold[method] / warm[method] for method in results}
    has_goal = (preset, size, batch, steps) == GOAL_CASE
    fell_back = {method: "; ".join(result["fallbacks"]) for method, result in results.items() if result["fallbacks"]}
    benchmark.extra_info.update({
        "kind": "cold_start", "preset": preset, "batch": batch, "steps": steps, "image_size": size,
        "sample_shape": list(unet.config.sample_shape), "dtype": str(dtype).replace("torch.", ""),
        "export_seconds": export_seconds, "package_bytes": package.stat().st_size,
        "cold_seconds": cold, "warm_seconds": warm, "cold_over_warm": ratio,
        "decisions": {method: result["decision"] for method, result in results.items()},
        "fell_back": fell_back, "goal_cold_over_warm": GOAL_COLD_OVER_WARM if has_goal else None,
        "goal_met": has_goal and ratio["fast_pt2"] <= GOAL_COLD_OVER_WARM and "fast_pt2" not in fell_back,
    })
