"""Fused q-sample: x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε with a per-sample t, ε given or drawn in-kernel.

One read of x0 (and of ε when given), one write of x_t, and one write of ε when it is drawn here (it is the loss
target). The math runs in float32 whatever the input dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from . import launch
from .tile import clamped_timestep, element_offsets, sample_tile
from ..vocabulary import STREAM_Q_SAMPLE
from .philox import STREAM_Q_SAMPLE_CONST, philox_normal, philox_normal_reference


@triton.jit
def q_sample_kernel(
    x0_ptr,  # [B, C, H, W] clean data, any float dtype
    noise_ptr,  # [B, C, H, W] given ε (unused when NOISE_FROM_SEED)
    x_t_ptr,  # [B, C, H, W] output, x0's dtype
    eps_out_ptr,  # [B, C, H, W] float32 output of the drawn ε (unused unless NOISE_FROM_SEED)
    t_ptr,  # int64 [B] timestep per sample
    t_stride,  # its stride (0 for a broadcast timestep)
    sqrt_ac_ptr,  # float32 [T] sqrt(ᾱ)
    sqrt_1m_ac_ptr,  # float32 [T] sqrt(1 - ᾱ)
    seed_ptr,  # int64 [1] Philox key (unused unless NOISE_FROM_SEED)
    sample_offset,  # global index of this batch's sample 0 (noise keys)
    num_timesteps,  # T, for clamping t
    C,
    HW,
    W,
    x0_sb, x0_sc, x0_sh, x0_sw,  # x0 strides
    nz_sb, nz_sc, nz_sh, nz_sw,  # noise strides
    out_sb, out_sc, out_sh, out_sw,  # x_t and eps_out strides (allocated alike)
    NOISE_FROM_SEED: tl.constexpr,
    SPATIAL_FLAT: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    sample, channel, quad, lane, hw, mask = sample_tile(tl.program_id(0), C, HW, BLOCK_C, BLOCK_Q, CHANNELS_LAST)
    t = clamped_timestep(t_ptr, t_stride, sample, num_timesteps)
    signal_scale = tl.load(sqrt_ac_ptr + t)
    noise_scale = tl.load(sqrt_1m_ac_ptr + t)

    x0_offsets = element_offsets(sample, channel, hw, W, x0_sb, x0_sc, x0_sh, x0_sw, SPATIAL_FLAT)
    out_offsets = element_offsets(sample, channel, hw, W, out_sb, out_sc, out_sh, out_sw, SPATIAL_FLAT)
    x0 = tl.load(x0_ptr + x0_offsets, mask=mask).to(tl.float32)
    if NOISE_FROM_SEED:
        eps = philox_normal(tl.load(seed_ptr), quad, lane, sample + sample_offset, 0, channel,
                            STREAM_Q_SAMPLE_CONST)
        tl.store(eps_out_ptr + out_offsets, eps, mask=mask)
    else:
        noise_offsets = element_offsets(sample, channel, hw, W, nz_sb, nz_sc, nz_sh, nz_sw, SPATIAL_FLAT)
        eps = tl.load(noise_ptr + noise_offsets, mask=mask).to(tl.float32)
    x_t = signal_scale * x0 + noise_scale * eps
    tl.store(x_t_ptr + out_offsets, x_t.to(x_t_ptr.dtype.element_ty), mask=mask)


def q_sample_reference(
    x0: torch.Tensor, t: torch.Tensor, sqrt_ac: torch.Tensor, sqrt_1m_ac: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """The same function in plain torch (float32 math, result in x0's dtype)."""
    index = t.clamp(0, sqrt_ac.numel() - 1)
    shape = (-1,) + (1,) * (x0.dim() - 1)
    x_t = sqrt_ac[index].view(shape) * x0.float() + sqrt_1m_ac[index].view(shape) * noise.float()
    return x_t.to(x0.dtype)


def _launch_q_sample(x0, t, sqrt_ac, sqrt_1m_ac, noise, seed, sample_offset, x_t, eps_out) -> None:
    x0, x_t = launch.as_bchw(x0), launch.as_bchw(x_t)
    noise = launch.as_bchw(noise) if noise is not None else x0
    eps_out = launch.as_bchw(eps_out) if eps_out is not None else x_t
    batch, channels, height, width = x0.shape
    channels_last = launch.is_channels_last(x0)
    block_c, block_q, num_warps, programs = launch.tile_config(channels, height * width, channels_last)
    launch.wrap_triton(q_sample_kernel)[(batch * programs,)](
        x0, noise, x_t, eps_out, t, t.stride(0), sqrt_ac, sqrt_1m_ac, seed if seed is not None else t,
        sample_offset, sqrt_ac.numel(), channels, height * width, width,
        *launch.bchw_strides(x0), *launch.bchw_strides(noise), *launch.bchw_strides(x_t),
        NOISE_FROM_SEED=seed is not None, SPATIAL_FLAT=launch.spatial_is_flat(width, x0, noise, x_t),
        CHANNELS_LAST=channels_last, BLOCK_C=block_c, BLOCK_Q=block_q, num_warps=num_warps,
    )


def _check_schedule_rows(x0: torch.Tensor, sqrt_ac: torch.Tensor, sqrt_1m_ac: torch.Tensor) -> None:
    launch.check_lookup_tensor("sqrt_alphas_cumprod", sqrt_ac, x0, torch.float32)
    launch.check_lookup_tensor("sqrt_one_minus_alphas_cumprod", sqrt_1m_ac, x0, torch.float32)
    if sqrt_ac.shape != sqrt_1m_ac.shape:
        raise ValueError("sqrt_alphas_cumprod and sqrt_one_minus_alphas_cumprod must have the same length")


@triton_op("ddpm_fast::q_sample", mutates_args=())
def q_sample_op(
    x0: torch.Tensor, t: torch.Tensor, sqrt_ac: torch.Tensor, sqrt_1m_ac: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Unchecked q-sample with a given ε. x0, noise: [B, C, *spatial]; t: int64 [B]; schedule rows: float32 [T]."""
    launch.check_launch_bounds(x0, t, {}, noise=noise)
    _check_schedule_rows(x0, sqrt_ac, sqrt_1m_ac)
    if x0.numel() == 0 or not launch.runs_triton(x0):
        return q_sample_reference(x0, t, sqrt_ac, sqrt_1m_ac, noise)
    x_t = launch.empty_like_layout(x0, x0.dtype)
    _launch_q_sample(x0, t, sqrt_ac, sqrt_1m_ac, noise, None, 0, x_t, None)
    return x_t


@triton_op("ddpm_fast::q_sample_philox", mutates_args=())
def q_sample_philox_op(
    x0: torch.Tensor, t: torch.Tensor, sqrt_ac: torch.Tensor, sqrt_1m_ac: torch.Tensor, seed: torch.Tensor,
    sample_offset: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchecked q-sample drawing ε in-kernel (Philox keyed by seed, sample index, element). Returns (x_t, ε fp32)."""
    launch.check_launch_bounds(x0, t, {})
    _check_schedule_rows(x0, sqrt_ac, sqrt_1m_ac)
    launch.check_lookup_tensor("seed", seed, x0, torch.int64)
    if x0.numel() == 0 or not launch.runs_triton(x0):
        batch = x0.shape[0]
        sample_index = torch.arange(batch, device=x0.device) + sample_offset
        shape4 = tuple(launch.as_bchw(x0).shape)
        eps = philox_normal_reference(seed, sample_index, torch.zeros_like(sample_index), STREAM_Q_SAMPLE, shape4)
        eps = eps.view(x0.shape).contiguous(memory_format=launch.memory_format_of(x0))
        return q_sample_reference(x0, t, sqrt_ac, sqrt_1m_ac, eps), eps
    x_t = launch.empty_like_layout(x0, x0.dtype)
    eps = launch.empty_like_layout(x0, torch.float32)
    _launch_q_sample(x0, t, sqrt_ac, sqrt_1m_ac, None, seed, sample_offset, x_t, eps)
    return x_t, eps


# Gradients: x_t is linear in x0 and ε, so backward is a per-sample scale (no kernel needed).


def _per_sample(coefficient: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    index = t.clamp(0, coefficient.numel() - 1)
    return coefficient[index].view((-1,) + (1,) * (like.dim() - 1))


def _setup_q_sample(ctx, inputs, output) -> None:
    _, t, sqrt_ac, sqrt_1m_ac = inputs[:4]
    ctx.save_for_backward(t, sqrt_ac, sqrt_1m_ac)


def _backward_q_sample(ctx, grad_x_t):
    t, sqrt_ac, sqrt_1m_ac = ctx.saved_tensors
    grad_x0 = (_per_sample(sqrt_ac, t, grad_x_t) * grad_x_t.float()).to(grad_x_t.dtype)
    grad_noise = (_per_sample(sqrt_1m_ac, t, grad_x_t) * grad_x_t.float()).to(grad_x_t.dtype)
    return grad_x0, None, None, None, grad_noise


def _backward_q_sample_philox(ctx, grad_x_t, grad_eps):
    t, sqrt_ac, _ = ctx.saved_tensors
    grad_x0 = None
    if grad_x_t is not None:
        grad_x0 = (_per_sample(sqrt_ac, t, grad_x_t) * grad_x_t.float()).to(grad_x_t.dtype)
    return grad_x0, None, None, None, None, None


q_sample_op.register_autograd(_backward_q_sample, setup_context=_setup_q_sample)
q_sample_philox_op.register_autograd(_backward_q_sample_philox, setup_context=_setup_q_sample)
