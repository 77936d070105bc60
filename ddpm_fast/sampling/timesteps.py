"""Which timesteps a sampling chain visits, and the reverse-step coefficients between them.

Shared by FastSampler and FastDDPMScheduler: diffusers' three timestep spacings, and the posterior of a respaced
chain (Nichol & Dhariwal 2021, §4: step from each kept timestep to the next kept one, with β re-derived from ᾱ).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..vocabulary import COEFFICIENT_ROWS, SPACINGS

# diffusers' smallest variance (it clamps before the log and the square root).
MIN_VARIANCE = 1e-20


def spaced_timesteps(total: int, steps: int, spacing: str, offset: int = 0) -> np.ndarray:
    """`steps` of the `total` training timesteps, descending int64, spaced as diffusers' DDPMScheduler spaces them,
    computed in integer arithmetic: for every steps in 1..total and offset 0, exactly `steps` distinct timesteps in
    [0, total).

    "linspace" is round(k·(T−1)/(n−1)) for k = n−1 … 0, keeping T−1 and 0 (improved-diffusion's respacing);
    "leading" is k·(T // n) + offset (the DDIM paper's); "trailing" is round((n−k)·T/n) − 1 for k = 0 … n−1, ending
    at T−1. round() is round-half-to-even, numpy's rule. diffusers computes linspace and trailing in floats: where
    its float error moves an exact half (x.5) the other way, its timestep differs from ours by one (e.g. linspace at
    n = 27, trailing at n = 48, for T = 1000), and its rounded float stride makes "trailing" overshoot to n + 1
    timesteps ending in −1 for 62 step counts at T = 1000 (61, 103, 121, ...), which never happens here.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"timestep_spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    if spacing == "linspace":
        if steps == 1:
            return np.zeros(1, dtype=np.int64)
        k = np.arange(steps - 1, -1, -1, dtype=np.int64)
        return round_half_even(k * (total - 1), steps - 1)
    if spacing == "leading":
        return np.arange(steps - 1, -1, -1, dtype=np.int64) * (total // steps) + offset
    k = np.arange(steps, dtype=np.int64)
    return round_half_even(total * (steps - k), steps) - 1


def round_half_even(numerator: np.ndarray, denominator: int) -> np.ndarray:
    """round(numerator / denominator) for non-negative ints, ties to even, exactly (no float)."""
    quotient, remainder = np.divmod(numerator, denominator)
    twice = 2 * remainder
    return quotient + ((twice > denominator) | ((twice == denominator) & (quotient % 2 == 1)))


def respaced_coefficient_table(alphas_cumprod: torch.Tensor, chain: Sequence[int]) -> torch.Tensor:
    """float32 [len(COEFFICIENT_ROWS), len(chain)] for an ascending chain of kept timesteps: column j steps from
    chain[j] to chain[j - 1], column 0 from chain[0] to ᾱ = 1 (the end of sampling).

    The reverse-step kernel adds no noise at column 0, so the chain's last step gives the mean, as at t = 0 of a
    full chain. Computed in float64; variances clamped as diffusers clamps them.
    """
    a_t = alphas_cumprod[list(chain)].double()
    a_prev = torch.cat([torch.ones(1, dtype=torch.float64), a_t[:-1]])
    alpha = a_t / a_prev
    beta = 1.0 - alpha
    one_minus_t, one_minus_prev = 1.0 - a_t, 1.0 - a_prev
    variance = (one_minus_prev / one_minus_t * beta).clamp(min=MIN_VARIANCE)
    rows = {
        "sqrt_recip_alphas": alpha.rsqrt(), "eps_coef": beta / one_minus_t.sqrt(),
        "sqrt_recip_alphas_cumprod": a_t.rsqrt(), "sqrt_recipm1_alphas_cumprod": (one_minus_t / a_t).sqrt(),
        "sqrt_alphas_cumprod": a_t.sqrt(), "sqrt_one_minus_alphas_cumprod": one_minus_t.sqrt(),
        "posterior_mean_coef1": a_prev.sqrt() * beta / one_minus_t,
        "posterior_mean_coef2": alpha.sqrt() * one_minus_prev / one_minus_t,
        "posterior_std": variance.sqrt(), "sqrt_betas": beta.clamp(min=MIN_VARIANCE).sqrt(),
        "posterior_log_variance_clipped": variance.log(), "log_betas": beta.clamp(min=MIN_VARIANCE).log(),
    }
    return torch.stack([rows[name] for name in COEFFICIENT_ROWS]).float().contiguous()
