"""Classifier-free guidance: the cost of a guided step, ours against diffusers' pipeline-style loops, in one run.

Methods (per batch size B, one class-conditional model, the same weights everywhere):
  fast_guided           FastSampler.sample(B, class_labels=..., guidance_scale=w): one model call of 2B per step
                        (the labels, then the null class), the combination u + w·(c − u) fused into the update kernel,
                        inside the same compiled step and CUDA graph as unguided sampling.
  fast_conditional_2B   FastSampler at batch 2B with class labels and no guidance: the same model work without the
                        combination. The issue's goal: fast_guided costs at most 5 % more per step (GPU).
  diffusers_concat      diffusers' UNet2DModel and DDPMScheduler in the loop diffusers' pipelines write: the batch
                        doubled by torch.cat, the output chunked, u + w·(c − u) in torch, scheduler.step.
  diffusers_two_pass    the same with two model calls per step (conditional, then unconditional).
The diffusers loops run fp16 under torch.compile on a GPU (its usual recipe), fp32 eager on a CPU.

GPU: ddpm-cifar10 with a class embedding (10 classes + the null class) at 32×32, batch 16 and 128, 50 steps timed.
CPU: the tiny preset at 32×32 with the same embedding, batch 1 and 4 (quick mode: batch 1), 20 steps.
Smoke mode (CI): tiny at 16×16, batch 1, 2 steps, whole-model runs on the torch references.
Every method runs the same respaced chain length after a warm-up; figures are seconds per step (median over rounds,
round-robin so a busy patch of a shared CPU hits every method alike) and images/s of a 1000-step chain.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time

import torch

import ddpm_fast as df
from ddpm_fast.kernels import cpu_reference, launch
from models import diffusers_compiled_dtype, diffusers_unet, dtype_name

T_FULL = 1000
NUM_CLASSES = 10  # + the null class
GUIDANCE_SCALE = 3.0
GPU_BATCHES, CPU_BATCHES, QUICK_CPU_BATCHES = [16, 128], [1, 4], [1]
GPU_STEPS, CPU_STEPS, SMOKE_STEPS = 50, 20, 2
GPU_ROUNDS, CPU_ROUNDS, QUICK_ROUNDS = 5, 11, 3
GPU_GOAL_OVERHEAD = 0.05  # fast_guided over fast_conditional_2B, per step


def _on_gpu() -> bool:
    return torch.cuda.is_available()


def benchmark_shapes():
    batches = GPU_BATCHES if _on_gpu() else CPU_BATCHES
    return [(batch, 3, 32, 32) for batch in batches]


def quick_shapes():
    return [(batch, 3, 32, 32) for batch in (GPU_BATCHES if _on_gpu() else QUICK_CPU_BATCHES)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _labels(batch: int, device: torch.device) -> torch.Tensor:
    return torch.arange(batch, device=device) % NUM_CLASSES


def fast_run(sampler, batch: int, guided: bool):
    labels = _labels(batch, sampler.device)
    guidance = GUIDANCE_SCALE if guided else None

    def run(steps: int) -> tuple[torch.Tensor, float]:
        images = sampler.sample(batch, seed=0, num_inference_steps=steps, class_labels=labels,
                                guidance_scale=guidance)
        return images, sampler.last_report.sampling_seconds

    return run


def diffusers_run(unet, batch: int, device: torch.device, dtype: torch.dtype, concat: bool):
    """diffusers' guidance loop (its pipelines' form) on its UNet2DModel and DDPMScheduler, w = GUIDANCE_SCALE."""
    import diffusers

    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T_FULL, beta_schedule="linear", beta_start=1e-4,
                                        beta_end=0.02, variance_type="fixed_small", clip_sample=False)
    labels = _labels(batch, device)
    null = torch.full_like(labels, NUM_CLASSES)
    both = torch.cat([labels, null])

    def run(steps: int) -> tuple[torch.Tensor, float]:
        scheduler.set_timesteps(steps)
        generator = torch.Generator(device).manual_seed(0)
        size = unet.config.sample_size
        x = torch.randn((batch, 3, size, size), generator=generator, device=device)
        _sync(device)
        start = time.perf_counter()
        for t in scheduler.timesteps:
            if concat:
                output = unet(torch.cat([x, x]).to(dtype), t, class_labels=both).sample
                cond, uncond = output.float().chunk(2)
            else:
                cond = unet(x.to(dtype), t, class_labels=labels).sample.float()
                uncond = unet(x.to(dtype), t, class_labels=null).sample.float()
            eps = uncond + GUIDANCE_SCALE * (cond - uncond)
            x = scheduler.step(eps, t, x, generator=generator).prev_sample
        _sync(device)
        return x.clamp(-1, 1), time.perf_counter() - start

    return run


def test_guidance(benchmark, device, smoke, quick, shape):
    batch = shape[0]
    on_gpu = device.type == "cuda"
    preset = "ddpm-cifar10" if on_gpu and not smoke else "tiny"
    size = 16 if smoke else shape[2]
    steps = SMOKE_STEPS if smoke else int(os.environ.get("DDPM_FAST_GUIDANCE_STEPS") or
                                          (GPU_STEPS if on_gpu else CPU_STEPS))
    rounds = 1 if smoke else (QUICK_ROUNDS if quick else (GPU_ROUNDS if on_gpu else CPU_ROUNDS))
    benchmark.group = f"guidance ({preset}, {size}x{size}, w={GUIDANCE_SCALE:g})"

    def guard():  # whole-model runs take the torch references on CPU tensors even under the interpreter
        return cpu_reference() if launch.TRITON_INTERPRETED else contextlib.nullcontext()

    if on_gpu:
        torch._dynamo.reset()
    load_before = os.getloadavg()
    with guard(), torch.no_grad():
        torch.manual_seed(0)
        model = df.UNet.from_preset(preset, sample_size=size, num_class_embeds=NUM_CLASSES + 1).eval()
        schedule = df.NoiseSchedule.linear(T_FULL)
        options = {} if not smoke else {"compile": False}
        guided_sampler = df.FastSampler(model.to(device), schedule, null_class_label=NUM_CLASSES, device=device,
                                        **options)
        conditional_sampler = df.FastSampler(model, schedule, null_class_label=NUM_CLASSES, device=device,
                                             **options)
        peer_dtype = diffusers_compiled_dtype(device) if on_gpu else torch.float32
        unet = diffusers_unet(model, device, peer_dtype)
        if on_gpu:
            unet = torch.compile(unet)
        methods = {
            "fast_guided": fast_run(guided_sampler, batch, guided=True),
            "fast_conditional_2B": fast_run(conditional_sampler, 2 * batch, guided=False),
            "diffusers_concat": diffusers_run(unet, batch, device, peer_dtype, concat=True),
            "diffusers_two_pass": diffusers_run(unet, batch, device, peer_dtype, concat=False),
        }
        setup = {}
        for name, run in methods.items():  # warm-up: compile, capture; then the images are checked
            start = time.perf_counter()
            images, _ = run(steps)
            setup[name] = time.perf_counter() - start
            expected = 2 * batch if name == "fast_conditional_2B" else batch
            assert images.shape == (expected, 3, size, size) and torch.isfinite(images).all(), name
        samples: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(rounds):
            for name, run in methods.items():
                samples[name].append(run(steps)[1])
        fallbacks = {name: "; ".join(sampler.last_report.fallbacks) for name, sampler in
                     (("fast_guided", guided_sampler), ("fast_conditional_2B", conditional_sampler))
                     if sampler.last_report.fallbacks}
    per_step = {name: statistics.median(values) / steps for name, values in samples.items()}
    # images/s of a 1000-step chain; fast_conditional_2B's are of 2B unguided images, stated per guided image pair
    images_per_s = {name: batch / (seconds * T_FULL) for name, seconds in per_step.items()}
    overhead = per_step["fast_guided"] / per_step["fast_conditional_2B"] - 1.0
    best_peer = min(("diffusers_concat", "diffusers_two_pass"), key=per_step.get)
    goals = {f"guided step <= {1 + GPU_GOAL_OVERHEAD:g}x an unguided 2B step": overhead <= GPU_GOAL_OVERHEAD} \
        if on_gpu and not smoke else {}
    benchmark.extra_info.update({
        "kind": "guidance", "preset": preset, "batch": batch, "sample_shape": [3, size, size],
        "num_timesteps": T_FULL, "steps_timed": steps, "rounds": rounds, "guidance_scale": GUIDANCE_SCALE,
        "seconds_per_step": per_step, "chain_seconds": samples, "images_per_s": images_per_s,
        "warm_up_seconds": setup, "guidance_overhead_vs_conditional_2B": overhead, "best_peer": best_peer,
        "speedup_vs_best_peer": per_step[best_peer] / per_step["fast_guided"],
        "speedup_vs_two_pass": per_step["diffusers_two_pass"] / per_step["fast_guided"],
        "peer_dtype": dtype_name(peer_dtype), "peer_compiled": on_gpu,
        "fast_options": {name: {"dtype": str(sampler.dtype).replace("torch.", ""),
                                "channels_last": sampler.channels_last, "compiled": sampler.last_report.compiled,
                                "cuda_graphs": sampler.last_report.cuda_graphs,
                                "compile_decision": sampler.last_report.compile_decision}
                         for name, sampler in (("fast_guided", guided_sampler),
                                               ("fast_conditional_2B", conditional_sampler))},
        "fell_back": fallbacks, "goals": goals,
        "load_average": {"before": load_before, "after": os.getloadavg()},
    })

    def timed():
        with guard():
            methods["fast_guided"](steps)
        _sync(device)

    benchmark.pedantic(timed, rounds=1, warmup_rounds=0)
