"""Public diffusion ops: q_sample, p_step, ddim_step — validated front doors to the fused kernels.

These check every argument (a device sync for the t-range check is allowed here, at the public boundary) and then
call the unchecked custom ops in ``ddpm_fast.kernels``, which sampling loops call directly. Under torch.compile the
sync-needing range check is skipped; the kernels clamp t, so nothing can be read out of bounds either way.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import torch

from .checks import ParameterError, check_choice, check_positive_float
from .kernels import ops as _ops  # noqa: F401 — registers torch.ops.ddpm_fast.*
from .vocabulary import MAX_CHANNELS, MAX_SEED, PREDICTION_TYPES, VARIANCE_TYPES
from .schedule import NoiseSchedule

SeedLike = Union[int, torch.Tensor, None]
TimestepLike = Union[int, torch.Tensor]
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# ---------------------------------------------------------------------------------------------------------------
# argument checks


def check_float_tensor(name: str, value: object, dtypes: tuple[torch.dtype, ...] = _FLOAT_DTYPES) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype {names}; got {str(value.dtype).replace('torch.', '')}")
    return value


def check_sample_tensor(name: str, value: object, dtypes: tuple[torch.dtype, ...] = _FLOAT_DTYPES) -> torch.Tensor:
    """A float batch [B, C], [B, C, L] or [B, C, H, W]."""
    check_float_tensor(name, value, dtypes)
    if not 2 <= value.dim() <= 4:
        raise ValueError(f"{name} must have shape [B, C, *spatial] with 2 to 4 dimensions, got {tuple(value.shape)}")
    if value.shape[1] >= MAX_CHANNELS:
        raise ValueError(f"{name} has {value.shape[1]} channels; at most {MAX_CHANNELS - 1} are supported")
    return value


def check_same_device(name: str, value: torch.Tensor, reference: torch.Tensor, reference_name: str) -> None:
    if value.device != reference.device:
        raise ValueError(f"{name} is on {value.device} but {reference_name} is on {reference.device}")


def check_schedule(schedule: object) -> NoiseSchedule:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a ddpm_fast.NoiseSchedule, got {type(schedule).__name__}")
    return schedule


def timesteps_tensor(
    name: str, t: TimestepLike, batch: int, device: torch.device, num_timesteps: int, allow_end: bool = False
) -> torch.Tensor:
    """t as an int64 [batch] tensor on `device`; an int or 0-d tensor is broadcast to the batch.

    Values must lie in [0, T) (or be -1, the end of a DDIM chain, when allow_end).
    """
    low = -1 if allow_end else 0
    if isinstance(t, bool):
        raise TypeError(f"{name} must be an int or an integer tensor, got bool")
    if isinstance(t, int):
        if not low <= t < num_timesteps:
            raise ValueError(f"{name}={t} is outside [{low}, {num_timesteps})")
        return torch.full((batch,), t, dtype=torch.int64, device=device)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {str(t.dtype).replace('torch.', '')}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the samples are on {device}")
    if t.dim() == 0:
        t = t.expand(batch)
    elif t.shape != (batch,):
        raise ValueError(f"{name} must have shape [{batch}] (one timestep per sample) or be a scalar, "
                         f"got {tuple(t.shape)}")
    t = t.to(torch.int64).contiguous()
    if batch and not torch.compiler.is_compiling():
        low_seen, high_seen = int(t.min()), int(t.max())
        if low_seen < low or high_seen >= num_timesteps:
            bad = low_seen if low_seen < low else high_seen
            raise ValueError(f"{name} contains {bad}, outside [{low}, {num_timesteps})")
    return t


def seed_tensor(seed: SeedLike, device: torch.device) -> torch.Tensor:
    """The Philox key as an int64 [1] tensor on `device`.

    None draws one from torch's global generator on that device (reproducible under torch.manual_seed, no sync).
    """
    if seed is None:
        return torch.randint(0, 2**62, (1,), dtype=torch.int64, device=device)
    if isinstance(seed, bool):
        raise TypeError("seed must be an int or an int64 tensor, got bool")
    if isinstance(seed, int):
        if not 0 <= seed < MAX_SEED:
            raise ValueError(f"seed must lie in [0, 2**63), got {seed}")
        return torch.tensor([seed], dtype=torch.int64, device=device)
    if isinstance(seed, torch.Tensor):
        # A tensor seed is the sync-free form: its value is used as 64 key bits, unchecked.
        if seed.dtype != torch.int64:
            raise TypeError(f"seed tensor must be int64, got {seed.dtype}")
        if seed.numel() != 1:
            raise ValueError(f"seed tensor must hold one element, got shape {tuple(seed.shape)}")
        if seed.device != device:
            raise ValueError(f"seed is on {seed.device} but the samples are on {device}")
        return seed.reshape(1)
    raise TypeError(f"seed must be an int, an int64 tensor or None, got {type(seed).__name__}")


def check_noise(noise: Optional[torch.Tensor], like: torch.Tensor, like_name: str,
                seed: SeedLike = None) -> Optional[torch.Tensor]:
    """`noise` checked against `like`; refused beside a `seed` (one of the two would be silently ignored)."""
    if noise is None:
        return None
    if seed is not None:
        raise ValueError("pass noise= or seed=, not both: noise is used as it is, so the seed would be ignored")
    check_float_tensor("noise", noise)
    check_same_device("noise", noise, like, like_name)
    if noise.shape != like.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)} but {like_name} has shape {tuple(like.shape)}")
    return noise


def check_sample_offset(sample_offset: object) -> int:
    if isinstance(sample_offset, bool) or not isinstance(sample_offset, int):
        raise TypeError(f"sample_offset must be an int, got {type(sample_offset).__name__}")
    if not 0 <= sample_offset < 2**31:
        raise ValueError(f"sample_offset must lie in [0, 2**31), got {sample_offset}")
    return sample_offset


def check_sample_range(sample_offset: object, batch_size: int) -> int:
    """sample_offset, checked so that every global sample index offset + i (a 31-bit Philox counter word) fits."""
    sample_offset = check_sample_offset(sample_offset)
    if sample_offset + batch_size > 2**31:
        raise ValueError(f"sample_offset + batch_size must not exceed 2**31, got {sample_offset} + {batch_size}")
    return sample_offset


def _check_model_output(model_output: torch.Tensor, x_t: torch.Tensor, learned_variance: bool) -> None:
    check_sample_tensor("model_output", model_output)
    check_same_device("model_output", model_output, x_t, "x_t")
    channels = x_t.shape[1]
    expected = (x_t.shape[0], 2 * channels, *x_t.shape[2:]) if learned_variance else tuple(x_t.shape)
    if tuple(model_output.shape) != expected:
        what = "2C channels for variance_type='learned_range'" if learned_variance else "the shape of x_t"
        raise ValueError(f"model_output has shape {tuple(model_output.shape)}; expected {expected} ({what})")


FLOAT32_MAX = 3.4028234663852886e38


def check_guidance_scale(guidance_scale: object) -> Optional[float]:
    """None, or classifier-free guidance's w as a finite float (any sign: w = 0 gives the unconditional model's
    prediction, w = 1 the conditional one, w > 1 guides past it; a learned variance is always the conditional
    half's, as diffusers' guided pipelines take it)."""
    if guidance_scale is None:
        return None
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
        raise TypeError(f"guidance_scale must be a number or None, got {type(guidance_scale).__name__}")
    value = float(guidance_scale)
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:  # the kernels read w as float32
        raise ParameterError("guidance_scale", lambda name: f"{name('guidance_scale')} must be finite in float32 "
                             f"(|w| <= {FLOAT32_MAX:.4g}), got {guidance_scale}")
    return value


def _guided_halves(model_output: torch.Tensor, x_t: torch.Tensor, guidance_scale: object):
    """(the conditional half of a guided [2B] model output — or the output itself —, w as a float32 [1] tensor or
    None), checked for the public steps."""
    w = check_guidance_scale(guidance_scale)
    if w is None:
        return model_output, None
    check_sample_tensor("model_output", model_output)
    if model_output.shape[0] != 2 * x_t.shape[0]:
        raise ValueError(f"with guidance_scale, model_output is [2B, ...] (the conditional batch, then the "
                         f"unconditional one): expected {2 * x_t.shape[0]} samples for x_t's {x_t.shape[0]}, got "
                         f"{model_output.shape[0]}")
    return model_output[: x_t.shape[0]], torch.tensor([w], dtype=torch.float32, device=x_t.device)


# ---------------------------------------------------------------------------------------------------------------
# public ops


def q_sample(
    x0: torch.Tensor,
    t: TimestepLike,
    schedule: NoiseSchedule,
    noise: Optional[torch.Tensor] = None,
    seed: SeedLike = None,
    sample_offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε, fused. Returns (x_t, ε).

    ε is `noise` when given; otherwise it is drawn in-kernel (Philox keyed by `seed`, the sample's global index
    sample_offset + i, and the element) and returned in float32. seed=None draws a key from torch's generator.
    Giving both noise and seed is a ValueError (the seed would be ignored).
    x_t has x0's dtype and memory format. t: an int or an integer tensor [B] on x0's device.
    """
    schedule = check_schedule(schedule)
    check_sample_tensor("x0", x0)
    t = timesteps_tensor("t", t, x0.shape[0], x0.device, schedule.num_timesteps)
    noise = check_noise(noise, x0, "x0", seed)
    sample_offset = check_sample_range(sample_offset, x0.shape[0])
    buffers = schedule.buffers(x0.device)
    sqrt_ac, sqrt_1m_ac = buffers["sqrt_alphas_cumprod"], buffers["sqrt_one_minus_alphas_cumprod"]
    if noise is not None:
        return torch.ops.ddpm_fast.q_sample(x0, t, sqrt_ac, sqrt_1m_ac, noise), noise
    key = seed_tensor(seed, x0.device)
    return torch.ops.ddpm_fast.q_sample_philox(x0, t, sqrt_ac, sqrt_1m_ac, key, sample_offset)


def p_step(
    model_output: torch.Tensor,
    t: TimestepLike,
    x_t: torch.Tensor,
    schedule: NoiseSchedule,
    noise: Optional[torch.Tensor] = None,
    seed: SeedLike = None,
    prediction_type: str = "epsilon",
    variance_type: str = "fixed_small",
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
    sample_offset: int = 0,
    guidance_scale: Optional[float] = None,
) -> torch.Tensor:
    """One ancestral DDPM step x_t -> x_{t-1}, fused; returns float32 in x_t's memory format.

    prediction_type: "epsilon", "sample" (x0) or "v_prediction". variance_type: "fixed_small" (β̃_t),
    "fixed_large" (β_t), their "_log" forms (same σ), or "learned_range" (model_output has 2C channels, the last C
    interpolating log σ² between β̃_t and β_t). clip_sample clamps the predicted x0 to ±clip_sample_range.
    z is `noise` when given, else drawn in-kernel from (seed, sample index, t); no noise is added where t == 0.
    Giving both noise and seed is a ValueError (the seed would be ignored).
    guidance_scale: classifier-free guidance (Ho & Salimans 2022) fused into the step: model_output is then
    [2B, ...], the conditional batch followed by the unconditional one, and the step uses u + w·(c − u) in the
    model's own parameterisation (a learned variance from the conditional half, whatever w: at w = 0 the mean is the
    unconditional model's and the variance still the conditional one's, as in diffusers' guided pipelines).
    """
    schedule = check_schedule(schedule)
    check_sample_tensor("x_t", x_t, (torch.float32,))
    prediction = check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
    variance = check_choice("variance_type", variance_type, VARIANCE_TYPES)
    cond_output, guidance = _guided_halves(model_output, x_t, guidance_scale)
    _check_model_output(cond_output, x_t, variance_type == "learned_range")
    t = timesteps_tensor("t", t, x_t.shape[0], x_t.device, schedule.num_timesteps)
    noise = check_noise(noise, x_t, "x_t", seed)
    clip_range = check_positive_float("clip_sample_range", clip_sample_range)
    sample_offset = check_sample_range(sample_offset, x_t.shape[0])
    key = None if noise is not None else seed_tensor(seed, x_t.device)
    return torch.ops.ddpm_fast.p_step(
        model_output, t, x_t, schedule.coefficient_table(x_t.device), noise, key, sample_offset, prediction,
        variance, bool(clip_sample), clip_range, guidance,
    )


def ddim_step(
    model_output: torch.Tensor,
    t: TimestepLike,
    t_prev: TimestepLike,
    x_t: torch.Tensor,
    schedule: NoiseSchedule,
    eta: float = 0.0,
    noise: Optional[torch.Tensor] = None,
    seed: SeedLike = None,
    prediction_type: str = "epsilon",
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
    sample_offset: int = 0,
    guidance_scale: Optional[float] = None,
    use_clipped_model_output: bool = False,
) -> torch.Tensor:
    """One DDIM step x_t -> x_{t_prev} for any t_prev < t (t_prev = -1 ends the chain at ᾱ = 1), fused.

    eta = 0 is deterministic DDIM; eta = 1 has DDPM's posterior variance for adjacent steps. A 2C-channel
    (learned-variance) model output is accepted; its variance half is ignored. Returns float32. With eta > 0, z is
    `noise` when given, else drawn in-kernel from (seed, sample index, t); giving both is a ValueError.
    guidance_scale: classifier-free guidance fused in, as in p_step (model_output [2B, ...]).
    use_clipped_model_output: with clip_sample, ε is re-derived from the clipped x0 (Song et al. 2021, eq. 12 with
    the clipped x0 in both terms), as diffusers' DDIMScheduler.step(use_clipped_model_output=True) and lucidrains'
    ddim_sample do; False (the default) keeps the model's ε, as diffusers' default.
    """
    if not isinstance(use_clipped_model_output, bool):
        raise TypeError(f"use_clipped_model_output must be True or False, got {use_clipped_model_output!r}")
    schedule = check_schedule(schedule)
    check_sample_tensor("x_t", x_t, (torch.float32,))
    prediction = check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
    check_sample_tensor("model_output", model_output)
    check_same_device("model_output", model_output, x_t, "x_t")
    cond_output, guidance = _guided_halves(model_output, x_t, guidance_scale)
    channels = x_t.shape[1]
    if cond_output.shape[1] not in (channels, 2 * channels) or (
            cond_output.shape[0], *cond_output.shape[2:]) != (x_t.shape[0], *x_t.shape[2:]):
        raise ValueError(f"model_output has shape {tuple(model_output.shape)}; expected the shape of x_t "
                         f"{tuple(x_t.shape)} (or 2C channels with a learned variance)")
    batch = x_t.shape[0]
    t = timesteps_tensor("t", t, batch, x_t.device, schedule.num_timesteps)
    t_prev = timesteps_tensor("t_prev", t_prev, batch, x_t.device, schedule.num_timesteps, allow_end=True)
    if batch and not torch.compiler.is_compiling() and bool((t_prev >= t).any()):
        raise ValueError("t_prev must be smaller than t for every sample")
    eta = check_positive_float("eta", eta, allow_zero=True)
    noise = check_noise(noise, x_t, "x_t", seed)
    clip_range = check_positive_float("clip_sample_range", clip_sample_range)
    sample_offset = check_sample_range(sample_offset, x_t.shape[0])
    key = None if noise is not None or eta == 0.0 else seed_tensor(seed, x_t.device)
    return torch.ops.ddpm_fast.ddim_step(
        model_output, t, t_prev, x_t, schedule.buffers(x_t.device)["alphas_cumprod_float64"], noise, key,
        sample_offset, prediction, eta, bool(clip_sample), clip_range, guidance, use_clipped_model_output,
    )
