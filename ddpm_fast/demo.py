"""`ddpm-fast demo`: FastSampler beside the naive reference (the seed's sampling loop), timed in one run.

The ε-model is the tiny U-Net preset with random weights (training lands with the Trainer): the demo shows what the
sampling loop costs on this machine, and checks that both paths draw the same images from the same noise.
"""

from __future__ import annotations

import time

import torch

from . import reference
from .sampler import FastSampler
from .schedule import NoiseSchedule
from .unet import UNet

CHECK_STEPS = 10  # the equality check runs a short chain: it proves the same math, not the speed


def _seed_arguments(timesteps: int, device: torch.device) -> tuple:
    terms = reference.schedule_terms(reference.linear_beta_schedule(timesteps).to(device))
    return (terms["betas"], terms["sqrt_recip_alphas"], terms["sqrt_one_minus_alphas_cumprod"],
            terms["posterior_variance"])


def _naive_seconds(model, num_samples: int, image_size: int, timesteps: int, device: torch.device) -> float:
    arguments = _seed_arguments(timesteps, device)
    reference.sample(model, num_samples, image_size, 2, *arguments)  # warm-up: first-call costs are not the loop's
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    reference.sample(model, num_samples, image_size, timesteps, *arguments)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _max_difference(model, num_samples: int, image_size: int, device: torch.device, seed: int) -> float:
    """max |FastSampler − reference| over a short chain, both in fp32 and drawing their noise from one torch stream."""
    sampler = FastSampler(model, NoiseSchedule.linear(CHECK_STEPS), (3, image_size, image_size),
                          dtype=torch.float32, compile=False)
    generator = torch.Generator(device).manual_seed(seed)
    fast = sampler.sample(num_samples, generator=generator)
    torch.manual_seed(seed)
    naive = reference.sample(model, num_samples, image_size, CHECK_STEPS, *_seed_arguments(CHECK_STEPS, device))
    return (fast - naive).abs().max().item()


@torch.no_grad()
def run_demo(num_samples: int = 16, image_size: int = 32, timesteps: int = 200, device: str = "auto",
             seed: int = 0) -> dict[str, float]:
    """Sample with the seed's loop and with FastSampler (defaults for the device) and print the times."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    torch.manual_seed(seed)
    model = UNet.from_preset("tiny", sample_size=image_size).to(dev).eval()
    print(f"ddpm_fast demo: {num_samples} samples of 3x{image_size}x{image_size}, T={timesteps}, device={dev}, "
          f"tiny U-Net ({model.num_parameters():,} parameters, random weights)")

    naive_s = _naive_seconds(model, num_samples, image_size, timesteps, dev)
    print(f"  naive reference (seed loop, fp32 eager):  {naive_s:8.3f} s")

    sampler = FastSampler(model, NoiseSchedule.linear(timesteps), (3, image_size, image_size))
    setup_s = sampler.warm_up(num_samples)
    sampler.sample(num_samples, seed=seed)
    fast_s = sampler.last_report.sampling_seconds
    options = (f"{str(sampler.dtype).replace('torch.', '')}, "
               f"{'channels-last' if sampler.channels_last else 'NCHW'}, "
               f"{'compiled' if sampler.compiled else 'eager'}, {'CUDA graphs' if sampler.cuda_graphs else 'no graphs'}")
    print(f"  FastSampler ({options}): {fast_s:8.3f} s   speed-up {naive_s / fast_s:.2f}x   "
          f"(setup, once per batch size: {setup_s:.2f} s)")

    difference = _max_difference(model, num_samples, image_size, dev, seed + 1)
    print(f"  same noise, fp32, {CHECK_STEPS}-step chain: max |fast - naive| = {difference:.1e}")
    return {"naive_s": naive_s, "fast_s": fast_s, "setup_s": setup_s, "speedup": naive_s / fast_s,
            "max_abs_difference": difference}
