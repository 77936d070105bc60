"""Fused GroupNorm + time embedding + FiLM + SiLU, forward and backward.

    z = x + emb[:, :, None, None]                       (emb: the projected time embedding, [B, C], optional)
    n = (z - mean_g(z)) * rsqrt(var_g(z) + eps)         (statistics per sample and group in float32)
    a = n * weight + bias                               (GroupNorm's affine, each optional)
    u = a * (1 + scale) + shift                         (scale/shift: [B, C], FiLM as in improved DDPM, optional)
    y = SiLU(u) if silu else u

One op serves every norm of the U-Net. x is read as [B, C, HW] through its strides, so NCHW and channels-last
inputs are used in place. Two launch plans, picked on the host per call (see `plan_launch`):

- single tile: when a whole group fits one register tile and there are enough (sample, group) pairs to fill the GPU,
  one program per group reads x once, computes the statistics in registers and writes y (backward alike: dy and x
  read once, dx written once).
- split: when B·G is small (batch 1) or a group is large, each group's spatial range is split over S programs.
  A statistics kernel writes per-split (count, mean, M2); the apply kernel combines them (Chan et al.'s parallel
  formula, in a fixed order) and normalizes its split. The backward writes per-split channel sums, which torch
  reduces in a fixed order. No float atomics anywhere, so results are bit-identical run to run.

Variance is the mean of squared deviations from the mean (two passes over registers, or Chan's combination of
per-tile M2), never E[x²] - E[x]², which cancels for large non-zero-mean inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from . import launch

# Enough programs to keep every SM of an H100/H200 (132/141 SMs) busy with several resident programs.
TARGET_PROGRAMS = 1024
# Largest group (padded to powers of two) held in registers by one program of the single-tile plan. The backward
# keeps x, dy and their products live: compiled for sm_90 (tests/launch_resources.py), a 16×256 group spills 256-516
# bytes per thread at 4, 8 or 16 warps, while 4×1024 and 8×512 fit in 240-255 registers at 8 warps; so groups of
# more than 8 (padded) channels take the single tile only up to 2048 elements.
MAX_SINGLE_TILE = 8192
MAX_SINGLE_TILE_BACKWARD = 4096
MAX_SINGLE_TILE_BACKWARD_WIDE = 2048
WIDE_GROUP = 8
# Elements per tile of the split plan, between these bounds (more programs at small sizes, fewer at large). The
# backward's split passes spill 8-204 bytes per thread in a 16×256 tile at any warp count: 2048 at most there.
MIN_SPLIT_TILE = 256
MAX_SPLIT_TILE = 4096
MAX_SPLIT_TILE_BACKWARD = 2048


# ----------------------------------------------------------------------------------------------------------- device


@triton.jit
def _tile_offsets(sample, group, c0, hw0, Cg, hw_end, stride_b, stride_c, stride_hw,
                  BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """(offsets, channel, mask) of the [BLOCK_HW, BLOCK_C] tile at (c0, hw0) of one group; channel is [1, BLOCK_C]."""
    hw = hw0 + tl.arange(0, BLOCK_HW)[:, None]
    local_c = c0 + tl.arange(0, BLOCK_C)[None, :]
    channel = group * Cg + local_c
    mask = (hw < hw_end) & (local_c < Cg)
    offsets = sample.to(tl.int64) * stride_b + channel.to(tl.int64) * stride_c + hw.to(tl.int64) * stride_hw
    return offsets, channel, mask


@triton.jit
def _load_z(x_ptr, emb_ptr, sample, group, c0, hw0, Cg, hw_end, x_sb, x_sc, x_shw, emb_sb, emb_sc,
            HAS_EMB: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """(z, channel, mask, mask_c) of the tile at (c0, hw0): z = x + emb in the accumulation dtype, 0 outside the
    mask; mask_c masks the [1, BLOCK_C] channel row (for per-channel loads)."""
    offsets, channel, mask = _tile_offsets(sample, group, c0, hw0, Cg, hw_end, x_sb, x_sc, x_shw, BLOCK_C, BLOCK_HW)
    mask_c = channel < (group + 1) * Cg
    z = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC)
    if HAS_EMB:
        emb = tl.load(emb_ptr + sample.to(tl.int64) * emb_sb + channel.to(tl.int64) * emb_sc, mask=mask_c, other=0.0)
        z = tl.where(mask, z + emb.to(ACC), 0.0)
    return z, channel, mask, mask_c


@triton.jit
def _modulation(weight_ptr, bias_ptr, scale_ptr, shift_ptr, sample, channel, mask_c,
                scale_sb, scale_sc, shift_sb, shift_sc,
                HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr,
                ACC: tl.constexpr):
    """[1, BLOCK_C] rows (weight, bias, 1 + scale, shift) of u = (n·weight + bias)·(1 + scale) + shift.

    The loads are written out rather than shared through a helper: the interpreter pays per nested call."""
    row = sample.to(tl.int64)
    column = channel.to(tl.int64)
    if HAS_WEIGHT:
        weight = tl.load(weight_ptr + column, mask=mask_c, other=0.0).to(ACC)
    else:
        weight = tl.full(channel.shape, 1.0, ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + column, mask=mask_c, other=0.0).to(ACC)
    else:
        bias = tl.full(channel.shape, 0.0, ACC)
    if HAS_SCALE:
        one_plus_scale = 1.0 + tl.load(scale_ptr + row * scale_sb + column * scale_sc, mask=mask_c,
                                       other=0.0).to(ACC)
    else:
        one_plus_scale = tl.full(channel.shape, 1.0, ACC)
    if HAS_SHIFT:
        shift = tl.load(shift_ptr + row * shift_sb + column * shift_sc, mask=mask_c, other=0.0).to(ACC)
    else:
        shift = tl.full(channel.shape, 0.0, ACC)
    return weight, bias, one_plus_scale, shift


@triton.jit
def _activation_grad(dy, u, SILU: tl.constexpr):
    """dL/du from dL/dy: SiLU'(u) = σ(u)·(1 + u·(1 - σ(u)))."""
    if SILU:
        sig = tl.sigmoid(u)
        return dy * sig * (1.0 + u * (1.0 - sig))
    else:
        return dy


@triton.jit
def _split_range(split, hw_per_split, HW):
    start = split * hw_per_split
    return start, tl.minimum(start + hw_per_split, HW)


@triton.jit
def group_norm_stats_kernel(
    x_ptr,  # [B, C, HW] input, any float dtype, strided
    emb_ptr,  # [B, C] time-embedding bias added before the norm (unused unless HAS_EMB)
    part_count_ptr, part_mean_ptr, part_m2_ptr,  # ACC [B*G, S] outputs: per-split count, mean, M2
    HW, Cg, G,  # spatial size, channels per group, groups
    hw_per_split, num_splits,  # each split covers hw_per_split positions (a multiple of BLOCK_HW)
    x_sb, x_sc, x_shw,
    emb_sb, emb_sc,
    HAS_EMB: tl.constexpr,
    ACC: tl.constexpr,  # accumulation dtype: float32, or float64 for float64 inputs
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Split plan, pass 1: Welford/Chan statistics of z over one split of one (sample, group)."""
    pair = tl.program_id(0)
    split = tl.program_id(1)
    sample = pair // G
    group = pair % G
    start, end = _split_range(split, hw_per_split, HW)
    count = tl.full([], 0.0, ACC)
    mean = tl.full([], 0.0, ACC)
    m2 = tl.full([], 0.0, ACC)
    for hw0 in range(start, end, BLOCK_HW):
        for c0 in range(0, Cg, BLOCK_C):
            z, _, mask, _ = _load_z(x_ptr, emb_ptr, sample, group, c0, hw0, Cg, end, x_sb, x_sc, x_shw,
                                    emb_sb, emb_sc, HAS_EMB, ACC, BLOCK_C, BLOCK_HW)
            tile_count = tl.sum(tl.sum(mask.to(ACC), 1), 0)
            tile_mean = tl.sum(tl.sum(z, 1), 0) / tile_count
            deviation = tl.where(mask, z - tile_mean, 0.0)
            tile_m2 = tl.sum(tl.sum(deviation * deviation, 1), 0)
            # Chan et al.: merge (count, mean, m2) with the tile's; exact in exact arithmetic, stable in float32.
            total = count + tile_count
            delta = tile_mean - mean
            mean = mean + delta * (tile_count / total)
            m2 = m2 + tile_m2 + delta * delta * (count * tile_count / total)
            count = total
    out = pair * num_splits + split
    tl.store(part_count_ptr + out, count)
    tl.store(part_mean_ptr + out, mean)
    tl.store(part_m2_ptr + out, m2)


@triton.jit
def group_norm_forward_kernel(
    x_ptr,  # [B, C, HW] input, strided
    emb_ptr,  # [B, C] bias added before the norm (unused unless HAS_EMB)
    weight_ptr, bias_ptr,  # [C] GroupNorm affine (unused unless HAS_WEIGHT / HAS_BIAS)
    scale_ptr, shift_ptr,  # [B, C] FiLM modulation (unused unless HAS_SCALE / HAS_SHIFT)
    y_ptr,  # [B, C, HW] output, x's dtype
    mean_ptr, rstd_ptr,  # ACC [B*G] outputs, kept for the backward
    part_count_ptr, part_mean_ptr, part_m2_ptr,  # ACC [B*G, S] split statistics (unused if SINGLE_TILE)
    HW, Cg, G, hw_per_split, num_splits, eps,
    x_sb, x_sc, x_shw,
    y_sb, y_sc, y_shw,
    emb_sb, emb_sc, scale_sb, scale_sc, shift_sb, shift_sc,
    HAS_EMB: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, SILU: tl.constexpr,
    ACC: tl.constexpr,  # accumulation dtype: float32, or float64 for float64 inputs
    SINGLE_TILE: tl.constexpr,  # the whole group is one tile: compute its statistics here (num_splits == 1)
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    BLOCK_S: tl.constexpr,  # next power of two >= num_splits
):
    pair = tl.program_id(0)
    split = tl.program_id(1)
    sample = pair // G
    group = pair % G
    if SINGLE_TILE:
        z, channel, mask, mask_c = _load_z(x_ptr, emb_ptr, sample, group, 0, 0, Cg, HW, x_sb, x_sc, x_shw,
                                           emb_sb, emb_sc, HAS_EMB, ACC, BLOCK_C, BLOCK_HW)
        count = Cg * 1.0 * HW
        mean = tl.sum(tl.sum(z, 1), 0) / count
        deviation = tl.where(mask, z - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(tl.sum(deviation * deviation, 1), 0) / count + eps)
        weight, bias, one_plus_scale, shift = _modulation(
            weight_ptr, bias_ptr, scale_ptr, shift_ptr, sample, channel, mask_c, scale_sb, scale_sc,
            shift_sb, shift_sc, HAS_WEIGHT, HAS_BIAS, HAS_SCALE, HAS_SHIFT, ACC)
        u = (deviation * rstd * weight + bias) * one_plus_scale + shift
        if SILU:
            u = u * tl.sigmoid(u)
        y_offsets, _, _ = _tile_offsets(sample, group, 0, 0, Cg, HW, y_sb, y_sc, y_shw, BLOCK_C, BLOCK_HW)
        tl.store(y_ptr + y_offsets, u.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        # Combine the S split statistics in a fixed order (same bits whichever program does it).
        splits = tl.arange(0, BLOCK_S)
        in_range = splits < num_splits
        counts = tl.load(part_count_ptr + pair * num_splits + splits, mask=in_range, other=0.0)
        means = tl.load(part_mean_ptr + pair * num_splits + splits, mask=in_range, other=0.0)
        m2s = tl.load(part_m2_ptr + pair * num_splits + splits, mask=in_range, other=0.0)
        count = tl.sum(counts, 0)
        mean = tl.sum(counts * means, 0) / count
        spread = means - mean
        rstd = 1.0 / tl.sqrt(tl.sum(m2s + counts * spread * spread, 0) / count + eps)
        start, end = _split_range(split, hw_per_split, HW)
        for c0 in range(0, Cg, BLOCK_C):
            for hw0 in range(start, end, BLOCK_HW):
                z, channel, mask, mask_c = _load_z(x_ptr, emb_ptr, sample, group, c0, hw0, Cg, end, x_sb, x_sc,
                                                   x_shw, emb_sb, emb_sc, HAS_EMB, ACC, BLOCK_C, BLOCK_HW)
                weight, bias, one_plus_scale, shift = _modulation(
                    weight_ptr, bias_ptr, scale_ptr, shift_ptr, sample, channel, mask_c, scale_sb, scale_sc,
                    shift_sb, shift_sc, HAS_WEIGHT, HAS_BIAS, HAS_SCALE, HAS_SHIFT, ACC)
                u = ((z - mean) * rstd * weight + bias) * one_plus_scale + shift
                if SILU:
                    u = u * tl.sigmoid(u)
                y_offsets, _, _ = _tile_offsets(sample, group, c0, hw0, Cg, end, y_sb, y_sc, y_shw,
                                                BLOCK_C, BLOCK_HW)
                tl.store(y_ptr + y_offsets, u.to(y_ptr.dtype.element_ty), mask=mask)
    if split == 0:
        tl.store(mean_ptr + pair, mean)
        tl.store(rstd_ptr + pair, rstd)


# Backward modes (constexpr MODE of group_norm_backward_kernel). Compiled Triton reads only constexpr globals.
BACKWARD_SUMS = 0  # split plan, pass 1: per-split channel sums
BACKWARD_DX = 1  # split plan, pass 2: dx from the group coefficients
BACKWARD_SINGLE_TILE = 2  # one tile per group: sums, group coefficients and dx in one pass
BACKWARD_SUMS_CONST = tl.constexpr(BACKWARD_SUMS)
BACKWARD_DX_CONST = tl.constexpr(BACKWARD_DX)
BACKWARD_SINGLE_TILE_CONST = tl.constexpr(BACKWARD_SINGLE_TILE)


@triton.jit
def group_norm_backward_kernel(
    dy_ptr,  # [B, C, HW] upstream gradient, strided
    x_ptr, emb_ptr, weight_ptr, bias_ptr, scale_ptr, shift_ptr,  # the forward's inputs
    mean_ptr, rstd_ptr,  # ACC [B*G] from the forward
    dx_ptr,  # [B, C, HW] output (written unless MODE == BACKWARD_SUMS)
    group_coef_ptr,  # ACC [2, B*G]: mean_g(dL/dn) and mean_g(dL/dn · n) (read when MODE == BACKWARD_DX)
    part_ptr,  # ACC [3, S, B*C] per-split channel sums Σ g_u, Σ g_u·n, Σ n (written unless BACKWARD_DX)
    HW, Cg, G, C, num_pairs, hw_per_split, num_splits,
    dy_sb, dy_sc, dy_shw,
    x_sb, x_sc, x_shw,
    dx_sb, dx_sc, dx_shw,
    emb_sb, emb_sc, scale_sb, scale_sc, shift_sb, shift_sc,
    HAS_EMB: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, SILU: tl.constexpr,
    MODE: tl.constexpr,
    ACC: tl.constexpr,  # accumulation dtype: float32, or float64 for float64 inputs
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
):
    """With g_u = dL/du and n the normalized input:
        dL/dn = g_u·(1 + scale)·weight,  dx = rstd·(dL/dn − mean_g(dL/dn) − n·mean_g(dL/dn·n)).
    Parameter gradients come from the per-channel sums Σ g_u and Σ g_u·n (see _parameter_grads)."""
    pair = tl.program_id(0)
    split = tl.program_id(1)
    sample = pair // G
    group = pair % G
    mean = tl.load(mean_ptr + pair)
    rstd = tl.load(rstd_ptr + pair)
    start, end = _split_range(split, hw_per_split, HW)
    num_rows = num_pairs // G * C  # B*C, the row length of part_ptr
    for c0 in range(0, Cg, BLOCK_C):
        sum_gu = tl.zeros((BLOCK_C,), ACC)
        sum_gu_n = tl.zeros((BLOCK_C,), ACC)
        sum_n = tl.zeros((BLOCK_C,), ACC)
        for hw0 in range(start, end, BLOCK_HW):
            z, channel, mask, mask_c = _load_z(x_ptr, emb_ptr, sample, group, c0, hw0, Cg, end, x_sb, x_sc, x_shw,
                                               emb_sb, emb_sc, HAS_EMB, ACC, BLOCK_C, BLOCK_HW)
            weight, bias, one_plus_scale, shift = _modulation(
                weight_ptr, bias_ptr, scale_ptr, shift_ptr, sample, channel, mask_c, scale_sb, scale_sc,
                shift_sb, shift_sc, HAS_WEIGHT, HAS_BIAS, HAS_SCALE, HAS_SHIFT, ACC)
            n = tl.where(mask, (z - mean) * rstd, 0.0)
            u = (n * weight + bias) * one_plus_scale + shift
            dy_offsets, _, _ = _tile_offsets(sample, group, c0, hw0, Cg, end, dy_sb, dy_sc, dy_shw,
                                             BLOCK_C, BLOCK_HW)
            dy = tl.load(dy_ptr + dy_offsets, mask=mask, other=0.0).to(ACC)
            gu = _activation_grad(dy, u, SILU)
            dn = gu * one_plus_scale * weight
            if MODE != BACKWARD_SUMS_CONST:
                if MODE == BACKWARD_SINGLE_TILE_CONST:
                    count = Cg * 1.0 * HW
                    coef_mean = tl.sum(tl.sum(dn, 1), 0) / count
                    coef_n = tl.sum(tl.sum(dn * n, 1), 0) / count
                else:
                    coef_mean = tl.load(group_coef_ptr + pair)
                    coef_n = tl.load(group_coef_ptr + num_pairs + pair)
                dx = rstd * (dn - coef_mean - n * coef_n)
                dx_offsets, _, _ = _tile_offsets(sample, group, c0, hw0, Cg, end, dx_sb, dx_sc, dx_shw,
                                                 BLOCK_C, BLOCK_HW)
                tl.store(dx_ptr + dx_offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
            if MODE != BACKWARD_DX_CONST:
                sum_gu += tl.sum(gu, 0)
                sum_gu_n += tl.sum(gu * n, 0)
                sum_n += tl.sum(n, 0)
        if MODE != BACKWARD_DX_CONST:
            local_c = c0 + tl.arange(0, BLOCK_C)
            out = split * num_rows + sample * C + group * Cg + local_c
            out_mask = local_c < Cg
            plane = num_splits * num_rows
            tl.store(part_ptr + out, sum_gu, mask=out_mask)
            tl.store(part_ptr + plane + out, sum_gu_n, mask=out_mask)
            tl.store(part_ptr + 2 * plane + out, sum_n, mask=out_mask)


# ------------------------------------------------------------------------------------------------------------- host


@dataclass(frozen=True)
class LaunchPlan:
    """How one call is tiled. single_tile: one program per (sample, group), else num_splits programs per group."""

    block_c: int
    block_hw: int
    hw_per_split: int
    num_splits: int
    single_tile: bool
    num_warps: int


def _num_warps(elements: int, backward: bool, single_tile: bool) -> int:
    """Warps for a tile of `elements`, as measured with ptxas for sm_90 (tests/launch_resources.py: no tile of a real
    model may spill). Forward: 4 up to 1K elements, else 8. Backward, split passes: 8 from 512 elements on (at 4,
    8×64, 4×128 and 16×64 tiles spill 4 bytes). Backward, single tile: 16 from 512 to 2K elements (at 8, 4×256 and
    16×64 spill 8-12 bytes; at 4, 8×64 spills 4), 8 for 4K (16 spill there), 4 below 512."""
    if not backward:
        return 4 if elements <= 1024 else 8
    if not single_tile:
        return 8 if elements >= 512 else 4
    return 4 if elements < 512 else (16 if elements <= 2048 else 8)


def plan_launch(batch: int, channels: int, spatial: int, groups: int, channels_last: bool, *,
                max_single_tile: int = MAX_SINGLE_TILE, target_programs: int = TARGET_PROGRAMS,
                split_tile: Optional[int] = None, backward: bool = False) -> LaunchPlan:
    """Pick the plan for a [batch, channels, spatial] input (host-side, at call time); backward=True picks the
    warps of the backward kernels.

    The keyword arguments exist so tests can force the split plan with tiny tiles on small inputs.
    """
    per_group = channels // groups
    pairs = max(batch * groups, 1)
    padded_c = triton.next_power_of_2(per_group)
    padded_hw = triton.next_power_of_2(spatial)
    if padded_c * padded_hw <= max_single_tile and 4 * pairs >= target_programs:
        return LaunchPlan(padded_c, padded_hw, spatial, 1, True, _num_warps(padded_c * padded_hw, backward, True))
    if split_tile is None:
        wanted = triton.next_power_of_2(max(batch * channels * spatial // target_programs, 1))
        split_tile = min(max(wanted, MIN_SPLIT_TILE), MAX_SPLIT_TILE_BACKWARD if backward else MAX_SPLIT_TILE)
    # Channels-last tiles favour the channel axis (contiguous there); NCHW tiles the spatial one.
    block_c = min(padded_c, 64 if channels_last else 16, split_tile)
    block_hw = min(padded_hw, max(split_tile // block_c, 1))
    hw_tiles = triton.cdiv(spatial, block_hw)
    splits = min(hw_tiles, triton.cdiv(target_programs, pairs))
    hw_per_split = triton.cdiv(hw_tiles, splits) * block_hw
    return LaunchPlan(block_c, block_hw, hw_per_split, triton.cdiv(spatial, hw_per_split), False,
                      _num_warps(block_c * block_hw, backward, False))


def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """Statistics and gradients accumulate in float32, or in float64 for float64 inputs (gradcheck)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _triton_dtype(x: torch.Tensor):
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def default_plan(batch: int, channels: int, spatial: int, groups: int, channels_last: bool,
                 backward: bool = False) -> LaunchPlan:
    """plan_launch for the device that runs the kernel. The interpreter runs programs one after another, each as
    vectorised numpy, so there the fewest, largest programs are fastest: one per group whenever it fits."""
    if launch.TRITON_INTERPRETED:
        return plan_launch(batch, channels, spatial, groups, channels_last, max_single_tile=1 << 18,
                           target_programs=1, split_tile=1 << 14, backward=backward)
    if not backward:
        return plan_launch(batch, channels, spatial, groups, channels_last)
    wide = triton.next_power_of_2(channels // groups) > WIDE_GROUP
    return plan_launch(batch, channels, spatial, groups, channels_last, backward=True,
                       max_single_tile=MAX_SINGLE_TILE_BACKWARD_WIDE if wide else MAX_SINGLE_TILE_BACKWARD)


def _as_flat_bchw(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """A 4-D view (a dense copy only for views whose H and W cannot be walked with one stride) and its
    (batch, channel, position) strides."""
    x4 = launch.as_bchw(x)
    if not launch.spatial_is_flat(x4.shape[3], x4):
        x4 = x4.contiguous()
    hw_stride = x4.stride(3) if x4.shape[3] > 1 or x4.shape[2] == 1 else x4.stride(2)
    return x4, (x4.stride(0), x4.stride(1), hw_stride)


def _row_strides(row: Optional[torch.Tensor]) -> tuple[int, int]:
    return (row.stride(0), row.stride(1)) if row is not None else (0, 0)


def _flags(emb, weight, bias, scale, shift, silu) -> dict:
    return dict(HAS_EMB=emb is not None, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
                HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None, SILU=silu)


def _launch_forward(x, emb, weight, bias, scale, shift, num_groups, eps, silu, plan=None):
    x4, x_strides = _as_flat_bchw(x)
    batch, channels, height, width = x4.shape
    spatial = height * width
    if plan is None:
        plan = default_plan(batch, channels, spatial, num_groups, launch.is_channels_last(x4))
    y = launch.empty_like_layout(x4, x.dtype)
    _, y_strides = _as_flat_bchw(y)
    pairs = batch * num_groups
    mean = torch.empty(pairs, dtype=accumulation_dtype(x), device=x.device)
    rstd = torch.empty_like(mean)
    parts = [torch.empty((pairs, plan.num_splits), dtype=mean.dtype, device=x.device) for _ in range(3)]
    dummy = x4
    row_args = (*_row_strides(emb), *_row_strides(scale), *_row_strides(shift))
    per_group = channels // num_groups
    grid = (pairs, plan.num_splits)
    if not plan.single_tile:
        launch.wrap_triton(group_norm_stats_kernel)[grid](
            x4, emb if emb is not None else dummy, *parts, spatial, per_group, num_groups,
            plan.hw_per_split, plan.num_splits, *x_strides, *_row_strides(emb),
            HAS_EMB=emb is not None, ACC=_triton_dtype(x), BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw,
            num_warps=plan.num_warps)
    launch.wrap_triton(group_norm_forward_kernel)[grid](
        x4, *(t if t is not None else dummy for t in (emb, weight, bias, scale, shift)), y, mean, rstd, *parts,
        spatial, per_group, num_groups, plan.hw_per_split, plan.num_splits, eps, *x_strides, *y_strides, *row_args,
        **_flags(emb, weight, bias, scale, shift, silu), SINGLE_TILE=plan.single_tile, ACC=_triton_dtype(x),
        BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, BLOCK_S=triton.next_power_of_2(plan.num_splits),
        num_warps=plan.num_warps)
    return y.view(x.shape), mean.view(batch, num_groups), rstd.view(batch, num_groups)


def _launch_backward(dy, x, emb, weight, bias, scale, shift, mean, rstd, num_groups, silu, plan=None):
    x4, x_strides = _as_flat_bchw(x)
    dy4, dy_strides = _as_flat_bchw(dy)
    batch, channels, height, width = x4.shape
    spatial = height * width
    if plan is None:
        plan = default_plan(batch, channels, spatial, num_groups, launch.is_channels_last(x4), backward=True)
    dx = launch.empty_like_layout(x4, x.dtype)
    _, dx_strides = _as_flat_bchw(dx)
    pairs = batch * num_groups
    parts = torch.empty((3, plan.num_splits, batch * channels), dtype=accumulation_dtype(x), device=x.device)
    dummy = x4
    inputs = tuple(t if t is not None else dummy for t in (emb, weight, bias, scale, shift))
    mean, rstd = mean.reshape(-1), rstd.reshape(-1)

    def run_backward(mode, group_coefficients):
        launch.wrap_triton(group_norm_backward_kernel)[(pairs, plan.num_splits)](
            dy4, x4, *inputs, mean, rstd, dx, group_coefficients, parts,
            spatial, channels // num_groups, num_groups, channels, pairs, plan.hw_per_split, plan.num_splits,
            *dy_strides, *x_strides, *dx_strides,
            *_row_strides(emb), *_row_strides(scale), *_row_strides(shift),
            **_flags(emb, weight, bias, scale, shift, silu), MODE=mode, ACC=_triton_dtype(x),
            BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, num_warps=plan.num_warps)

    if plan.single_tile:
        run_backward(BACKWARD_SINGLE_TILE, mean)
        sums = parts[:, 0]
    else:
        run_backward(BACKWARD_SUMS, mean)
        sums = parts.sum(1)  # fixed-order reduction over splits: deterministic
    sums = sums.view(3, batch, channels)
    coefficients = _group_coefficients(sums, weight, scale, num_groups, spatial)
    if not plan.single_tile:
        run_backward(BACKWARD_DX, coefficients.reshape(2, pairs).contiguous())
    return (dx.view(x.shape),) + _input_grads(sums, coefficients, rstd.view(batch, num_groups), x, emb, weight,
                                              bias, scale, shift, num_groups, spatial)


def _modulation_rows(weight, scale, batch, channels, dtype, device):
    w = (weight.to(dtype).view(1, channels) if weight is not None
         else torch.ones(1, channels, dtype=dtype, device=device))
    one_plus_scale = (1.0 + scale.to(dtype) if scale is not None
                      else torch.ones(batch, channels, dtype=dtype, device=device))
    return w, one_plus_scale


def _group_coefficients(sums, weight, scale, num_groups, spatial):
    """[2, B, G]: mean over each group of dL/dn and of dL/dn·n, from the channel sums Σ g_u and Σ g_u·n."""
    _, batch, channels = sums.shape
    w, one_plus_scale = _modulation_rows(weight, scale, batch, channels, sums.dtype, sums.device)
    dn_rows = (w * one_plus_scale).unsqueeze(0) * sums[:2]  # Σ_hw dL/dn and Σ_hw dL/dn·n per channel
    count = (channels // num_groups) * spatial
    return dn_rows.view(2, batch, num_groups, -1).sum(-1) / count


def _input_grads(sums, coefficients, rstd, x, emb, weight, bias, scale, shift, num_groups, spatial):
    """(d emb, d weight, d bias, d scale, d shift) from the channel sums; empty tensors for absent inputs."""
    sum_gu, sum_gu_n, sum_n = sums
    batch, channels = sum_gu.shape
    w, one_plus_scale = _modulation_rows(weight, scale, batch, channels, sums.dtype, x.device)

    def absent():
        return torch.empty(0, dtype=x.dtype, device=x.device)

    d_emb = absent()
    if emb is not None:
        # Σ_hw dx = rstd·(Σ dL/dn − HW·mean_g(dL/dn) − Σ n · mean_g(dL/dn·n)), per channel.
        per_group = (w * one_plus_scale * sum_gu).view(batch, num_groups, -1)
        d_emb = rstd[..., None] * (per_group - spatial * coefficients[0][..., None]
                                   - sum_n.view(batch, num_groups, -1) * coefficients[1][..., None])
        d_emb = d_emb.view(batch, channels).to(emb.dtype)
    d_weight = (one_plus_scale * sum_gu_n).sum(0).to(weight.dtype) if weight is not None else absent()
    d_bias = (one_plus_scale * sum_gu).sum(0).to(bias.dtype) if bias is not None else absent()
    d_scale = absent()
    if scale is not None:
        b = bias.to(sums.dtype).view(1, channels) if bias is not None else 0.0
        d_scale = (w * sum_gu_n + b * sum_gu).to(scale.dtype)  # Σ g_u · (n·weight + bias)
    d_shift = sum_gu.to(shift.dtype) if shift is not None else absent()
    return d_emb, d_weight, d_bias, d_scale, d_shift


# ------------------------------------------------------------------------------------------------ torch reference


def _folded_modulation(weight, bias, scale, shift, batch, channels, dtype, device):
    """[B, C, 1, 1] (multiplier, offset) with (n·w + b)·(1 + s) + shift = n·multiplier + offset."""
    w, one_plus_scale = _modulation_rows(weight, scale, batch, channels, dtype, device)
    multiplier = w * one_plus_scale
    offset = bias.to(dtype).view(1, channels) * one_plus_scale if bias is not None else torch.zeros_like(multiplier)
    if shift is not None:
        offset = offset + shift.to(dtype)
    return (multiplier.expand(batch, channels)[:, :, None, None], offset.expand(batch, channels)[:, :, None, None])


def group_norm_act_reference(x, emb, weight, bias, scale, shift, num_groups, eps, silu):
    """The forward in plain torch (float32 math, float64 for float64 inputs): (y in x's dtype and layout, mean [B, G],
    rstd [B, G]). It is also the CPU path, so it costs what the plain GroupNorm → SiLU of diffusers' blocks costs:
    torch's own group norm applies weight and bias in its pass, SiLU runs in place (out of place where autograd
    records it: the U-Net's blocks train through this reference on a CPU), and only FiLM (scale, shift) adds
    one multiply-add per element.

    A channels-last z keeps its layout: torch's CPU group norm of a channels-last tensor takes its statistics in one
    pass (Σz, Σz²), which cancels at large means (at mean 1e4 and unit spread its float32 output was off by 4e3), so
    each group's mean is subtracted first, in the same pass that adds the time embedding (GroupNorm is unchanged by a
    per-group shift; the means come from a per-channel reduction, Σz / n, which does not cancel). At mean 1e4 this
    is as close to float64 as the NCHW path, and costs a third less than copying z to NCHW and back."""
    x4 = launch.as_bchw(x)
    batch, channels, height, width = x4.shape
    z = x4.to(accumulation_dtype(x))
    centre = None
    if launch.is_channels_last(z):
        centre, rows = _group_centre(z, emb, num_groups)
        z = z + rows[:, :, None, None]
    elif emb is not None:
        z = (z + emb.to(z.dtype)[:, :, None, None]).contiguous()
    else:
        z = z.contiguous()
    if scale is None and shift is None:
        u, mean, rstd = torch.native_group_norm(z, _as_dtype(weight, z.dtype), _as_dtype(bias, z.dtype), batch,
                                                channels, height * width, num_groups, eps)
    else:
        n, mean, rstd = torch.native_group_norm(z, None, None, batch, channels, height * width, num_groups, eps)
        multiplier, offset = _folded_modulation(weight, bias, scale, shift, batch, channels, z.dtype, z.device)
        u = torch.addcmul(offset, n, multiplier)
    if silu:  # u is this call's own tensor: in place unless autograd records through it (CPU training)
        u = torch.nn.functional.silu(u, inplace=not (torch.is_grad_enabled() and u.requires_grad))
    y = u.to(x.dtype).contiguous(memory_format=launch.memory_format_of(x4))
    mean = mean.view(batch, num_groups)
    return y.view(x.shape), mean if centre is None else mean + centre, rstd.view(batch, num_groups)


def _group_centre(z, emb, num_groups):
    """(each group's mean of z + emb [B, G], the per-channel rows [B, C] that add emb and subtract that mean)."""
    batch, channels = z.shape[:2]
    emb = emb.to(z.dtype) if emb is not None else None
    channel_means = z.mean(dim=(2, 3)) if emb is None else z.mean(dim=(2, 3)) + emb
    centre = channel_means.view(batch, num_groups, channels // num_groups).mean(-1)
    rows = -centre.repeat_interleave(channels // num_groups, dim=1)
    return centre, rows if emb is None else rows + emb


def _as_dtype(tensor: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return tensor.to(dtype) if tensor is not None else None


def _per_channel_rows(mean, rstd, num_groups, channels):
    """[B, C, 1, 1] views of rstd and −mean·rstd, so n = z·rstd + (−mean·rstd) is one multiply-add per element."""
    per_group = channels // num_groups
    rstd_c = rstd.repeat_interleave(per_group, 1)
    return rstd_c[:, :, None, None], (-mean.repeat_interleave(per_group, 1) * rstd_c)[:, :, None, None]


def group_norm_act_backward_reference(dy, x, emb, weight, bias, scale, shift, mean, rstd, num_groups, silu):
    """The backward in plain torch, same formulas as the kernel: (dx, d emb, d weight, d bias, d scale, d shift).

    The op's backward on a CPU; every full-size step is one fused torch op (addcmul, silu_backward). The U-Net's
    blocks call the forward reference directly there and let autograd differentiate it (models/blocks.py)."""
    x4 = launch.as_bchw(x)
    batch, channels, height, width = x4.shape
    z = x4.to(accumulation_dtype(x))
    if emb is not None:
        z = z + emb.to(z.dtype)[:, :, None, None]
    rstd_c, shift_c = _per_channel_rows(mean, rstd, num_groups, channels)
    n = torch.addcmul(shift_c, z, rstd_c)
    gu = launch.as_bchw(dy).to(z.dtype)
    multiplier, offset = _folded_modulation(weight, bias, scale, shift, batch, channels, z.dtype, z.device)
    if silu:
        gu = torch.ops.aten.silu_backward(gu, torch.addcmul(offset, n, multiplier))
    sums = torch.stack([gu.sum((2, 3)), (gu * n).sum((2, 3)), n.sum((2, 3))])
    coefficients = _group_coefficients(sums, weight, scale, num_groups, height * width)
    per_group = channels // num_groups
    coef_mean = coefficients[0].repeat_interleave(per_group, 1)[:, :, None, None]
    coef_n = coefficients[1].repeat_interleave(per_group, 1)[:, :, None, None]
    # dx = rstd·(g_u·w(1 + s) − mean_g(dL/dn) − n·mean_g(dL/dn·n)), as two multiply-adds.
    dx = torch.addcmul(-rstd_c * coef_mean, gu, rstd_c * multiplier)
    dx = torch.addcmul(dx, n, -rstd_c * coef_n).to(x.dtype)
    dx = dx.contiguous(memory_format=launch.memory_format_of(x4)).view(x.shape)
    return (dx,) + _input_grads(sums, coefficients, rstd, x, emb, weight, bias, scale, shift, num_groups,
                                height * width)


# ------------------------------------------------------------------------------------------------ checks and ops


def check_group_norm_inputs(x, num_groups, emb=None, weight=None, bias=None, scale=None, shift=None) -> None:
    """Metadata-only checks (no device sync, fine inside torch.compile): TypeError/ValueError naming the argument."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if x.dim() < 2 or x.dim() > 4:
        raise ValueError(f"x must be [B, C], [B, C, L] or [B, C, H, W], got shape {tuple(x.shape)}")
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"num_groups must be an int, got {type(num_groups).__name__}")
    if num_groups < 1:
        raise ValueError(f"num_groups must be positive, got {num_groups}")
    batch, channels = x.shape[:2]
    if channels % num_groups != 0:
        raise ValueError(f"the channel count {channels} of x is not divisible by num_groups={num_groups}")
    expected = {"emb": (batch, channels), "scale": (batch, channels), "shift": (batch, channels),
                "weight": (channels,), "bias": (channels,)}
    for name, tensor in (("emb", emb), ("weight", weight), ("bias", bias), ("scale", scale), ("shift", shift)):
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {getattr(tensor, 'dtype', type(tensor))}")
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{name} must have shape {list(expected[name])}, got {list(tensor.shape)}")
        if tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device}, but x is on {x.device}")
        if name in ("weight", "bias") and tensor.stride(0) != 1 and channels > 1:
            raise ValueError(f"{name} must be dense (stride 1), got stride {tensor.stride(0)}")


@triton_op("ddpm_fast::group_norm_act", mutates_args=())
def group_norm_act_op(
    x: torch.Tensor, emb: Optional[torch.Tensor], weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
    scale: Optional[torch.Tensor], shift: Optional[torch.Tensor], num_groups: int, eps: float, silu: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y = SiLU?((GroupNorm(x + emb)·weight + bias)·(1 + scale) + shift). Returns (y, mean [B, G], rstd [B, G])."""
    check_group_norm_inputs(x, num_groups, emb, weight, bias, scale, shift)
    if x.numel() == 0:
        batch = x.shape[0]
        mean = torch.zeros(batch, num_groups, dtype=accumulation_dtype(x), device=x.device)
        return torch.empty_like(x), mean, torch.full_like(mean, eps ** -0.5)
    if not launch.runs_triton(x):
        return group_norm_act_reference(x, emb, weight, bias, scale, shift, num_groups, eps, silu)
    return _launch_forward(x, emb, weight, bias, scale, shift, num_groups, eps, silu)


@triton_op("ddpm_fast::group_norm_act_backward", mutates_args=())
def group_norm_act_backward_op(
    dy: torch.Tensor, x: torch.Tensor, emb: Optional[torch.Tensor], weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor], scale: Optional[torch.Tensor], shift: Optional[torch.Tensor],
    mean: torch.Tensor, rstd: torch.Tensor, num_groups: int, silu: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, d emb, d weight, d bias, d scale, d shift); a 0-element tensor stands for an absent input's gradient."""
    check_group_norm_inputs(x, num_groups, emb, weight, bias, scale, shift)
    if dy.shape != x.shape or dy.device != x.device:
        raise ValueError(f"dy must match x ({tuple(x.shape)} on {x.device}), got {tuple(dy.shape)} on {dy.device}")
    stats_shape = (x.shape[0], num_groups)
    for name, stat in (("mean", mean), ("rstd", rstd)):  # the kernel indexes them by (sample, group)
        if (tuple(stat.shape) != stats_shape or stat.device != x.device or stat.dtype != accumulation_dtype(x)
                or not stat.is_contiguous()):
            raise ValueError(f"{name} must be a contiguous {accumulation_dtype(x)} tensor of shape "
                             f"{list(stats_shape)} on {x.device}, got {stat.dtype} {list(stat.shape)} on {stat.device}")
    if x.numel() == 0:
        def zeros(t):
            return torch.zeros_like(t) if t is not None else torch.empty(0, dtype=x.dtype, device=x.device)
        return (torch.zeros_like(x),) + tuple(zeros(t) for t in (emb, weight, bias, scale, shift))
    if not launch.runs_triton(x):
        return group_norm_act_backward_reference(dy, x, emb, weight, bias, scale, shift, mean, rstd, num_groups,
                                                 silu)
    return _launch_backward(dy, x, emb, weight, bias, scale, shift, mean, rstd, num_groups, silu)


def _setup_group_norm(ctx, inputs, output) -> None:
    x, emb, weight, bias, scale, shift, num_groups, _, silu = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, emb, weight, bias, scale, shift, mean, rstd)
    ctx.mark_non_differentiable(mean, rstd)
    ctx.num_groups, ctx.silu = num_groups, silu


def _backward_group_norm(ctx, dy, _dmean, _drstd):
    x, emb, weight, bias, scale, shift, mean, rstd = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(x)
    grads = torch.ops.ddpm_fast.group_norm_act_backward(dy, x, emb, weight, bias, scale, shift, mean, rstd,
                                                        ctx.num_groups, ctx.silu)
    present = (x, emb, weight, bias, scale, shift)
    return tuple(g if t is not None else None for g, t in zip(grads, present)) + (None, None, None)


group_norm_act_op.register_autograd(_backward_group_norm, setup_context=_setup_group_norm)


def group_norm_act(x: torch.Tensor, num_groups: int, weight: Optional[torch.Tensor] = None,
                   bias: Optional[torch.Tensor] = None, *, emb: Optional[torch.Tensor] = None,
                   scale: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
                   eps: float = 1e-5, silu: bool = True) -> torch.Tensor:
    """SiLU((GroupNorm(x + emb)·weight + bias)·(1 + scale) + shift), fused; differentiable in every tensor.

    x: [B, C, *spatial] (NCHW or channels-last, fp32/bf16/fp16); emb, scale, shift: [B, C]; weight, bias: [C].
    Each of emb, weight, bias, scale, shift may be None; silu=False returns the pre-activation.
    """
    check_group_norm_inputs(x, num_groups, emb, weight, bias, scale, shift)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a float, got {type(eps).__name__}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    return group_norm_act_op(x, emb, weight, bias, scale, shift, num_groups, float(eps), bool(silu))[0]
