"""The seed algorithm: DDPM as a reader of Ho et al. (2020) writes it — fp32, eager, one op at a time.

This is the baseline of every parity test and every benchmark, so it stays deliberately plain: no fusion, no
compilation, a Python `for` loop over t, coefficients gathered per call. ddpm_fast's top-level functions of the
same names are the fast twins; with the same torch seed they return the same values.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def linear_beta_schedule(timesteps: int, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    return torch.linspace(start, end, timesteps)


def schedule_terms(betas: torch.Tensor) -> dict[str, torch.Tensor]:
    """The seed's precomputed terms, in float32 from float32 betas (as the tutorial code computes them)."""
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
    return {
        "betas": betas,
        "sqrt_recip_alphas": torch.sqrt(1.0 / alphas),
        "sqrt_alphas_cumprod": torch.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": torch.sqrt(1.0 - alphas_cumprod),
        "posterior_variance": betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod),
    }


def get_index_from_list(vals: torch.Tensor, t: torch.Tensor, x_shape: torch.Size) -> torch.Tensor:
    """vals[t] for each sample, shaped [B, 1, 1, ...] to broadcast over x."""
    batch_size = t.shape[0]
    out = vals.gather(-1, t.to(vals.device))
    return out.reshape(batch_size, *((1,) * (len(x_shape) - 1))).to(t.device)


def forward_diffusion_sample(
    x0: torch.Tensor, t: torch.Tensor, sqrt_alphas_cumprod: torch.Tensor, sqrt_one_minus_alphas_cumprod: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """q(x_t | x0): returns (x_t, noise) with noise = torch.randn_like(x0)."""
    noise = torch.randn_like(x0)
    sqrt_alphas_cumprod_t = get_index_from_list(sqrt_alphas_cumprod, t, x0.shape)
    sqrt_one_minus_alphas_cumprod_t = get_index_from_list(sqrt_one_minus_alphas_cumprod, t, x0.shape)
    return sqrt_alphas_cumprod_t * x0 + sqrt_one_minus_alphas_cumprod_t * noise, noise


def train_step(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    t: torch.Tensor,
    sqrt_alphas_cumprod: torch.Tensor,
    sqrt_one_minus_alphas_cumprod: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.mse_loss,
) -> torch.Tensor:
    """The simple objective: noise x0 to x_t, predict the noise, return loss_fn(noise, prediction).

    The caller runs backward() and the optimizer step, as in the seed's training loop.
    """
    x_noisy, noise = forward_diffusion_sample(x0, t, sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod)
    noise_pred = model(x_noisy, t)
    return loss_fn(noise, noise_pred)


@torch.no_grad()
def sample_timestep(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    betas: torch.Tensor,
    sqrt_recip_alphas: torch.Tensor,
    sqrt_one_minus_alphas_cumprod: torch.Tensor,
    posterior_variance: torch.Tensor,
) -> torch.Tensor:
    """One ancestral step x_t -> x_{t-1} (Algorithm 2 of the paper); t is the same for the whole batch."""
    betas_t = get_index_from_list(betas, t, x.shape)
    sqrt_one_minus_alphas_cumprod_t = get_index_from_list(sqrt_one_minus_alphas_cumprod, t, x.shape)
    sqrt_recip_alphas_t = get_index_from_list(sqrt_recip_alphas, t, x.shape)
    model_mean = sqrt_recip_alphas_t * (x - betas_t * model(x, t) / sqrt_one_minus_alphas_cumprod_t)
    posterior_variance_t = get_index_from_list(posterior_variance, t, x.shape)
    if t[0].item() == 0:
        return model_mean
    noise = torch.randn_like(x)
    return model_mean + torch.sqrt(posterior_variance_t) * noise


@torch.no_grad()
def sample(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    num_samples: int,
    img_size: int | tuple[int, int, int],
    timesteps: int,
    betas: torch.Tensor,
    sqrt_recip_alphas: torch.Tensor,
    sqrt_one_minus_alphas_cumprod: torch.Tensor,
    posterior_variance: torch.Tensor,
) -> torch.Tensor:
    """Ancestral sampling from x_T = torch.randn(...) down to x_0, clamped to [-1, 1] at the end.

    img_size is an int (3 x size x size images) or a (C, H, W) tuple. Tensors live on the device of `betas`.
    """
    channels, height, width = (3, img_size, img_size) if isinstance(img_size, int) else img_size
    device = betas.device
    img = torch.randn((num_samples, channels, height, width), device=device)
    for i in reversed(range(timesteps)):
        t = torch.full((num_samples,), i, device=device, dtype=torch.long)
        img = sample_timestep(model, img, t, betas, sqrt_recip_alphas, sqrt_one_minus_alphas_cumprod,
                              posterior_variance)
    return img.clamp(-1.0, 1.0)
