"""Counter-based Gaussian noise: Philox4x32-10 + Box-Muller, in Triton and as a bit-matching torch reference.

One normal value is a pure function of (seed, global sample index, step, stream, channel, spatial index). So the
noise of sample i is the same in a batch of 1 or 512, on any rank, in NCHW or channels-last, and on a GPU or in the
CPU reference (the Philox integers agree bit for bit; log/cos/sin may differ in the last float32 bits).

Philox counter words: c0 = hw // 4, c1 = sample index, c2 = step, c3 = channel | stream << 24; key = 64-bit seed.
One call yields four uint32, turned into four normals by two Box-Muller transforms; the 4 spatial positions of a
quad take one each, so no random bits are wasted.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op
from triton.language.extra import libdevice

from . import launch
from ..vocabulary import STREAM_Q_SAMPLE, STREAM_REVERSE_STEP
from .tile import element_offsets, sample_tile

# The same ids for use inside @triton.jit code: compiled Triton (unlike the interpreter) refuses non-constexpr globals.
STREAM_Q_SAMPLE_CONST = tl.constexpr(STREAM_Q_SAMPLE)
STREAM_REVERSE_STEP_CONST = tl.constexpr(STREAM_REVERSE_STEP)
# Compiled kernels take cos(2πu) as cospi(2u): exact range reduction, so no Payne-Hanek slow path for arguments the
# compiler cannot bound (its local-memory table cost a 40-byte stack frame and 4-16 bytes of spills per thread on
# sm_90), and an angle that is never rounded (2u is exact). The interpreter has no libdevice, so it keeps cos(2πu).
_PI_FUNCTIONS = tl.constexpr(not launch.TRITON_INTERPRETED)

# Philox4x32 constants (Salmon et al., 2011), identical to triton.language.random's.
_ROUND_A = 0xD2511F53
_ROUND_B = 0xCD9E8D57
_KEY_A = 0x9E3779B9
_KEY_B = 0xBB67AE85
_MASK32 = 0xFFFFFFFF
_ROUNDS = 10
_INV_2_23 = 1.0 / 2**23
_HALF_INV_2_23 = 0.5 / 2**23
_TWO_PI = 6.283185307179586


# ---------------------------------------------------------------------------------------------------------------
# Triton


@triton.jit
def _open_unit_interval(bits):
    # The top 23 bits k give (k + 0.5) / 2**23: exact in float32, never 0 (so log is finite) and never 1.
    return (bits >> 9).to(tl.float32) * 1.1920928955078125e-07 + 5.960464477539063e-08


@triton.jit
def _uint32_word(x):
    # Low 32 bits of an integer tensor, as the reference's `x & 0xFFFFFFFF`.
    return x.to(tl.int32).to(tl.uint32, bitcast=True)


@triton.jit
def philox_normal(
    seed,  # int64 scalar key
    quad,  # hw // 4 (int32 tensor)
    lane,  # hw % 4: which of the call's four normals this element takes
    sample,  # global sample index (scalar)
    step,  # step counter, e.g. the timestep (scalar)
    channel,  # channel index tensor
    STREAM: tl.constexpr,  # one of the STREAM_* ids
):
    """N(0, 1) for every element of a tile, from one Philox call per (channel, quad)."""
    zero = (quad + channel) * 0  # broadcast every counter word to the (channel, quad) shape
    c0 = _uint32_word(quad + zero)
    c1 = _uint32_word(zero + sample)
    c2 = _uint32_word(zero + step)
    c3 = _uint32_word((channel + zero) | (STREAM << 24))
    r0, r1, r2, r3 = tl.philox(seed, c0, c1, c2, c3)
    radius_a = tl.sqrt(-2.0 * tl.log(_open_unit_interval(r0)))
    radius_b = tl.sqrt(-2.0 * tl.log(_open_unit_interval(r2)))
    if _PI_FUNCTIONS:
        turns_a = 2.0 * _open_unit_interval(r1)  # the angle in half turns: 2πu = π·(2u)
        turns_b = 2.0 * _open_unit_interval(r3)
        z0 = radius_a * libdevice.cospi(turns_a)
        z1 = radius_a * libdevice.sinpi(turns_a)
        z2 = radius_b * libdevice.cospi(turns_b)
        z3 = radius_b * libdevice.sinpi(turns_b)
    else:
        angle_a = 6.283185307179586 * _open_unit_interval(r1)
        angle_b = 6.283185307179586 * _open_unit_interval(r3)
        z0 = radius_a * tl.cos(angle_a)
        z1 = radius_a * tl.sin(angle_a)
        z2 = radius_b * tl.cos(angle_b)
        z3 = radius_b * tl.sin(angle_b)
    return tl.where(lane == 0, z0, tl.where(lane == 1, z1, tl.where(lane == 2, z2, z3)))


@triton.jit
def philox_normal_kernel(
    out_ptr,  # float32 [B, C, H, W] output
    seed_ptr,  # int64 [1] seed
    step_ptr,  # int64 [B] step counter per sample
    step_stride,  # its stride (0 for one step shared by the batch)
    sample_offset,  # global index of sample 0 of this batch
    C,
    HW,
    W,
    stride_b,
    stride_c,
    stride_h,
    stride_w,  # output strides
    STREAM: tl.constexpr,
    SPATIAL_FLAT: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    sample, channel, quad, lane, hw, mask = sample_tile(tl.program_id(0), C, HW, BLOCK_C, BLOCK_Q, CHANNELS_LAST)
    seed = tl.load(seed_ptr)
    step = tl.load(step_ptr + sample * step_stride)
    z = philox_normal(seed, quad, lane, sample + sample_offset, step, channel, STREAM)
    offsets = element_offsets(sample, channel, hw, W, stride_b, stride_c, stride_h, stride_w, SPATIAL_FLAT)
    tl.store(out_ptr + offsets, z, mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# torch reference (bit-exact Philox on int64 tensors, so it runs on any device and under torch.compile)


def _mul_hi_lo(constant: int, word: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of constant * word for uint32 values held in int64.

    The product is below 2**64, so int64 multiplication (two's complement, wrapping modulo 2**64) holds all 64 of its
    bits; the arithmetic shift's sign bits are masked off. Four ops instead of ten: this is the CPU sampling path's
    noise, drawn every step (tests check it bit for bit against the kernel and a float64 statement)."""
    product = word * constant
    return (product >> 32) & _MASK32, product & _MASK32


def philox4x32_reference(
    seed: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 on int64 tensors holding uint32 words; `seed` is an int64 tensor (the 64-bit key)."""
    key0, key1 = seed & _MASK32, (seed >> 32) & _MASK32
    c0, c1, c2, c3 = torch.broadcast_tensors(c0 & _MASK32, c1 & _MASK32, c2 & _MASK32, c3 & _MASK32)
    for _ in range(_ROUNDS):
        hi_a, lo_a = _mul_hi_lo(_ROUND_A, c0)
        hi_b, lo_b = _mul_hi_lo(_ROUND_B, c2)
        c0, c1, c2, c3 = hi_b ^ c1 ^ key0, lo_b, hi_a ^ c3 ^ key1, lo_a
        key0 = (key0 + _KEY_A) & _MASK32
        key1 = (key1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def open_unit_interval_reference(bits: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (bits >> 9).to(dtype) * _INV_2_23 + _HALF_INV_2_23


def philox_normal_reference(
    seed: torch.Tensor,
    sample_index: torch.Tensor,
    step: torch.Tensor,
    stream: int,
    shape: tuple[int, int, int, int],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The noise the kernels draw, as a contiguous [B, C, H, W] tensor of `dtype` (float32, or float64 for tests).

    sample_index and step are int64 [B] tensors; the Box-Muller transform runs in `dtype`.
    """
    batch, channels, height, width = shape
    device = sample_index.device
    num_quads = triton.cdiv(height * width, 4)
    seed = seed.reshape(()).to(device=device, dtype=torch.int64)
    quad = torch.arange(num_quads, device=device, dtype=torch.int64).view(1, 1, -1)
    channel = torch.arange(channels, device=device, dtype=torch.int64).view(1, -1, 1) | (stream << 24)
    r0, r1, r2, r3 = philox4x32_reference(
        seed, quad, sample_index.view(-1, 1, 1), step.view(-1, 1, 1).to(torch.int64), channel
    )
    radius_a = torch.sqrt(-2.0 * torch.log(open_unit_interval_reference(r0, dtype)))
    angle_a = _TWO_PI * open_unit_interval_reference(r1, dtype)
    radius_b = torch.sqrt(-2.0 * torch.log(open_unit_interval_reference(r2, dtype)))
    angle_b = _TWO_PI * open_unit_interval_reference(r3, dtype)
    quads = torch.stack(
        [radius_a * torch.cos(angle_a), radius_a * torch.sin(angle_a), radius_b * torch.cos(angle_b),
         radius_b * torch.sin(angle_b)],
        dim=-1,
    )  # [B, C, Q, 4]: lane k of quad q is position 4q + k
    flat = quads.reshape(batch, channels, num_quads * 4)[:, :, : height * width]
    return flat.reshape(batch, channels, height, width)


# ---------------------------------------------------------------------------------------------------------------
# custom op


@triton_op("ddpm_fast::philox_normal", mutates_args=())
def philox_normal_op(
    seed: torch.Tensor, step: torch.Tensor, shape: list[int], sample_offset: int, stream: int, channels_last: bool
) -> torch.Tensor:
    """Unchecked: N(0, 1) noise of `shape` [B, C, H, W] for samples sample_offset.., step[b] each, on seed's device."""
    batch, channels, height, width = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(shape, dtype=torch.float32, device=seed.device, memory_format=fmt)
    launch.check_launch_bounds(out, step, {})
    launch.check_lookup_tensor("seed", seed, out, torch.int64)
    if out.numel() == 0:
        return out
    if not launch.runs_triton(out):
        sample_index = torch.arange(batch, device=seed.device) + sample_offset
        out.copy_(philox_normal_reference(seed, sample_index, step, stream, (batch, channels, height, width)))
        return out
    block_c, block_q, num_warps, programs = launch.tile_config(channels, height * width, channels_last)
    launch.wrap_triton(philox_normal_kernel)[(batch * programs,)](
        out, seed, step, step.stride(0), sample_offset, channels, height * width, width, *launch.bchw_strides(out),
        STREAM=stream, SPATIAL_FLAT=launch.spatial_is_flat(width, out), CHANNELS_LAST=channels_last,
        BLOCK_C=block_c, BLOCK_Q=block_q, num_warps=num_warps,
    )
    return out
