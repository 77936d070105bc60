"""Fast twins of the seed's functions (``ddpm_fast.reference``): same names, same signatures, fused kernels.

Without `seed=` they draw noise exactly where and how the reference does (torch.randn / randn_like from the global
generator), so under the same torch.manual_seed they return the reference's values (up to float rounding). With
`seed=` the noise is drawn in-kernel from Philox instead: per sample, independent of batch size.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .diffusion import SeedLike, check_sample_tensor, seed_tensor, timesteps_tensor
from .kernels import ops as _ops  # noqa: F401 — registers torch.ops.ddpm_fast.*
from .sampling.chain import StepOptions, draws_noise_on, fused_step, initial_sample, torch_noise
from .vocabulary import ROW_INDEX
from .sampling.plan import build_plan
from .sampling.sampler import FastSampler
from .schedule import NoiseSchedule

# The seed's step: ε-prediction, σ² = β̃ (fixed_small), no clipping (its z: given, Philox in-kernel, or none).
SEED_STEP = StepOptions(method="ddpm", prediction_type="epsilon", variance_type="fixed_small", clip_sample=False,
                        clip_sample_range=1.0, eta=0.0, noise="given", sample_offset=0)


def _schedule_vector(name: str, values: object, device: torch.device, min_length: int = 1) -> torch.Tensor:
    if not isinstance(values, torch.Tensor) or not values.dtype.is_floating_point:
        raise TypeError(f"{name} must be a 1-D float tensor of length T, got {type(values).__name__}")
    if values.dim() != 1 or values.numel() < min_length:
        raise ValueError(f"{name} must be 1-D with at least {min_length} entries, got shape {tuple(values.shape)}")
    # The kernels index the vector by t with stride 1: a strided caller's vector is made dense here.
    return values.to(device=device, dtype=torch.float32).contiguous()


def forward_diffusion_sample(
    x0: torch.Tensor,
    t: torch.Tensor,
    sqrt_alphas_cumprod: torch.Tensor,
    sqrt_one_minus_alphas_cumprod: torch.Tensor,
    seed: SeedLike = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q(x_t | x0) in one fused pass: returns (x_t, noise), like ``reference.forward_diffusion_sample``."""
    check_sample_tensor("x0", x0)
    sqrt_ac = _schedule_vector("sqrt_alphas_cumprod", sqrt_alphas_cumprod, x0.device)
    sqrt_1m_ac = _schedule_vector("sqrt_one_minus_alphas_cumprod", sqrt_one_minus_alphas_cumprod, x0.device)
    t = timesteps_tensor("t", t, x0.shape[0], x0.device, sqrt_ac.numel())
    if seed is None:
        noise = torch.randn_like(x0)
        return torch.ops.ddpm_fast.q_sample(x0, t, sqrt_ac, sqrt_1m_ac, noise), noise
    return torch.ops.ddpm_fast.q_sample_philox(x0, t, sqrt_ac, sqrt_1m_ac, seed_tensor(seed, x0.device), 0)


def train_step(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    t: torch.Tensor,
    sqrt_alphas_cumprod: torch.Tensor,
    sqrt_one_minus_alphas_cumprod: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.mse_loss,
    seed: SeedLike = None,
) -> torch.Tensor:
    """loss_fn(noise, model(x_t, t)) with the fused q-sample; the caller runs backward and the optimizer."""
    x_noisy, noise = forward_diffusion_sample(x0, t, sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, seed)
    return loss_fn(noise, model(x_noisy, t))


def _seed_coefficient_table(timesteps, betas, sqrt_recip_alphas, sqrt_one_minus_alphas_cumprod, posterior_variance,
                            device):
    """The kernels' coefficient table, with the rows the ε/fixed-small step reads taken from the caller's tensors.

    The other rows come from a schedule rebuilt from `betas` (which also validates it); the step never reads them.
    One host sync here checks the caller's vectors, before the loop.
    """
    vectors = {name: _schedule_vector(name, value, device, timesteps)[:timesteps] for name, value in (
        ("betas", betas), ("sqrt_recip_alphas", sqrt_recip_alphas),
        ("sqrt_one_minus_alphas_cumprod", sqrt_one_minus_alphas_cumprod), ("posterior_variance", posterior_variance))}
    for name, value in vectors.items():
        if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
            raise ValueError(f"{name} contains NaN, infinite or negative values")
    if not bool((vectors["sqrt_one_minus_alphas_cumprod"] > 0).all()):
        raise ValueError("sqrt_one_minus_alphas_cumprod must be positive")
    table = NoiseSchedule.from_betas(vectors["betas"]).coefficient_table(device).clone()
    table[ROW_INDEX["sqrt_recip_alphas"]] = vectors["sqrt_recip_alphas"]
    table[ROW_INDEX["eps_coef"]] = vectors["betas"] / vectors["sqrt_one_minus_alphas_cumprod"]
    table[ROW_INDEX["posterior_std"]] = torch.sqrt(vectors["posterior_variance"])
    return table


def _image_shape(img_size: object) -> tuple[int, int, int]:
    """(C, H, W) from an int (3 x size x size) or a (C, H, W) tuple of positive ints."""
    shape = (3, img_size, img_size) if isinstance(img_size, int) and not isinstance(img_size, bool) else img_size
    if not (isinstance(shape, (tuple, list)) and len(shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise ValueError(f"img_size must be a positive int or a (C, H, W) tuple of positive ints, got {img_size!r}")
    return tuple(shape)  # type: ignore[return-value]


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
    seed: SeedLike = None,
) -> torch.Tensor:
    """Ancestral sampling like ``reference.sample``, each step one fused kernel; float32 in [-1, 1].

    With seed=None the noise is torch.randn / randn_like in the reference's order. With a seed, x_T and every z
    are Philox noise keyed by (seed, sample index, t), so sample i does not depend on num_samples; on a GPU the
    steps then run as FastSampler runs them, replayed from CUDA graphs (the reference's RNG stream cannot be kept
    inside a graph when the model itself draws random numbers, so seed=None stays an eager loop).
    """
    for name, value in (("num_samples", num_samples), ("timesteps", timesteps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if num_samples < 0:
        raise ValueError(f"num_samples must be non-negative, got {num_samples}")
    if timesteps <= 0:
        raise ValueError(f"timesteps must be positive, got {timesteps}")
    channels, height, width = _image_shape(img_size)
    if not isinstance(betas, torch.Tensor):
        raise TypeError(f"betas must be a 1-D float tensor of length T, got {type(betas).__name__}")
    device = betas.device
    table = _seed_coefficient_table(timesteps, betas, sqrt_recip_alphas, sqrt_one_minus_alphas_cumprod,
                                    posterior_variance, device)
    shape = [num_samples, channels, height, width]
    if seed is not None and device.type == "cuda":
        return sample_with_fast_sampler(model, shape, betas[:timesteps], table, seed_tensor(seed, device))
    key = None if seed is None else seed_tensor(seed, device)
    img = initial_sample(tuple(shape), device, key, None)  # the reference's torch.randn, or the seeded x_T
    # All timestep tensors up front: the loop below never copies from the host or syncs.
    all_t = torch.arange(timesteps, device=device, dtype=torch.int64)
    for i in reversed(range(timesteps)):
        t = all_t[i].expand(num_samples)
        eps = model(img, t)  # before drawing z: the reference's RNG order, should the model use the RNG too
        if not isinstance(eps, torch.Tensor) or eps.shape != img.shape or not eps.dtype.is_floating_point:
            raise TypeError(f"model(x, t) must return a float tensor of shape {tuple(img.shape)}")
        draws = key is None and draws_noise_on("ddpm", timesteps - 1 - i, timesteps)
        noise = torch_noise(tuple(shape), None, device) if draws else None
        img = fused_step(SEED_STEP, eps, img, t, t, t, table=table, noise=noise, seed=key)
    return img.clamp(-1.0, 1.0)


def sample_with_fast_sampler(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: list[int],
                             betas: torch.Tensor, table: torch.Tensor, key: torch.Tensor,
                             cuda_graphs: Optional[bool] = None) -> torch.Tensor:
    """The seeded `sample` on FastSampler's machinery: the caller's model as it is (fp32, its own layout, not
    compiled), the coefficient table built from the caller's vectors, CUDA graphs on a GPU. Same values as the eager
    seeded loop."""
    schedule = NoiseSchedule.from_betas(betas)
    sampler = FastSampler(lambda x, t: model(x, t), schedule, tuple(shape[1:]), device=table.device,
                          dtype=torch.float32, channels_last=False, compile=False, cuda_graphs=cuda_graphs)
    plan = dataclasses.replace(build_plan(schedule), table=table)
    return sampler.sample_plan(plan, shape[0], seed=key)
