"""The fused UniPC step (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models"): data prediction, the UniC corrector at this point and the UniP predictor to the next, orders 1-3,
B(h) "bh1" or "bh2" — one kernel per model call.

One kernel reads x_t (float32, the predictor's sample the model was called on), the model output (ε, x0 or v;
float32/bf16/fp16, NCHW or channels-last; with guidance the [2B] conditional-then-unconditional output of
classifier-free guidance), the previous point's corrected sample and the x0 estimates of up to three earlier model
calls, and writes three float32 tensors in x_t's layout:

    x0        = the model's data prediction at (α_s, σ_s), clipped when asked
    corrected = cx·x_t + cl·last_sample + c0·x0 + c1·x0_prev + c2·x0_prev2 + c3·x0_prev3      (UniC; x_t when off)
    x_next    = nx·x_t + nl·last_sample + n0·x0 + n1·x0_prev + n2·x0_prev2 + n3·x0_prev3      (UniP from `corrected`)

The scalars are one column of a float32 table [len(UNIPC_ROWS), n] that the plan computes in float64
(sampling/unipc.py): the orders, the corrector's on/off, B(h) and the final step to σ = 0 live there, so one compiled
step and one captured graph serve any chain. A term whose two coefficients are 0 is not read at all (masked load):
whatever the buffer holds (an earlier run's x0, NaN) cannot leak in. No noise: UniPC solves the ODE.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from . import launch
from .tile import clamped_timestep, element_offsets, sample_tile
from ..vocabulary import UNIPC_ROW_INDEX, UNIPC_ROWS
from .reverse_step import column_rows, data_prediction, guidance_parts, guided_prediction, solver_data_prediction

_TERMS = ("x_coef", "last_coef", "x0_coef", "x0_prev_coef", "x0_prev2_coef", "x0_prev3_coef")
# Row numbers for the kernel: each input's coefficient in the next sample; the corrected sample's rows follow at
# CORRECTED further (UNIPC_ROWS).
ALPHA_S, SIGMA_S = tl.constexpr(UNIPC_ROW_INDEX["alpha_s"]), tl.constexpr(UNIPC_ROW_INDEX["sigma_s"])
X_ROW, LAST_ROW, X0_ROW, PREV_ROW, PREV2_ROW, PREV3_ROW = (tl.constexpr(UNIPC_ROW_INDEX[name]) for name in _TERMS)
CORRECTED = tl.constexpr(UNIPC_ROW_INDEX["corrected_x_coef"] - UNIPC_ROW_INDEX["x_coef"])


@triton.jit
def _term(ptr, offsets, mask, table_ptr, row: tl.constexpr, column, num_columns, x_value, out_next, out_corr):
    """Add one input's share to both outputs, reading it only where one of its two coefficients is not 0."""
    next_coef = tl.load(table_ptr + row * num_columns + column)
    corr_coef = tl.load(table_ptr + (row + CORRECTED) * num_columns + column)
    used = (tl.zeros_like(x_value) + tl.abs(next_coef) + tl.abs(corr_coef)) != 0.0
    value = tl.load(ptr + offsets, mask=mask & used, other=0.0)
    out_next = out_next + tl.where(next_coef == 0.0, 0.0, next_coef * value)
    out_corr = out_corr + tl.where(corr_coef == 0.0, 0.0, corr_coef * value)
    return out_next, out_corr


@triton.jit
def unipc_step_kernel(
    model_ptr,  # [B, C, H, W] model output (ε, x0 or v); GUIDED: the conditional half of a [2B] output
    x_ptr,  # [B, C, H, W] x_t, float32 (every float32 buffer below shares its strides)
    last_ptr,  # [B, C, H, W] the previous point's corrected sample
    prev_ptr,  # [B, C, H, W] x0 of the previous model call
    prev2_ptr,  # [B, C, H, W] x0 of the call before (HISTORY >= 2)
    prev3_ptr,  # [B, C, H, W] x0 of the call before that (HISTORY == 3)
    out_ptr,  # [B, C, H, W] x_next
    corrected_ptr,  # [B, C, H, W] this point's corrected sample (the next step's last_sample)
    x0_out_ptr,  # [B, C, H, W] this call's x0
    column_ptr,  # int64 [B] the step's column of the table
    column_stride,
    table_ptr,  # float32 [len(UNIPC_ROWS), num_columns]
    num_columns,
    C,
    HW,
    W,
    clip_range,
    guidance_ptr,  # float32 [1] guidance scale (GUIDED only)
    uncond_offset,  # elements from the conditional to the unconditional half (GUIDED only)
    md_sb, md_sc, md_sh, md_sw,  # model output strides
    x_sb, x_sc, x_sh, x_sw,  # x_t strides
    PREDICTION: tl.constexpr,
    CLIP: tl.constexpr,
    GUIDED: tl.constexpr,
    HISTORY: tl.constexpr,  # 1, 2 or 3 earlier x0 estimates (the chain's solver_order)
    SPATIAL_FLAT: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    sample, channel, quad, lane, hw, mask = sample_tile(tl.program_id(0), C, HW, BLOCK_C, BLOCK_Q, CHANNELS_LAST)
    column = clamped_timestep(column_ptr, column_stride, sample, num_columns)
    alpha_s = tl.load(table_ptr + ALPHA_S * num_columns + column)
    sigma_s = tl.load(table_ptr + SIGMA_S * num_columns + column)

    x_offsets = element_offsets(sample, channel, hw, W, x_sb, x_sc, x_sh, x_sw, SPATIAL_FLAT)
    model_offsets = element_offsets(sample, channel, hw, W, md_sb, md_sc, md_sh, md_sw, SPATIAL_FLAT)
    x = tl.load(x_ptr + x_offsets, mask=mask).to(tl.float32)
    prediction = guided_prediction(model_ptr, model_offsets, mask, uncond_offset, guidance_ptr, GUIDED)
    x0 = data_prediction(x, prediction, alpha_s, sigma_s, clip_range, PREDICTION, CLIP)

    x_next = tl.load(table_ptr + X_ROW * num_columns + column) * x
    corrected = tl.load(table_ptr + (X_ROW + CORRECTED) * num_columns + column) * x
    x_next = x_next + tl.load(table_ptr + X0_ROW * num_columns + column) * x0
    corrected = corrected + tl.load(table_ptr + (X0_ROW + CORRECTED) * num_columns + column) * x0
    x_next, corrected = _term(last_ptr, x_offsets, mask, table_ptr, LAST_ROW, column, num_columns, x, x_next,
                              corrected)
    x_next, corrected = _term(prev_ptr, x_offsets, mask, table_ptr, PREV_ROW, column, num_columns, x, x_next,
                              corrected)
    if HISTORY >= 2:
        x_next, corrected = _term(prev2_ptr, x_offsets, mask, table_ptr, PREV2_ROW, column, num_columns, x, x_next,
                                  corrected)
    if HISTORY == 3:
        x_next, corrected = _term(prev3_ptr, x_offsets, mask, table_ptr, PREV3_ROW, column, num_columns, x, x_next,
                                  corrected)
    tl.store(out_ptr + x_offsets, x_next, mask=mask)
    tl.store(corrected_ptr + x_offsets, corrected, mask=mask)
    tl.store(x0_out_ptr + x_offsets, x0, mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# torch reference (float32 math, the same formulas)


def unipc_step_reference(model_output, column, x_t, last_sample, history, table, prediction, clip, clip_range,
                         guidance_scale=None):
    """The UniPC step in torch (the CPU path, the ONNX exporter's graph): (x_next, this point's corrected sample,
    this call's x0), float32 [B, C, ...] in x_t's shape. model_output: [B, C(, +C), ...] ([2B, ...] with
    guidance_scale, a float32 [1] w); column: int64 [B], the step's column of `table` (float32 [len(UNIPC_ROWS), n]);
    last_sample: the previous corrected sample; history: the earlier calls' x0 estimates, newest first (1 to 3
    tensors shaped like x_t); prediction: PREDICTION_TYPES' code; clip: clamp x0 to [-clip_range, clip_range]. A term
    whose coefficient is 0 contributes 0 whatever its buffer holds (NaN included), as the kernel's masked load."""
    row = column_rows(table, column, UNIPC_ROW_INDEX, x_t)
    x = x_t.float()
    x0 = solver_data_prediction(model_output, x_t, row, prediction, clip, clip_range, guidance_scale)
    inputs = (x, last_sample, x0, *history)
    outputs = []
    for prefix in ("", "corrected_"):
        total = row(prefix + "x_coef") * x + row(prefix + "x0_coef") * x0
        for name, value in zip(_TERMS, inputs):
            if name not in ("x_coef", "x0_coef"):  # masked: a zero coefficient never reads its buffer
                coef = row(prefix + name)
                total = total + torch.where(coef == 0, 0.0, coef * value.float())
        outputs.append(total)
    return outputs[0], outputs[1], x0


# ---------------------------------------------------------------------------------------------------------------
# custom op (unchecked: sampling loops call it directly; tests check it against a float64 statement)


@triton_op("ddpm_fast::unipc_step", mutates_args=())
def unipc_step_op(
    model_output: torch.Tensor, column: torch.Tensor, x_t: torch.Tensor, last_sample: torch.Tensor,
    x0_prev: torch.Tensor, x0_prev2: Optional[torch.Tensor], x0_prev3: Optional[torch.Tensor], table: torch.Tensor,
    prediction: int, clip: bool, clip_range: float, guidance_scale: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unchecked UniPC step: (x_next, this point's corrected sample, this call's x0), float32 in x_t's layout.
    column: the step's column of `table` (float32 [len(UNIPC_ROWS), n]) [B]; last_sample: the previous point's
    corrected sample; x0_prev, x0_prev2, x0_prev3: the earlier calls' x0 estimates, newest first (x0_prev2 / x0_prev3
    None for a chain of solver_order 1 / below 3), each shaped like x_t and read only where a coefficient of it is
    not 0. guidance_scale: as p_step's (model_output [2B, ...])."""
    cond_output, uncond_offset, guidance = guidance_parts(model_output, x_t, guidance_scale)
    history = [h for h in (x0_prev, x0_prev2, x0_prev3) if h is not None]
    if x0_prev3 is not None and x0_prev2 is None:
        raise ValueError("x0_prev3 needs x0_prev2")
    launch.check_launch_bounds(x_t, column, {}, model_output=cond_output, last_sample=last_sample, x0_prev=x0_prev,
                               x0_prev2=x0_prev2, x0_prev3=x0_prev3)
    launch.check_lookup_tensor("table", table, x_t, torch.float32, rows=len(UNIPC_ROWS))
    layout = launch.memory_format_of(x_t)
    if x_t.numel() == 0 or not launch.runs_triton(x_t):
        outputs = unipc_step_reference(model_output, column, x_t, last_sample, history, table, prediction, clip,
                                       clip_range, guidance_scale)
        return tuple(out.contiguous(memory_format=layout) for out in outputs)
    x4 = launch.as_bchw(x_t)
    layout4 = launch.memory_format_of(x4)
    x4 = x4.contiguous(memory_format=layout4)  # dense (a no-op for NCHW and NHWC inputs)
    # every float32 buffer shares x_t's strides: one set of offsets serves them all
    last4, *history4 = (launch.as_bchw(h).to(torch.float32).contiguous(memory_format=layout4)
                        for h in (last_sample, *history))
    pointers = history4 + [history4[-1]] * (3 - len(history4))  # unused slots: never read (HISTORY)
    model4 = launch.as_bchw(cond_output)[:, : x4.shape[1]]  # a learned-variance half, if any, is unused
    out, corrected, x0_out = (launch.empty_like_layout(x4, torch.float32) for _ in range(3))
    batch, channels, height, width = x4.shape
    channels_last = launch.is_channels_last(x4)
    block_c, block_q, num_warps, programs = launch.tile_config(channels, height * width, channels_last, heavy=True)
    launch.wrap_triton(unipc_step_kernel)[(batch * programs,)](
        model4, x4, last4, *pointers, out, corrected, x0_out, column, column.stride(0), table, table.shape[1],
        channels, height * width, width, clip_range, guidance, uncond_offset, *launch.bchw_strides(model4),
        *launch.bchw_strides(x4), PREDICTION=prediction, CLIP=clip, GUIDED=guidance_scale is not None,
        HISTORY=len(history4), SPATIAL_FLAT=launch.spatial_is_flat(width, model4, x4, out),
        CHANNELS_LAST=channels_last, BLOCK_C=block_c, BLOCK_Q=block_q, num_warps=num_warps,
    )
    return out.view(x_t.shape), corrected.view(x_t.shape), x0_out.view(x_t.shape)
