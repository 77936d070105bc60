"""`ddpm-fast demo`: the fast sampling path beside the naive reference, timed in one run.

Until the U-Net lands, the ε-model is a small convolutional stand-in with random weights: the demo shows the cost of
the sampling loop itself (model calls + reverse steps) and checks that both paths draw the same images.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from . import reference
from .seed_functions import sample as fast_sample


class StandInEpsModel(nn.Module):
    """conv → SiLU → conv (+ timestep embedding) → SiLU → conv: a cheap ε(x, t) for timing the loop."""

    def __init__(self, channels: int = 3, width: int = 32, num_timesteps: int = 1000) -> None:
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        self.time = nn.Embedding(num_timesteps, width)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = nn.functional.silu(self.inp(x))
        h = nn.functional.silu(self.mid(h) + self.time(t)[:, :, None, None])
        return self.out(h)


def _timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def _compare(label: str, args: tuple, device: torch.device, seed: int) -> dict[str, float]:
    """Time reference.sample and ddpm_fast.sample on the same arguments and torch seed; print one line each."""
    torch.manual_seed(seed)
    naive, naive_s = _timed(lambda: reference.sample(*args), device)
    torch.manual_seed(seed)
    fast, fast_s = _timed(lambda: fast_sample(*args), device)
    difference = (fast - naive).abs().max().item()
    print(f"  {label}")
    print(f"    naive reference (seed loop, fp32 eager): {naive_s:8.3f} s")
    print(f"    ddpm_fast.sample (fused reverse step):   {fast_s:8.3f} s   speed-up {naive_s / fast_s:.2f}x")
    print(f"    same noise stream: max |fast - naive| = {difference:.1e}")
    return {"naive_s": naive_s, "fast_s": fast_s, "max_abs_difference": difference}


def run_demo(num_samples: int = 16, image_size: int = 32, timesteps: int = 200, device: str = "auto",
             seed: int = 0) -> dict[str, dict[str, float]]:
    """Sample with reference.sample and ddpm_fast.sample (same torch seed) and print the times, twice: with the
    stand-in ε-model, and with the model replaced by a fixed ε so only the sampling loop itself is timed."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    torch.manual_seed(seed)
    model = StandInEpsModel(num_timesteps=timesteps).to(dev).eval()
    fixed_eps = torch.randn(num_samples, 3, image_size, image_size, device=dev)
    terms = reference.schedule_terms(reference.linear_beta_schedule(timesteps).to(dev))
    schedule_args = (terms["betas"], terms["sqrt_recip_alphas"], terms["sqrt_one_minus_alphas_cumprod"],
                     terms["posterior_variance"])
    # Warm-up: first calls pay for kernel compilation and allocator growth, which the timing should not include.
    for fn in (reference.sample, fast_sample):
        fn(model, num_samples, image_size, 2, *schedule_args)

    print(f"ddpm_fast demo: {num_samples} samples of 3x{image_size}x{image_size}, T={timesteps}, device={dev}")
    with_model = _compare("with a small stand-in conv ε-model (random weights; the U-Net comes later):",
                          (model, num_samples, image_size, timesteps, *schedule_args), dev, seed + 1)
    loop_only = _compare("the sampling loop alone (ε-model replaced by a fixed tensor):",
                         (lambda x, t: fixed_eps, num_samples, image_size, timesteps, *schedule_args), dev, seed + 2)
    return {"with_model": with_model, "loop_only": loop_only}
