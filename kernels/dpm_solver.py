"""The fused DPM-Solver++ step (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models"): multistep, data prediction, order 1, 2 (midpoint form) or 3, ODE or SDE variant.

One kernel reads x_t (float32), the model output (ε, x0 or v; float32/bf16/fp16, NCHW or channels-last; with
guidance the [2B] conditional-then-unconditional output of classifier-free guidance), the previous step's x0
estimate and, for a third-order chain, the one before it, and writes x_{t_next} and this step's x0 estimate (both
float32, in x_t's layout):

    x0    = the model's data prediction at (α_s, σ_s), clipped when asked
    x_new = A·x_t + B·x0 + C·x0_prev + C2·x0_prev2 + S·z

A history term whose coefficient is 0 is not read at all (masked load): a first-order step reads neither buffer, and
whatever they hold (an earlier run's x0, NaN) cannot leak in. The per-step scalars (α_s, σ_s, A, B, C, S, C2) are one
column of a float32 table [len(SOLVER_ROWS), n] that the plan
computes in float64 from the chain (sampling/dpm_solver.py): order, λ differences and the final step to σ = 0 live
there, so one captured graph serves any chain. z is Philox keyed by (seed, sample, the step's timestep), the stream
of every reverse step, or given.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from . import launch
from .tile import clamped_timestep, element_offsets, sample_tile
from ..vocabulary import SOLVER_ROW_INDEX, SOLVER_ROWS, STREAM_REVERSE_STEP
from .philox import philox_normal_reference
from .reverse_step import (NO_NOISE, column_rows, data_prediction, draw_noise, guidance_parts, guided_prediction,
                           noise_mode, solver_data_prediction)


@triton.jit
def _column(table_ptr, row: tl.constexpr, column, num_columns):
    return tl.load(table_ptr + row * num_columns + column)


@triton.jit
def dpm_solver_step_kernel(
    model_ptr,  # [B, C, H, W] model output (ε, x0 or v); GUIDED: the conditional half of a [2B] output
    x_ptr,  # [B, C, H, W] x_t, float32
    x0_prev_ptr,  # [B, C, H, W] the previous step's x0 estimate, float32, x_t's strides
    x0_prev2_ptr,  # [B, C, H, W] the x0 estimate of the step before that, float32, x_t's strides (HISTORY2 only)
    noise_ptr,  # [B, C, H, W] z (GIVEN_NOISE only)
    out_ptr,  # [B, C, H, W] x_{t_next}, float32, x_t's strides
    x0_out_ptr,  # [B, C, H, W] this step's x0 estimate, float32, x_t's strides
    t_ptr,  # int64 [B] the step's timestep (keys the noise)
    t_stride,
    column_ptr,  # int64 [B] the step's column of the table
    column_stride,
    table_ptr,  # float32 [len(SOLVER_ROWS), num_columns]
    num_columns,
    seed_ptr,  # int64 [1] (PHILOX_NOISE only)
    sample_offset,
    num_timesteps,
    C,
    HW,
    W,
    clip_range,
    guidance_ptr,  # float32 [1] guidance scale (GUIDED only)
    uncond_offset,  # elements from the conditional to the unconditional half (GUIDED only)
    md_sb, md_sc, md_sh, md_sw,  # model output strides
    x_sb, x_sc, x_sh, x_sw,  # x_t strides (also x0_prev, out, x0_out)
    nz_sb, nz_sc, nz_sh, nz_sw,  # noise strides
    PREDICTION: tl.constexpr,
    CLIP: tl.constexpr,
    NOISE: tl.constexpr,
    GUIDED: tl.constexpr,
    HISTORY2: tl.constexpr,  # a third-order chain: read x0_prev2 where the column's x0_prev2_coef is not 0
    SPATIAL_FLAT: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    sample, channel, quad, lane, hw, mask = sample_tile(tl.program_id(0), C, HW, BLOCK_C, BLOCK_Q, CHANNELS_LAST)
    t = clamped_timestep(t_ptr, t_stride, sample, num_timesteps)
    column = clamped_timestep(column_ptr, column_stride, sample, num_columns)
    alpha_s = _column(table_ptr, 0, column, num_columns)
    sigma_s = _column(table_ptr, 1, column, num_columns)
    x_coef = _column(table_ptr, 2, column, num_columns)
    x0_coef = _column(table_ptr, 3, column, num_columns)
    x0_prev_coef = _column(table_ptr, 4, column, num_columns)
    noise_coef = _column(table_ptr, 5, column, num_columns)

    x_offsets = element_offsets(sample, channel, hw, W, x_sb, x_sc, x_sh, x_sw, SPATIAL_FLAT)
    model_offsets = element_offsets(sample, channel, hw, W, md_sb, md_sc, md_sh, md_sw, SPATIAL_FLAT)
    x = tl.load(x_ptr + x_offsets, mask=mask).to(tl.float32)
    prediction = guided_prediction(model_ptr, model_offsets, mask, uncond_offset, guidance_ptr, GUIDED)
    x0 = data_prediction(x, prediction, alpha_s, sigma_s, clip_range, PREDICTION, CLIP)
    # A first-order step has no x0_prev term: whatever the buffer holds (an earlier run's last x0) must not leak in,
    # and it is not read.
    no_history = tl.zeros_like(x)  # the scalar coefficients as [tile] masks (a scalar & a mask fails to broadcast)
    x0_prev = tl.load(x0_prev_ptr + x_offsets, mask=mask & ((no_history + x0_prev_coef) != 0.0), other=0.0)
    x_new = x_coef * x + x0_coef * x0 + tl.where(x0_prev_coef == 0.0, 0.0, x0_prev_coef * x0_prev)
    if HISTORY2:
        x0_prev2_coef = _column(table_ptr, 6, column, num_columns)
        x0_prev2 = tl.load(x0_prev2_ptr + x_offsets, mask=mask & ((no_history + x0_prev2_coef) != 0.0), other=0.0)
        x_new = x_new + tl.where(x0_prev2_coef == 0.0, 0.0, x0_prev2_coef * x0_prev2)
    if NOISE != NO_NOISE:
        z = draw_noise(noise_ptr, seed_ptr, sample, sample_offset, t, channel, quad, lane, hw, mask, W,
                        nz_sb, nz_sc, nz_sh, nz_sw, NOISE, SPATIAL_FLAT)
        x_new = x_new + noise_coef * z
    tl.store(out_ptr + x_offsets, x_new, mask=mask)
    tl.store(x0_out_ptr + x_offsets, x0, mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# torch reference (float32 math, the same formulas)


def dpm_solver_step_reference(model_output, t, column, x_t, x0_prev, table, noise, seed, sample_offset, prediction,
                              clip, clip_range, guidance_scale=None, x0_prev2=None):
    row = column_rows(table, column, SOLVER_ROW_INDEX, x_t)
    x = x_t.float()
    x0 = solver_data_prediction(model_output, x_t, row, prediction, clip, clip_range, guidance_scale)
    previous = torch.where(row("x0_prev_coef") == 0, 0.0, row("x0_prev_coef") * x0_prev.float())
    x_new = row("x_coef") * x + row("x0_coef") * x0 + previous
    if x0_prev2 is not None:  # a third-order chain (the table then has the x0_prev2_coef row)
        x_new = x_new + torch.where(row("x0_prev2_coef") == 0, 0.0, row("x0_prev2_coef") * x0_prev2.float())
    if noise is not None or seed is not None:
        if noise is not None:
            z = noise.float()
        else:
            sample_index = torch.arange(x_t.shape[0], device=x_t.device) + sample_offset
            z = philox_normal_reference(seed, sample_index, t.clamp(0, None), STREAM_REVERSE_STEP,
                                        tuple(launch.as_bchw(x_t).shape)).view(x_t.shape)
        x_new = x_new + row("noise_coef") * z
    return x_new, x0


# ---------------------------------------------------------------------------------------------------------------
# custom op (unchecked: sampling loops call it directly; tests check it against a float64 statement)


@triton_op("ddpm_fast::dpm_solver_step", mutates_args=())
def dpm_solver_step_op(
    model_output: torch.Tensor, t: torch.Tensor, column: torch.Tensor, x_t: torch.Tensor, x0_prev: torch.Tensor,
    table: torch.Tensor, noise: Optional[torch.Tensor], seed: Optional[torch.Tensor], sample_offset: int,
    prediction: int, clip: bool, clip_range: float, guidance_scale: Optional[torch.Tensor] = None,
    x0_prev2: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchecked DPM-Solver++ step: (x_{t_next}, this step's x0 estimate), both float32 in x_t's layout. No noise
    when both `noise` and `seed` are None (the ODE solver). t: the step's timestep [B] (keys the noise); column: its
    column of `table` [B]; x0_prev: the previous step's x0 estimate, shaped like x_t (read only where the column's
    x0_prev_coef is not 0). guidance_scale: as p_step's (model_output [2B, ...]). x0_prev2: a third-order chain's
    x0 estimate of two steps back, shaped like x_t (read where x0_prev2_coef is not 0), or None (orders 1 and 2)."""
    cond_output, uncond_offset, guidance = guidance_parts(model_output, x_t, guidance_scale)
    launch.check_launch_bounds(x_t, t, {}, model_output=cond_output, noise=noise, x0_prev=x0_prev, x0_prev2=x0_prev2)
    launch.check_launch_bounds(x_t, column, {})
    launch.check_lookup_tensor("table", table, x_t, torch.float32, rows=len(SOLVER_ROWS))
    if seed is not None:
        launch.check_lookup_tensor("seed", seed, x_t, torch.int64)
    layout = launch.memory_format_of(x_t)
    if x_t.numel() == 0 or not launch.runs_triton(x_t):
        x_new, x0 = dpm_solver_step_reference(model_output, t, column, x_t, x0_prev, table, noise, seed,
                                              sample_offset, prediction, clip, clip_range, guidance_scale, x0_prev2)
        return x_new.contiguous(memory_format=layout), x0.contiguous(memory_format=layout)
    x4 = launch.as_bchw(x_t)
    layout4 = launch.memory_format_of(x4)
    x4 = x4.contiguous(memory_format=layout4)  # dense (a no-op for NCHW and NHWC inputs)
    # x0_prev, out and x0_out share x_t's strides: one set of offsets serves all four
    prev4 = launch.as_bchw(x0_prev).to(torch.float32).contiguous(memory_format=layout4)
    prev2_4 = (launch.as_bchw(x0_prev2).to(torch.float32).contiguous(memory_format=layout4) if x0_prev2 is not None
               else prev4)
    model4 = launch.as_bchw(cond_output)[:, : x4.shape[1]]  # a learned-variance half, if any, is unused
    out = launch.empty_like_layout(x4, torch.float32)
    x0_out = launch.empty_like_layout(x4, torch.float32)
    noise4 = launch.as_bchw(noise) if noise is not None else x4
    batch, channels, height, width = x4.shape
    channels_last = launch.is_channels_last(x4)
    block_c, block_q, num_warps, programs = launch.tile_config(channels, height * width, channels_last, heavy=True)
    launch.wrap_triton(dpm_solver_step_kernel)[(batch * programs,)](
        model4, x4, prev4, prev2_4, noise4, out, x0_out, t, t.stride(0), column, column.stride(0), table, table.shape[1],
        # num_timesteps: t only keys the noise here (no schedule is indexed by it), so it is clamped at 0 alone
        seed if seed is not None else t, sample_offset, 1 << 62, channels, height * width, width, clip_range,
        guidance, uncond_offset, *launch.bchw_strides(model4), *launch.bchw_strides(x4),
        *launch.bchw_strides(noise4), PREDICTION=prediction, CLIP=clip, NOISE=noise_mode(noise, seed),
        GUIDED=guidance_scale is not None, HISTORY2=x0_prev2 is not None,
        SPATIAL_FLAT=launch.spatial_is_flat(width, model4, x4, noise4, out),
        CHANNELS_LAST=channels_last, BLOCK_C=block_c, BLOCK_Q=block_q, num_warps=num_warps,
    )
    return out.view(x_t.shape), x0_out.view(x_t.shape)
