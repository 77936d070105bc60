"""UniPC chains (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models"): the per-step scalars of the fused step, in data prediction, as diffusers' UniPCMultistepScheduler runs it
(predict_x0=True, solver_type "bh1" or "bh2").

A chain of n model calls visits the points s_0 … s_{n-1} and ends at s_n, exactly as a DPM-Solver++ chain does
(sampling/dpm_solver.py's dpm_solver_chain: the timestep spacings, the σ spacings, final_sigmas_type). With
λ = log(α/σ), m_i the model's x0 estimate at s_i, and for a step from s to t of order p with history points
s_{-1}, s_{-2}, …:

    h = λ_t − λ_s,  r_k = (λ_{s_{-k}} − λ_s)/h,  D_k = (m_{-k} − m)/r_k,
    h_φ1 = e^{−h} − 1,  B(h) = −h ("bh1") or e^{−h} − 1 ("bh2"),
    UniP (predictor):     x_t = (σ_t/σ_s)·x_s − α_t h_φ1·m − α_t B(h) Σ_k ρ_k D_k
    UniC (corrector):     x_t^c = (σ_t/σ_s)·x_s − α_t h_φ1·m − α_t B(h) (Σ_k ρ^c_k D_k + ρ^c_p (m_t − m))

where ρ solves R ρ = b (R_jk = r_k^j, b_j = j!·h_φ_{j+1}/B(h), the φ recursion of diffusers' multistep_uni_*_bh_update;
ρ = 1/2 at predictor order 2 and corrector order 1, as there). The corrector at s_i refines the predictor's x_{s_i}
with the model output just computed there (m_i, which the model saw at the uncorrected x_{s_i}): one model call
serves both. So step i of the fused op, given x = x_{s_i} (predicted), the previous corrected sample x^c_{s_{i-1}}
("last_sample"), this call's m_i and the earlier m_{i-1}, m_{i-2}, m_{i-3}, writes

    x^c_{s_i}    = cx·x + cl·last_sample + Σ_k c_k m_{i-k}     (x itself where the corrector is off)
    x_{s_{i+1}}  = P·x^c_{s_i} + Σ_k d_k m_{i-k}                (the UniP step from the corrected sample)

both linear in (x, last_sample, m_i … m_{i-3}), so a column of the table holds one coefficient of each for each
output, computed here in float64 and stored as float32 (UNIPC_ROWS): the kernel does elementwise work only, and one
compiled step and one captured graph serve any chain.

Orders, as diffusers' step: the predictor of step i has order min(solver_order, i + 1), and with lower_order_final
min(that, n − i) (so the last step is first order); the corrector at step i (i ≥ 1) has the order the predictor of
step i − 1 had, and is skipped where i − 1 is in disable_corrector. A step that ends at σ = 0 is first order whatever
the options say (its h is infinite; higher orders divide by r_k = 0, where diffusers' own arithmetic gives inf/NaN).
A step of zero length (h = 0: a σ-spaced chain ending at σ_min) leaves the sample as it is.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..vocabulary import UNIPC_ROW_INDEX as _ROW, UNIPC_ROWS

# m_i, m_{i-1}, m_{i-2}, m_{i-3}: the x0 estimates a step's outputs read, this call's first.
_X0_ROWS = ("x0_coef", "x0_prev_coef", "x0_prev2_coef", "x0_prev3_coef")


def unipc_orders(steps: int, solver_order: int, lower_order_final: bool, ends_at_zero: bool) -> list[int]:
    """The predictor order of each of the `steps` steps (diffusers' UniPCMultistepScheduler.step rule; see the module
    docstring): min(solver_order, i + 1), with lower_order_final also min(·, steps − i); the last step first order
    when it ends at σ = 0."""
    orders = []
    for i in range(steps):
        order = min(solver_order, steps - i) if lower_order_final else solver_order
        order = min(order, i + 1)
        if i == steps - 1 and ends_at_zero:
            order = 1
        orders.append(order)
    return orders


def unipc_table(alpha: np.ndarray, sigma: np.ndarray, orders: Sequence[int], solver_type: str = "bh2",
                disable_corrector: Sequence[int] = (), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`dtype` (float32; float64 for tests) [len(UNIPC_ROWS), n]: column i holds step i's α_s, σ_s (where the model's
    output becomes x0) and the coefficients of both outputs (the module docstring), computed in float64 from the n + 1
    points (α, σ: float64 [n + 1]; σ_n may be 0, the data), each step's predictor order (unipc_orders) and the steps
    whose following corrector is off (`disable_corrector`, diffusers' option: the corrector after a listed step is
    skipped)."""
    steps = len(orders)
    lam = [math.log(float(a)) - math.log(float(s)) if s > 0 else math.inf for a, s in zip(alpha, sigma)]
    table = np.zeros((len(UNIPC_ROWS), steps), dtype=np.float64)
    for i in range(steps):
        column = table[:, i]
        column[_ROW["alpha_s"]], column[_ROW["sigma_s"]] = float(alpha[i]), float(sigma[i])
        # the corrected sample x^c_{s_i}: over (x, last_sample, m_i … m_{i-3})
        corrected = np.zeros(6)
        if i >= 1 and (i - 1) not in disable_corrector:
            scale, weights = _update(alpha, sigma, lam, i - 1, orders[i - 1], solver_type, corrector=True)
            corrected[1] = scale
            corrected[2:2 + len(weights)] = weights  # over m_i, m_{i-1}, ...: the update's m_t, m0, history
        else:
            corrected[0] = 1.0
        scale, weights = _update(alpha, sigma, lam, i, orders[i], solver_type, corrector=False)
        # over m_i, m_{i-1}, m_{i-2} (the predictor's m0 is this call's m_i)
        predicted = scale * corrected
        predicted[2:2 + len(weights)] += weights
        for prefix, values in (("corrected_", corrected), ("", predicted)):
            column[_ROW[prefix + "x_coef"]], column[_ROW[prefix + "last_coef"]] = values[0], values[1]
            for name, value in zip(_X0_ROWS, values[2:]):
                column[_ROW[prefix + name]] = value
    return torch.from_numpy(table).to(dtype).contiguous()


def _update(alpha: np.ndarray, sigma: np.ndarray, lam: list[float], s: int, order: int, solver_type: str,
            corrector: bool) -> tuple[float, np.ndarray]:
    """One UniP (corrector=False) or UniC update from point s to s + 1 as (σ_t/σ_s, weights): the coefficient of the
    sample at s and those of the x0 estimates. Predictor weights are over (m_s, m_{s-1}, …, m_{s-order+1}); corrector
    weights over (m_{s+1}, m_s, m_{s-1}, …, m_{s-order+1}) — the model output at the target point first."""
    alpha_t, sigma_t, sigma_s = float(alpha[s + 1]), float(sigma[s + 1]), float(sigma[s])
    size = order + 1 if corrector else order
    weights = np.zeros(size)
    m0 = 1 if corrector else 0  # where m_s (diffusers' m0) sits in the weights
    if sigma_t == 0.0:  # h = ∞: e^{−h} = 0, σ_t/σ_s = 0, and x_t = α_t·m0 (first order only)
        weights[m0] = alpha_t
        return 0.0, weights
    h = lam[s + 1] - lam[s]
    if h <= 0.0:  # a zero-length step (σ spacing ending at σ_min): the sample stays
        return 1.0, weights
    hh = -h  # data prediction
    h_phi_1 = math.expm1(hh)
    b_h = hh if solver_type == "bh1" else math.expm1(hh)
    weights[m0] = -alpha_t * h_phi_1
    # r_k and D_k = (m_{s-k} − m_s)/r_k for k = 1 … order − 1
    rks = [(lam[s - k] - lam[s]) / h for k in range(1, order)]
    if corrector:
        if order == 1:
            rhos = np.array([0.5])
        else:
            rhos = np.linalg.solve(*_r_and_b(rks, hh, h_phi_1, b_h, order))
        weights[0] += -alpha_t * b_h * rhos[-1]  # ρ_p (m_t − m0)
        weights[m0] += alpha_t * b_h * rhos[-1]
        history = rhos[:-1]
    else:
        if order == 1:
            return sigma_t / sigma_s, weights
        if order == 2:
            history = np.array([0.5])
        else:
            r, b = _r_and_b(rks, hh, h_phi_1, b_h, order)
            history = np.linalg.solve(r[:-1, :-1], b[:-1])
    for k, (rho, rk) in enumerate(zip(history, rks), start=1):  # −α_t B(h) ρ_k (m_{s-k} − m_s)/r_k
        weights[m0 + k] += -alpha_t * b_h * rho / rk
        weights[m0] += alpha_t * b_h * rho / rk
    return sigma_t / sigma_s, weights


def _r_and_b(rks: list[float], hh: float, h_phi_1: float, b_h: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    """diffusers' R (rows r^0 … r^{order-1} of [r_1 … r_{order-1}, 1]) and b (j!·h_φ_{j+1}/B(h))."""
    r_all = np.array(rks + [1.0])
    r = np.stack([r_all**j for j in range(order)])
    b = []
    h_phi_k = h_phi_1 / hh - 1.0
    factorial = 1.0
    for j in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= j + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return r, np.array(b)
