"""DPM-Solver++ chains (Lu et al. 2022): which timesteps a run visits, at which (α, σ) the solver steps, and the
per-step scalars of the fused step.

The multistep solver in data prediction, as diffusers' DPMSolverMultistepScheduler runs it with algorithm_type
"dpmsolver++" (ODE) or "sde-dpmsolver++" (SDE), solver_type "midpoint". A chain of n model calls visits the points
s_0 … s_{n-1} and ends at s_n: σ = 0 (final_sigmas_type="zero", the data) or σ_min, the schedule's σ at t = 0
("sigma_min"). Step i goes from s0 = s_i to t = s_{i+1}:

    ODE:  x ← (σ_t/σ_s0)·x + α_t(1 − e^{−h})·D                                   (Lu et al. 2022b, eq. 5 / Alg. 2)
    SDE:  x ← (σ_t/σ_s0)e^{−h}·x + α_t(1 − e^{−2h})·D + σ_t·sqrt(1 − e^{−2h})·z

where α, σ are the point's (α² + σ² = 1), λ = log(α/σ), h = λ_t − λ_s0, and D = x0 at first order, or
D = x0 + (x0 − x0_prev)/(2 r0) with r0 = (λ_s0 − λ_s1)/h at second order (the midpoint form). At third order (Lu et
al. 2022, DPM-Solver-3 in data prediction, diffusers' multistep_dpm_solver_third_order_update) the ODE step is

    x ← (σ_t/σ_s0)·x + α_t(1 − e^{−h})·D0 − α_t((1 − e^{−h})/h − 1)·D1 − α_t((e^{−h} − 1 + h)/h² − 1/2)·D2

(the SDE's with e^{−2h}, 2h and its noise term), D0 = x0, D1_0 = (x0 − x0_prev)/r0, D1_1 = (x0_prev − x0_prev2)/r1,
D1 = D1_0 + r0/(r0 + r1)·(D1_0 − D1_1), D2 = (D1_0 − D1_1)/(r0 + r1), r1 = (λ_s1 − λ_s2)/h: linear in the three x0
estimates, so a column holds one coefficient for each. Which order a step takes is diffusers' rule (step_orders):
first order on the first step, and on the last when it goes to σ = 0, or with euler_at_final, or with
lower_order_final on a chain of fewer than 15 steps (the step before it then at most second order); else
solver_order, capped by the history there is. Every scalar is computed here in float64 and stored as one float32 column per step
(kernels/dpm_solver.py's SOLVER_ROWS), so the step kernel does only elementwise work and one compiled step and one
captured graph serve any chain, whatever its length, order or spacing.

The points are the chain's timesteps (α = sqrt(ᾱ_t), σ = sqrt(1 − ᾱ_t)) — or, with a σ spacing, n values of
diffusers' σ_VE = σ/α between σ_max and σ_min of the schedule: Karras et al. (2022, eq. 5, ρ = 7,
use_karras_sigmas), uniform in λ (Lu et al. 2022, use_lu_lambdas) or uniform in log σ_VE (use_exponential_sigmas;
the same σ_VE as use_lu_lambdas). The solver steps on those σ (α = 1/sqrt(1 + σ_VE²), σ = σ_VE·α), and the model is
called at the timestep whose σ_VE is nearest, as diffusers finds it: interpolated linearly in log σ_VE between the
training timesteps, then rounded half to even (Karras, Lu) or truncated (exponential: diffusers casts the float
timestep to int64 without rounding). Such a chain may visit a timestep twice (at two σ).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from ..checks import ParameterError, check_disable_corrector, check_solver_options
from ..vocabulary import SOLVER_DEFAULTS, SIGMA_SPACINGS, SPACINGS
from .timesteps import round_half_even, spaced_timesteps

# diffusers' lower_order_final applies to chains shorter than this ("improve numerical stability for small number of
# steps").
LOWER_ORDER_FINAL_BELOW = 15
KARRAS_RHO = 7.0  # Karras et al. 2022's ρ, diffusers' too


@dataclass(frozen=True)
class SolverOptions:
    """The multistep solvers' options (DPM-Solver++ here, UniPC in unipc.py), checked (TypeError / ValueError naming
    the argument), with diffusers' DPMSolverMultistepScheduler and UniPCMultistepScheduler names and defaults:

    solver_order: 1, 2 or 3, the multistep order (2: DPM-Solver++ 2M, diffusers' default; 3 carries a second x0
        history buffer, UniPC a third). lower_order_final: DPM-Solver++, first order on the last step (and order ≤ 2
        on the one before) of a chain of fewer than 15 steps; UniPC, order ≤ n − i on step i of any chain.
        final_sigmas_type: "zero" (the chain ends at σ = 0, its last step first order whatever the other options
        say) or "sigma_min" (it ends at the schedule's σ at t = 0). euler_at_final: DPM-Solver++, first order on the
        last step, at any length. use_karras_sigmas, use_lu_lambdas, use_exponential_sigmas: the σ spacing the solver
        steps on, instead of the timestep spacing (at most one).
    thresholding, dynamic_thresholding_ratio, sample_max_value: dynamic thresholding of each step's x0 (Saharia et
        al. 2022; chain.py's thresholded_x0): per sample, s = the dynamic_thresholding_ratio quantile of |x0|,
        clamped to [1, sample_max_value], then x0 ← clamp(x0, −s, s)/s. Not in the table: it changes the step.
    solver_type: UniPC's B(h), "bh1" (B(h) = h) or "bh2" (B(h) = e^h − 1, diffusers' default). disable_corrector:
        UniPC, the steps after which the corrector is skipped (a sorted tuple of step indices).
    """

    solver_order: int = SOLVER_DEFAULTS["solver_order"]
    lower_order_final: bool = SOLVER_DEFAULTS["lower_order_final"]
    final_sigmas_type: str = SOLVER_DEFAULTS["final_sigmas_type"]
    euler_at_final: bool = SOLVER_DEFAULTS["euler_at_final"]
    use_karras_sigmas: bool = SOLVER_DEFAULTS["use_karras_sigmas"]
    use_lu_lambdas: bool = SOLVER_DEFAULTS["use_lu_lambdas"]
    use_exponential_sigmas: bool = SOLVER_DEFAULTS["use_exponential_sigmas"]
    thresholding: bool = SOLVER_DEFAULTS["thresholding"]
    dynamic_thresholding_ratio: float = SOLVER_DEFAULTS["dynamic_thresholding_ratio"]
    sample_max_value: float = SOLVER_DEFAULTS["sample_max_value"]
    solver_type: str = SOLVER_DEFAULTS["solver_type"]
    disable_corrector: tuple = SOLVER_DEFAULTS["disable_corrector"]

    def __post_init__(self) -> None:
        check_solver_options(**asdict(self))
        object.__setattr__(self, "disable_corrector", check_disable_corrector(self.disable_corrector))

    @property
    def sigma_spacing(self) -> Optional[str]:
        """The σ spacing's option name ("use_karras_sigmas", ...), or None: the chain's timesteps are its points."""
        return next((name for name in SIGMA_SPACINGS if getattr(self, name)), None)


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
        raise ValueError(f"timestep_spacing={spacing!r} with {steps} DPM-Solver++ / UniPC steps out of {total} gives "
                         f"timesteps outside [0, {total}) or repeated ones; use fewer steps or another spacing")
    return chain


def dpm_solver_chain(alphas_cumprod: torch.Tensor, steps: Optional[int], spacing: str = "linspace", offset: int = 0,
                     options: Optional[SolverOptions] = None, timesteps: Optional[Sequence[int]] = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chain of a DPM-Solver++ run: (model timesteps int64 [n], α float64 [n + 1], σ float64 [n + 1]): the
    timestep the model is called at on each step, and the points the solver steps between (see the module
    docstring), the last one where the chain ends. `timesteps`: a custom chain (checked by the caller) instead of
    `steps` spaced by `spacing` and `offset`; with a σ spacing it is a ValueError naming timesteps (the spacing picks
    the chain), as in diffusers."""
    options = options or SolverOptions()
    alphas_cumprod = alphas_cumprod.double().cpu().numpy()
    total = len(alphas_cumprod)
    sigma_spacing = options.sigma_spacing
    if sigma_spacing is None:
        chain = (np.asarray(timesteps, dtype=np.int64) if timesteps is not None
                 else dpm_solver_timesteps(total, steps, spacing, offset))
        a = alphas_cumprod[chain]
        alpha, sigma = np.sqrt(a), np.sqrt(1.0 - a)
    else:
        if timesteps is not None:
            raise ParameterError("timesteps", lambda name: f"{name('timesteps')} cannot be given with "
                                 f"{name(f'{sigma_spacing}=True')}: the σ spacing picks the chain")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
            raise TypeError(f"num_inference_steps must be an int, got {type(steps).__name__}")
        if not 1 <= steps <= total:
            raise ValueError(f"num_inference_steps must lie in [1, {total}], got {steps}")
        chain, ve_sigmas = _sigma_spaced_chain(alphas_cumprod, int(steps), sigma_spacing)
        alpha = 1.0 / np.sqrt(1.0 + ve_sigmas**2)
        sigma = ve_sigmas * alpha
    if options.final_sigmas_type == "zero":
        alpha_end, sigma_end = 1.0, 0.0
    else:  # diffusers' sigma_min: the σ of t = 0
        alpha_end, sigma_end = math.sqrt(alphas_cumprod[0]), math.sqrt(1.0 - alphas_cumprod[0])
    return chain, np.append(alpha, alpha_end), np.append(sigma, sigma_end)


def step_orders(steps: int, options: Optional[SolverOptions] = None) -> list[int]:
    """The order of each of the `steps` steps of a chain, diffusers' DPMSolverMultistepScheduler.step rule: first
    order on step 0 (no history) and on the last step when it goes to σ = 0, or with euler_at_final, or with
    lower_order_final and fewer than 15 steps; order ≤ 2 on the step before that last one with lower_order_final
    and fewer than 15 steps; else min(solver_order, steps taken + 1)."""
    options = options or SolverOptions()
    short = options.lower_order_final and steps < LOWER_ORDER_FINAL_BELOW
    orders = []
    for i in range(steps):
        order = min(options.solver_order, i + 1)
        if i == steps - 1 and (options.euler_at_final or short or options.final_sigmas_type == "zero"):
            order = 1
        elif i == steps - 2 and short:
            order = min(order, 2)
        orders.append(order)
    return orders


def dpm_solver_table(alphas_cumprod: torch.Tensor, chain: np.ndarray, sde: bool,
                     options: Optional[SolverOptions] = None) -> torch.Tensor:
    """float32 [len(SOLVER_ROWS), n] of a chain of timesteps (descending int64 [n]) with these options (no σ
    spacing: the timesteps are the points): see solver_table."""
    options = options or SolverOptions()
    if options.sigma_spacing is not None:
        raise ValueError("dpm_solver_table takes a chain of timesteps; a σ-spaced chain's table is "
                         "solver_table(*dpm_solver_chain(...)[1:], ...)")
    _, alpha, sigma = dpm_solver_chain(alphas_cumprod, None, options=options, timesteps=chain)
    return solver_table(alpha, sigma, sde, step_orders(len(chain), options))


def solver_table(alpha: np.ndarray, sigma: np.ndarray, sde: bool, orders: Sequence[int]) -> torch.Tensor:
    """float32 [len(SOLVER_ROWS), n]: column i holds step i's α_s, σ_s and the coefficients of x, x0, x0_prev, z and
    x0_prev2 (see the module docstring), computed in float64 from the n + 1 points (α, σ: float64 [n + 1]; σ_n may be
    0, the data) and each step's order (1, 2 or 3; step i's order is at most i + 1). A step of zero length (h = 0:
    a σ-spaced chain ending at σ_min, whose last point is σ_min) leaves x as it is."""
    steps = len(orders)
    columns = []
    for i in range(steps):
        alpha_s0, sigma_s0 = float(alpha[i]), float(sigma[i])
        alpha_t, sigma_t = float(alpha[i + 1]), float(sigma[i + 1])
        if sigma_t == 0.0:  # to σ = 0: h = ∞, e^{−h} = 0, and the step returns α_t·D = x0 (first order)
            columns.append((alpha_s0, sigma_s0, 0.0, 1.0, 0.0, 0.0, 0.0))
            continue
        # ≥ 0: a σ-spaced chain ending at σ_min steps from its last σ (σ_min up to rounding) to σ_min itself
        h = max(_log_snr(alpha_t, sigma_t) - _log_snr(alpha_s0, sigma_s0), 0.0)
        if sde:
            x_coef = sigma_t / sigma_s0 * math.exp(-h)
            d_coef = alpha_t * -math.expm1(-2.0 * h)
            noise_coef = sigma_t * math.sqrt(-math.expm1(-2.0 * h))
        else:
            x_coef = sigma_t / sigma_s0
            d_coef = alpha_t * -math.expm1(-h)
            noise_coef = 0.0
        x0_coef, x0_prev_coef, x0_prev2_coef = d_coef, 0.0, 0.0
        lam = [_log_snr(float(alpha[j]), float(sigma[j])) for j in range(max(i - 2, 0), i + 1)][::-1]  # s0, s1, s2
        if orders[i] == 2:  # D = x0 + (x0 − x0_prev) / (2 r0), 1/r0 = h / (λ_s0 − λ_s1)
            half_inverse_r0 = 0.5 * h / (lam[0] - lam[1])
            x0_coef = d_coef * (1.0 + half_inverse_r0)
            x0_prev_coef = -d_coef * half_inverse_r0
        elif orders[i] == 3:
            x0_coef, x0_prev_coef, x0_prev2_coef = _third_order(h, lam[0] - lam[1], lam[1] - lam[2], alpha_t, sde)
        columns.append((alpha_s0, sigma_s0, x_coef, x0_coef, x0_prev_coef, noise_coef, x0_prev2_coef))
    return torch.tensor(columns, dtype=torch.float64).reshape(steps, -1).T.float().contiguous()


def _third_order(h: float, h_0: float, h_1: float, alpha_t: float, sde: bool) -> tuple[float, float, float]:
    """The coefficients of x0, x0_prev and x0_prev2 of a third-order step (the module docstring's D0, D1, D2 terms),
    with 1/r0 = h/h_0, 1/r1 = h/h_1, 1/(r0 + r1) = h/(h_0 + h_1) and r0/(r0 + r1) = h_0/(h_0 + h_1): finite even at
    h = 0, where every term vanishes."""
    if h == 0.0:
        return 0.0, 0.0, 0.0
    if sde:  # diffusers' sde-dpmsolver++ third order
        one_minus = -math.expm1(-2.0 * h)
        c0 = alpha_t * one_minus
        c1 = alpha_t * (1.0 - one_minus / (2.0 * h))
        c2 = alpha_t * ((one_minus - 2.0 * h) / (2.0 * h) ** 2 - 0.5)
    else:
        one_minus = -math.expm1(-h)
        c0 = alpha_t * one_minus
        c1 = alpha_t * (1.0 - one_minus / h)
        c2 = -alpha_t * ((h - one_minus) / h**2 - 0.5)
    d1_0 = np.array([h / h_0, -h / h_0, 0.0])  # D1_0 = (x0 − x0_prev)/r0
    d1_1 = np.array([0.0, h / h_1, -h / h_1])  # D1_1 = (x0_prev − x0_prev2)/r1
    d1 = d1_0 + h_0 / (h_0 + h_1) * (d1_0 - d1_1)
    d2 = h / (h_0 + h_1) * (d1_0 - d1_1)
    x0, x0_prev, x0_prev2 = c0 * np.array([1.0, 0.0, 0.0]) + c1 * d1 + c2 * d2
    return float(x0), float(x0_prev), float(x0_prev2)


def _sigma_spaced_chain(alphas_cumprod: np.ndarray, steps: int, spacing: str) -> tuple[np.ndarray, np.ndarray]:
    """(model timesteps int64 [steps], σ_VE float64 [steps]) of a σ spacing, as diffusers' set_timesteps computes
    them (in float64 here): σ_VE = sqrt((1 − ᾱ)/ᾱ) of the schedule, from σ_max (t = T−1) to σ_min (t = 0)."""
    ve_sigmas = np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)
    log_sigmas = np.log(ve_sigmas)
    sigma_min, sigma_max = float(ve_sigmas[0]), float(ve_sigmas[-1])
    ramp = np.linspace(0.0, 1.0, steps)
    if spacing == "use_karras_sigmas":  # Karras et al. 2022, eq. 5
        low, high = sigma_min ** (1.0 / KARRAS_RHO), sigma_max ** (1.0 / KARRAS_RHO)
        sigmas = (high + ramp * (low - high)) ** KARRAS_RHO
    elif spacing == "use_lu_lambdas":  # uniform in λ = −log σ_VE
        sigmas = np.exp(log_sigmas[-1] + ramp * (log_sigmas[0] - log_sigmas[-1]))
    else:  # use_exponential_sigmas: uniform in log σ_VE
        sigmas = np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), steps))
    times = _sigma_to_t(sigmas, log_sigmas)
    chain = np.floor(times) if spacing == "use_exponential_sigmas" else np.round(times)
    return chain.astype(np.int64), sigmas


def _sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """The float timestep of each σ_VE: linear in log σ_VE between the two training timesteps around it, clamped to
    [0, T−1] (diffusers' _sigma_to_t)."""
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    above = (log_sigma[np.newaxis, :] - log_sigmas[:, np.newaxis]) >= 0
    low = np.cumsum(above, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high = low + 1
    weight = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high]), 0.0, 1.0)
    return (1.0 - weight) * low + weight * high


def _log_snr(alpha: float, sigma: float) -> float:
    return math.log(alpha) - math.log(sigma)
