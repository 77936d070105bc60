"""DPM-Solver++ chains (Lu et al. 2022): which timesteps a run visits and the per-step scalars of the fused step.

The multistep solver of order 2 in its midpoint form, as diffusers' DPMSolverMultistepScheduler runs it with
algorithm_type "dpmsolver++" (ODE) or "sde-dpmsolver++" (SDE), solver_order=2, final_sigmas_type="zero": step i goes
from timestep s0 = chain[i] to chain[i + 1], the last step to σ = 0 (the data), with

    ODE:  x ← (σ_t/σ_s0)·x + α_t(1 − e^{−h})·D
    SDE:  x ← (σ_t/σ_s0)e^{−h}·x + α_t(1 − e^{−2h})·D + σ_t·sqrt(1 − e^{−2h})·z

where α = sqrt(ᾱ), σ = sqrt(1 − ᾱ), λ = log(α/σ), h = λ_t − λ_s0, and D = x0 at first order (the first step and
the last, "lower order final"), or D = x0 + (x0 − x0_prev)/(2 r0) with r0 = (λ_s0 − λ_s1)/h at second order. Every
scalar is computed here in float64 and stored as one float32 column per step (kernels/dpm_solver.py's SOLVER_ROWS),
so the step kernel does only elementwise work and one captured graph serves any chain.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..vocabulary import SPACINGS
from .timesteps import round_half_even, spaced_timesteps



def dpm_solver_timesteps(total: int, steps: int, spacing: str = "linspace", offset: int = 0) -> np.ndarray:
    """The descending int64 timesteps of a `steps`-step DPM-Solver++ chain out of `total`, spaced as diffusers'
    DPMSolverMultistepScheduler spaces them (its chain ends at σ = 0, so "linspace" and "leading" leave t = 0 out),
    in integer arithmetic: "linspace" round(k·(T−1)/n) for k = n … 1; "leading" k·(T // (n+1)) + offset for
    k = n … 1; "trailing" round((n−k)·T/n) − 1, as DDPM's. ValueError when the spacing repeats a timestep or leaves
    [0, total) (e.g. "linspace" with n close to T)."""
    if spacing not in SPACINGS:
        raise ValueError(f"timestep_spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"num_inference_steps must be an int, got {type(steps).__name__}")
    if not 1 <= steps <= total:
        raise ValueError(f"num_inference_steps must lie in [1, {total}], got {steps}")
    k = np.arange(steps, 0, -1, dtype=np.int64)
    if spacing == "linspace":
        chain = round_half_even(k * (total - 1), steps)
    elif spacing == "leading":
        chain = k * (total // (steps + 1)) + offset
    else:
        chain = spaced_timesteps(total, steps, "trailing")
    if chain[0] >= total or chain[-1] < 0 or (chain[1:] >= chain[:-1]).any():
        raise ValueError(f"timestep_spacing={spacing!r} with {steps} DPM-Solver++ steps out of {total} gives "
                         f"timesteps outside [0, {total}) or repeated ones; use fewer steps or another spacing")
    return chain


def dpm_solver_table(alphas_cumprod: torch.Tensor, chain: np.ndarray, sde: bool) -> torch.Tensor:
    """float32 [len(SOLVER_ROWS), n]: column i holds step i's α_s, σ_s and the coefficients of x, x0, x0_prev and z
    (see the module docstring), computed in float64 from ᾱ (float64 [T]) and the descending chain."""
    alphas_cumprod = alphas_cumprod.double()
    steps = len(chain)
    columns = []
    for i in range(steps):
        a_s0 = float(alphas_cumprod[int(chain[i])])
        alpha_s0, sigma_s0 = math.sqrt(a_s0), math.sqrt(1.0 - a_s0)
        last = i == steps - 1
        if last:  # to σ = 0: h = ∞, so e^{−h} = 0 and the step returns α_t·D = x0 (first order, as diffusers)
            columns.append((alpha_s0, sigma_s0, 0.0, 1.0, 0.0, 0.0))
            continue
        a_t = float(alphas_cumprod[int(chain[i + 1])])
        alpha_t, sigma_t = math.sqrt(a_t), math.sqrt(1.0 - a_t)
        h = _log_snr(alpha_t, sigma_t) - _log_snr(alpha_s0, sigma_s0)
        if sde:
            x_coef = sigma_t / sigma_s0 * math.exp(-h)
            d_coef = alpha_t * -math.expm1(-2.0 * h)
            noise_coef = sigma_t * math.sqrt(-math.expm1(-2.0 * h))
        else:
            x_coef = sigma_t / sigma_s0
            d_coef = alpha_t * -math.expm1(-h)
            noise_coef = 0.0
        x0_coef, x0_prev_coef = d_coef, 0.0
        if i > 0:  # second order: D = x0 + (x0 − x0_prev) / (2 r0)
            a_s1 = float(alphas_cumprod[int(chain[i - 1])])
            r0 = (_log_snr(alpha_s0, sigma_s0) - _log_snr(math.sqrt(a_s1), math.sqrt(1.0 - a_s1))) / h
            x0_coef = d_coef * (1.0 + 0.5 / r0)
            x0_prev_coef = -d_coef * 0.5 / r0
        columns.append((alpha_s0, sigma_s0, x_coef, x0_coef, x0_prev_coef, noise_coef))
    return torch.tensor(columns, dtype=torch.float64).T.float().contiguous()


def _log_snr(alpha: float, sigma: float) -> float:
    return math.log(alpha) - math.log(sigma)
