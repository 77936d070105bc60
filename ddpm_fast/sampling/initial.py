"""x_T, the sample a chain starts from: the caller's `latents`, or noise drawn as every sampler draws it.

One rule for FastSampler, OnnxSampler and the seed's fast `sample`: with a Philox key (seed=), x_T is the key's
STREAM_INITIAL noise of each sample (keyed by global sample index, so a shard draws its part of a larger batch);
otherwise it is the first torch.randn draw of `generator` (None: torch's global generator of the device). Given
latents are taken instead and nothing is drawn for x_T, as diffusers' pipelines do, so a generator's first draw is
the first step's z.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..kernels import ops as _ops  # noqa: F401 — registers torch.ops.ddpm_fast.*
from ..vocabulary import STREAM_INITIAL
from .loop import torch_noise


def check_latents(latents: object, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The caller's x_T, checked at the public boundary: a float32 tensor of `shape` on `device`, all finite (one
    host sync, before any step runs). TypeError for a non-tensor, ValueError naming what was expected otherwise."""
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents must be a torch.Tensor (x_T, float32 {list(shape)}), got {type(latents).__name__}")
    if latents.dtype != torch.float32:
        raise ValueError(f"latents must be float32 (x_T stays float32 between steps), got "
                         f"{str(latents.dtype).replace('torch.', '')}")
    if tuple(latents.shape) != tuple(shape):
        raise ValueError(f"latents must have shape {list(shape)} ([batch_size, *sample_shape]), got "
                         f"{list(latents.shape)}")
    if latents.device != device:
        raise ValueError(f"latents is on {latents.device} but the sampler samples on {device}")
    if not bool(torch.isfinite(latents).all()):
        raise ValueError("latents contains NaN or infinite values")
    return latents


def initial_sample(shape: tuple[int, ...], device: torch.device, key: Optional[torch.Tensor],
                   generator: Optional[torch.Generator], sample_offset: int = 0,
                   latents: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x_T of a chain of `shape` (float32, on `device`): `latents` when given (checked by check_latents; returned
    as is, so the caller copies it into its own buffer), else Philox noise of `key` for samples sample_offset + i,
    else torch.randn from `generator` (see the module docstring)."""
    if latents is not None:
        return latents
    if key is not None:
        starts = torch.zeros(shape[0], dtype=torch.int64, device=device)
        return torch.ops.ddpm_fast.philox_normal(key, starts, list(shape), sample_offset, STREAM_INITIAL, False)
    return torch_noise(shape, generator, device)
