"""Device-side tile helpers shared by the elementwise kernels (see launch.py for the host side)."""

import triton
import triton.language as tl


@triton.jit
def sample_tile(
    pid,  # flat program id over (sample, channel block, quad block)
    C,  # channels per sample
    HW,  # spatial positions per sample
    BLOCK_C: tl.constexpr,  # channels per tile
    BLOCK_Q: tl.constexpr,  # quads (4 consecutive positions) per tile
    CHANNELS_LAST: tl.constexpr,  # arrange the tile [quad, lane, channel] so the fastest axis is memory-contiguous
):
    """Index tensors of one tile: (sample, channel, quad, lane, hw, mask), broadcastable to the tile's 3-D shape."""
    num_q_blocks = tl.cdiv(HW, 4 * BLOCK_Q)
    num_c_blocks = tl.cdiv(C, BLOCK_C)
    q_block = pid % num_q_blocks
    rest = pid // num_q_blocks
    c_block = rest % num_c_blocks
    sample = rest // num_c_blocks
    channels = c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    quads = q_block * BLOCK_Q + tl.arange(0, BLOCK_Q)
    lanes = tl.arange(0, 4)
    if CHANNELS_LAST:
        channel = channels[None, None, :]
        quad = quads[:, None, None]
        lane = lanes[None, :, None]
    else:
        channel = channels[:, None, None]
        quad = quads[None, :, None]
        lane = lanes[None, None, :]
    hw = quad * 4 + lane
    mask = (channel < C) & (hw < HW)
    return sample, channel, quad, lane, hw, mask


@triton.jit
def element_offsets(
    sample,  # scalar sample index within the batch
    channel,  # channel index tensor
    hw,  # spatial index tensor (h * W + w)
    W,  # width
    stride_b,
    stride_c,
    stride_h,
    stride_w,  # the tensor's strides, in elements
    SPATIAL_FLAT: tl.constexpr,  # stride_h == W * stride_w: skip the division by W
):
    """Element offsets of (sample, channel, hw) in a [B, C, H, W] tensor with the given strides, in int64.

    int64 throughout: a strided view (e.g. batch-innermost) can span more than 2**31 elements within one sample.
    """
    channel = channel.to(tl.int64)
    hw = hw.to(tl.int64)
    if SPATIAL_FLAT:
        spatial = hw * stride_w
    else:
        spatial = (hw // W) * stride_h + (hw % W) * stride_w
    return sample.to(tl.int64) * stride_b + channel * stride_c + spatial


@triton.jit
def clamped_timestep(t_ptr, t_stride, sample, num_timesteps):
    """The sample's timestep, clamped to [0, T) so an unchecked caller can never index outside the schedule.

    t_stride lets a broadcast timestep (stride 0, e.g. `t.expand(B)`) be read without a copy.
    """
    t = tl.load(t_ptr + sample * t_stride)
    return tl.minimum(tl.maximum(t, 0), num_timesteps - 1)
