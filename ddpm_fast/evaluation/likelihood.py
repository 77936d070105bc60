"""The variational bound of a DDPM in bits per dimension (Nichol & Dhariwal 2021, §3.1-3.2): the terms that
evaluation's nll_bits_per_dim sums over t and that training's hybrid objective (ddpm_fast.training.objectives.
hybrid_loss, L_simple + λ·L_vlb, λ = VLB_WEIGHT) draws one t of.

A learned-variance model predicts 2C channels: its prediction (ε, x0 or v) and v ∈ [-1, 1], which interpolates the log-variance
between the posterior's β̃_t and β_t (eq. 15): log σ² = frac·log β_t + (1 − frac)·log β̃_t, frac = (v + 1)/2.
L_vlb's term at t is KL(q(x_{t-1}|x_t, x0) ‖ p(x_{t-1}|x_t)) in bits per dimension, and at t = 0 the discretized
Gaussian negative log-likelihood of x0 (8-bit data in [-1, 1], bins of 2/255). Its gradient reaches only the variance
(the mean is stop-gradient), so L_simple alone trains the mean. As improved-diffusion does, the per-t term is scaled
by T, so λ·T·L_t estimates λ·L_vlb (= Σ_t L_t) from one uniformly drawn t.

Everything here is computed in float32 from the schedule's float32 buffers (the discretized likelihood in float64);
the tests compare it with an independent float64 statement of the same terms.
"""

from __future__ import annotations

import math

import torch

from ..schedule import NoiseSchedule

LOG2 = math.log(2.0)
VLB_WEIGHT = 0.001  # λ of the hybrid objective (Nichol & Dhariwal 2021, §3.1)


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2).pow(2) * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x) by the tanh approximation improved-diffusion uses (so the bits/dim agree with its figures)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit data in [-1, 1] under N(means, e^(2·log_scales)), integrated over each value's bin (width
    2/255; the end bins reach to ±∞). Elementwise, in nats (Ho et al. 2020, eq. 13). Computed in float64: with
    σ_0 ~ 1e-2 a bin holds most of the mass near 1, and float32's Φ(b) − Φ(a) loses ~2% there."""
    dtype = torch.promote_types(means.dtype, torch.float32)
    x, means, log_scales = x.double(), means.double(), log_scales.double()
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta)).to(dtype)


def predicted_x0(prediction: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule,
                 prediction_type: str) -> torch.Tensor:
    """x0 as the model's ε, x0 or v prediction implies it at x_t (float32)."""
    buffers = schedule.buffers(x_t.device)
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    if prediction_type == "sample":
        return prediction
    if prediction_type == "epsilon":
        return (buffers["sqrt_recip_alphas_cumprod"][t].view(shape) * x_t
                - buffers["sqrt_recipm1_alphas_cumprod"][t].view(shape) * prediction)
    return (buffers["sqrt_alphas_cumprod"][t].view(shape) * x_t
            - buffers["sqrt_one_minus_alphas_cumprod"][t].view(shape) * prediction)


def posterior_mean(x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """The mean of q(x_{t-1} | x_t, x0): coef1_t·x0 + coef2_t·x_t."""
    buffers = schedule.buffers(x_t.device)
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    return (buffers["posterior_mean_coef1"][t].view(shape) * x0
            + buffers["posterior_mean_coef2"][t].view(shape) * x_t)


def model_log_variance(variance_type: str, t: torch.Tensor, schedule: NoiseSchedule, like: torch.Tensor,
                       variance_values: torch.Tensor | None = None) -> torch.Tensor:
    """log σ_t² of p(x_{t-1}|x_t), broadcast like `like`: "fixed_small" log β̃_t (β̃_0 replaced by β̃_1),
    "fixed_large" log β_t (β_0 replaced by β̃_1, as improved-diffusion does), "learned_range" the interpolation of
    the model's v ∈ [-1, 1] between them (eq. 15)."""
    buffers = schedule.buffers(like.device)
    shape = (-1,) + (1,) * (like.dim() - 1)
    min_log = buffers["posterior_log_variance_clipped"][t].view(shape)
    if variance_type in ("fixed_small", "fixed_small_log"):
        return min_log.expand_as(like)
    max_log = buffers["log_betas"][t].view(shape)
    if variance_type in ("fixed_large", "fixed_large_log"):
        first = buffers["posterior_log_variance_clipped"][1] if schedule.num_timesteps > 1 else buffers["log_betas"][0]
        return torch.where(t.view(shape) == 0, first, max_log).expand_as(like)
    if variance_type != "learned_range" or variance_values is None:
        raise ValueError(f"variance_type must be fixed_small, fixed_large or learned_range (with the model's "
                         f"variance channels), got {variance_type!r}")
    frac = (variance_values + 1) / 2
    return frac * max_log + (1 - frac) * min_log


def vb_terms_bpd(mean: torch.Tensor, log_variance: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 schedule: NoiseSchedule) -> torch.Tensor:
    """L_t per sample, in bits per dimension: KL(q(x_{t-1}|x_t, x0) ‖ N(mean, e^log_variance)) for t > 0, and the
    discretized NLL of x0 under N(mean, e^log_variance) at t = 0. float32 [B]."""
    buffers = schedule.buffers(x_t.device)
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    true_mean = posterior_mean(x0, x_t, t, schedule)
    true_log_variance = buffers["posterior_log_variance_clipped"][t].view(shape)
    kl = normal_kl(true_mean, true_log_variance, mean, log_variance).flatten(1).mean(dim=1) / LOG2
    nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_variance).flatten(1).mean(dim=1) / LOG2
    return torch.where(t == 0, nll, kl)


def prior_bpd(x0: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """KL(q(x_T|x0) ‖ N(0, I)) per sample in bits per dimension: the bound's prior term (no model)."""
    buffers = schedule.buffers(x0.device)
    last = schedule.num_timesteps - 1
    mean = buffers["sqrt_alphas_cumprod"][last] * x0.float()
    log_variance = torch.log(buffers["one_minus_alphas_cumprod"][last]).expand_as(mean)
    return normal_kl(mean, log_variance, torch.zeros_like(mean), torch.zeros_like(mean)).flatten(1).mean(dim=1) / LOG2


def split_learned_output(output: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, variance values) of a learned-variance model's 2C channels; ValueError otherwise."""
    if output.shape[1] != 2 * channels:
        raise ValueError(f"a learned_range model must output 2 x {channels} channels (prediction, variance), "
                         f"got {output.shape[1]}")
    return output[:, :channels], output[:, channels:]
