"""The training objective: noise x0 with the fused q-sample, predict ε, x0 or v, and take a (weighted) MSE.

    loss = diffusion_loss(model, x0, t, schedule, seed=key)                      # the seed's objective: MSE on ε
    loss = diffusion_loss(model, x0, t, schedule, seed=key, prediction_type="v_prediction", min_snr_gamma=5.0)

ε is drawn in-kernel (Philox keyed by `seed` and the sample's global index `sample_offset + i`), so a sample gets
the same noise whichever process or batch it lands in.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..checks import check_prediction_type
from ..kernels import ops as _ops  # noqa: F401 — registers torch.ops.ddpm_fast.*
from ..evaluation.likelihood import (VLB_WEIGHT, model_log_variance, posterior_mean, predicted_x0,
                                    split_learned_output, vb_terms_bpd)
from ..models.output import unwrap_model_output
from ..schedule import NoiseSchedule


def training_target(x0: torch.Tensor, eps: torch.Tensor, alphas_cumprod_t: torch.Tensor,
                    prediction_type: str) -> torch.Tensor:
    """What the model should output at x_t: ε, x0, or v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0 (float32)."""
    if prediction_type == "epsilon":
        return eps.float()
    if prediction_type == "sample":
        return x0.float()
    shape = (-1,) + (1,) * (x0.dim() - 1)
    alpha_bar = alphas_cumprod_t.view(shape)
    return alpha_bar.sqrt() * eps.float() - (1 - alpha_bar).sqrt() * x0.float()


def loss_weights(alphas_cumprod_t: torch.Tensor, prediction_type: str, min_snr_gamma: Optional[float]) -> torch.Tensor:
    """Per-sample weights of Min-SNR-γ (Hang et al., 2023): the x0-space weight min(SNR, γ), expressed for the
    target being regressed (÷SNR for ε, ÷(SNR+1) for v). All ones without γ."""
    if min_snr_gamma is None:
        return torch.ones_like(alphas_cumprod_t)
    snr = alphas_cumprod_t / (1 - alphas_cumprod_t)
    clipped = snr.clamp(max=min_snr_gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped


def diffusion_loss(
    model: Callable[[torch.Tensor, torch.Tensor], object],
    x0: torch.Tensor,
    t: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    seed: torch.Tensor,
    sample_offset: int = 0,
    prediction_type: str = "epsilon",
    min_snr_gamma: Optional[float] = None,
) -> torch.Tensor:
    """Mean over the batch of the (weighted) per-sample MSE between model(x_t, t) and the target, in float32.

    An inner-loop function: no host sync, so nothing checks t's values (kernels clamp it into [0, T)).
    t: int64 [B] on x0's device, drawn in [0, T). seed: the Philox key of this step's noise, int64 [1] on the device.
    """
    _, prediction, target = noised_prediction(model, x0, t, schedule, seed, sample_offset, prediction_type)
    per_sample = (prediction - target).pow(2).flatten(1).mean(dim=1)
    alphas_cumprod_t = schedule.buffers(x0.device)["alphas_cumprod"][t]
    return (loss_weights(alphas_cumprod_t, prediction_type, min_snr_gamma) * per_sample).mean()


def noised_prediction(model: Callable, x0: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule,
                      seed: torch.Tensor, sample_offset: int, prediction_type: str
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, model(x_t, t) in float32, the regression target at x_t): x0 noised with the fused q-sample (ε drawn
    in-kernel from Philox), the model's whole output (a learned-variance model's 2C channels included), and ε, x0
    or v as prediction_type asks. What diffusion_loss and the hybrid loss share."""
    buffers = schedule.buffers(x0.device)
    x_t, eps = torch.ops.ddpm_fast.q_sample_philox(x0, t, buffers["sqrt_alphas_cumprod"],
                                                   buffers["sqrt_one_minus_alphas_cumprod"], seed, sample_offset)
    output = unwrap_model_output(model(x_t, t)).float()
    return x_t, output, training_target(x0, eps, buffers["alphas_cumprod"][t], prediction_type)


def epsilon_from_prediction(output: torch.Tensor, x_t: torch.Tensor, alphas_cumprod_t: torch.Tensor,
                            prediction_type: str) -> torch.Tensor:
    """The ε that an x0- or v-prediction implies at x_t (float32): lets an ε-only sampling loop (the seed's) run
    any model with the same result, since the ε-form reverse step is the posterior mean written in ε."""
    if prediction_type == "epsilon":
        return output.float()
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    alpha_bar = alphas_cumprod_t.view(shape)
    if prediction_type == "sample":
        return (x_t.float() - alpha_bar.sqrt() * output.float()) / (1 - alpha_bar).sqrt()
    return alpha_bar.sqrt() * output.float() + (1 - alpha_bar).sqrt() * x_t.float()


class AsEpsilonModel(torch.nn.Module):
    """model(x_t, t) presented as an ε-model (see epsilon_from_prediction)."""

    def __init__(self, model: torch.nn.Module, schedule: NoiseSchedule, prediction_type: str):
        super().__init__()
        self.model = model
        self.schedule = schedule
        self.prediction_type = check_prediction_type(prediction_type)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alphas_cumprod_t = self.schedule.buffers(x_t.device)["alphas_cumprod"][t]
        output = unwrap_model_output(self.model(x_t, t))
        return epsilon_from_prediction(output, x_t, alphas_cumprod_t, self.prediction_type)


def hybrid_loss(model: Callable, x0: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule, *, seed: torch.Tensor,
                sample_offset: int = 0, prediction_type: str = "epsilon", vlb_weight: float = VLB_WEIGHT
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """improved DDPM's L_hybrid = L_simple + λ·L_vlb for a model of 2C output channels, batch mean, float32.

    L_simple: MSE of the prediction (ε, x0 or v) against its target. L_vlb: T·L_t in bits/dim with the mean
    stop-gradient (only the variance learns from it). Returns (loss, {"mse", "vb"}: per-sample float32 [B]).
    An inner-loop function: no host sync. t: int64 [B] in [0, T); seed: the Philox key, int64 [1] on the device.
    """
    x_t, output, target = noised_prediction(model, x0, t, schedule, seed, sample_offset, prediction_type)
    prediction, variance_values = split_learned_output(output, x0.shape[1])
    mse = (prediction - target).pow(2).flatten(1).mean(dim=1)
    x_t, x0_float = x_t.float(), x0.float()
    frozen_x0 = predicted_x0(prediction.detach(), x_t, t, schedule, prediction_type)  # the stop-gradient of §3.1
    mean = posterior_mean(frozen_x0, x_t, t, schedule)
    log_variance = model_log_variance("learned_range", t, schedule, mean, variance_values)
    vb = vb_terms_bpd(mean, log_variance, x0_float, x_t, t, schedule) * schedule.num_timesteps
    return (mse + vlb_weight * vb).mean(), {"mse": mse.detach(), "vb": vb.detach()}
