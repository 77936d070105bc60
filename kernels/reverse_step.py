"""Fused reverse steps: the DDPM ancestral step (p_step) and the DDIM step, noise given or drawn in-kernel.

Both read x_t (float32) and the model output (float32/bf16/fp16, NCHW or channels-last), gather their per-sample
coefficients from the schedule (p_step: one float32 table [len(COEFFICIENT_ROWS), T]; DDIM: float64 ᾱ), and write
x_prev in float32. Timesteps are clamped in-kernel, so the unchecked ops are safe to call from a sync-free sampling
loop.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from . import launch
from ..vocabulary import COEFFICIENT_ROWS, PREDICTION_TYPES, ROW_INDEX, STREAM_REVERSE_STEP, VARIANCE_TYPES
from .tile import clamped_timestep, element_offsets, sample_tile
from .philox import STREAM_REVERSE_STEP_CONST, philox_normal, philox_normal_reference

_ROW = {name: tl.constexpr(i) for name, i in ROW_INDEX.items()}  # the same indices, as kernel constants
ROW_SQRT_RECIP_ALPHAS = _ROW["sqrt_recip_alphas"]
ROW_EPS_COEF = _ROW["eps_coef"]
ROW_SQRT_RECIP_AC = _ROW["sqrt_recip_alphas_cumprod"]
ROW_SQRT_RECIPM1_AC = _ROW["sqrt_recipm1_alphas_cumprod"]
ROW_SQRT_AC = _ROW["sqrt_alphas_cumprod"]
ROW_SQRT_1M_AC = _ROW["sqrt_one_minus_alphas_cumprod"]
ROW_MEAN_COEF1 = _ROW["posterior_mean_coef1"]
ROW_MEAN_COEF2 = _ROW["posterior_mean_coef2"]
ROW_POSTERIOR_STD = _ROW["posterior_std"]
ROW_SQRT_BETAS = _ROW["sqrt_betas"]
ROW_LOG_VAR_CLIPPED = _ROW["posterior_log_variance_clipped"]
ROW_LOG_BETAS = _ROW["log_betas"]

# What the model predicts.
EPSILON, SAMPLE = tl.constexpr(PREDICTION_TYPES["epsilon"]), tl.constexpr(PREDICTION_TYPES["sample"])  # else: v
_FIXED_LARGE, _LEARNED_RANGE = VARIANCE_TYPES["fixed_large"], VARIANCE_TYPES["learned_range"]
FIXED_LARGE, LEARNED_RANGE = tl.constexpr(_FIXED_LARGE), tl.constexpr(_LEARNED_RANGE)  # else: fixed_small
# Where z comes from.
_NO_NOISE, _GIVEN_NOISE, _PHILOX_NOISE = 0, 1, 2
NO_NOISE, GIVEN_NOISE, PHILOX_NOISE = tl.constexpr(_NO_NOISE), tl.constexpr(_GIVEN_NOISE), tl.constexpr(_PHILOX_NOISE)


@triton.jit
def _row(table_ptr, row: tl.constexpr, t, num_timesteps):
    return tl.load(table_ptr + row * num_timesteps + t)


@triton.jit
def draw_noise(noise_ptr, seed_ptr, sample, sample_offset, t, channel, quad, lane, hw, mask, W,
                nz_sb, nz_sc, nz_sh, nz_sw, NOISE: tl.constexpr, SPATIAL_FLAT: tl.constexpr):
    if NOISE == PHILOX_NOISE:
        z = philox_normal(tl.load(seed_ptr), quad, lane, sample + sample_offset, t, channel,
                          STREAM_REVERSE_STEP_CONST)
    else:
        offsets = element_offsets(sample, channel, hw, W, nz_sb, nz_sc, nz_sh, nz_sw, SPATIAL_FLAT)
        z = tl.load(noise_ptr + offsets, mask=mask).to(tl.float32)
    return z


@triton.jit
def guided_prediction(model_ptr, model_offsets, mask, uncond_offset, guidance_ptr, GUIDED: tl.constexpr):
    """The model's prediction at these elements; with GUIDED, classifier-free guidance's u + w·(c − u) of the
    conditional half (at model_ptr) and the unconditional half (uncond_offset elements further), in float32."""
    prediction = tl.load(model_ptr + model_offsets, mask=mask).to(tl.float32)
    if GUIDED:
        uncond = tl.load(model_ptr + uncond_offset + model_offsets, mask=mask).to(tl.float32)
        prediction = uncond + tl.load(guidance_ptr) * (prediction - uncond)
    return prediction


@triton.jit
def data_prediction(x, prediction, alpha_s, sigma_s, clip_range, PREDICTION: tl.constexpr, CLIP: tl.constexpr):
    """The data prediction x0 at (α_s, σ_s) of a model's prediction (ε, x0 or v) at x_t, clamped to ±clip_range with
    CLIP: what the multistep solvers' steps (DPM-Solver++, UniPC) work in."""
    if PREDICTION == EPSILON:
        x0 = (x - sigma_s * prediction) / alpha_s
    elif PREDICTION == SAMPLE:
        x0 = prediction
    else:
        x0 = alpha_s * x - sigma_s * prediction
    if CLIP:
        x0 = tl.minimum(tl.maximum(x0, -clip_range), clip_range)
    return x0


@triton.jit
def p_step_kernel(
    model_ptr,  # [B, C, H, W] model output (ε, x0 or v); GUIDED: the conditional half of a [2B] output
    model_var_ptr,  # [B, C, H, W] the variance half of a 2C-channel output (LEARNED_RANGE only; model strides)
    x_ptr,  # [B, C, H, W] x_t, float32
    noise_ptr,  # [B, C, H, W] z (GIVEN_NOISE only)
    out_ptr,  # [B, C, H, W] x_{t-1}, float32
    t_ptr,  # int64 [B]
    t_stride,  # its stride (0 for a broadcast timestep)
    table_ptr,  # float32 [rows, T] coefficient table
    seed_ptr,  # int64 [1] (PHILOX_NOISE only)
    sample_offset,  # global index of sample 0 (noise keys)
    num_timesteps,
    C,
    HW,
    W,
    clip_range,  # x0 is clamped to [-clip_range, clip_range] when CLIP
    guidance_ptr,  # float32 [1] guidance scale w (GUIDED only)
    uncond_offset,  # elements from the conditional to the unconditional half of the model output (GUIDED only)
    md_sb, md_sc, md_sh, md_sw,  # model output strides
    x_sb, x_sc, x_sh, x_sw,  # x_t strides
    nz_sb, nz_sc, nz_sh, nz_sw,  # noise strides
    out_sb, out_sc, out_sh, out_sw,  # output strides
    PREDICTION: tl.constexpr,
    VARIANCE: tl.constexpr,
    GUIDED: tl.constexpr,
    CLIP: tl.constexpr,
    NOISE: tl.constexpr,
    SPATIAL_FLAT: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    sample, channel, quad, lane, hw, mask = sample_tile(tl.program_id(0), C, HW, BLOCK_C, BLOCK_Q, CHANNELS_LAST)
    t = clamped_timestep(t_ptr, t_stride, sample, num_timesteps)
    x_offsets = element_offsets(sample, channel, hw, W, x_sb, x_sc, x_sh, x_sw, SPATIAL_FLAT)
    model_offsets = element_offsets(sample, channel, hw, W, md_sb, md_sc, md_sh, md_sw, SPATIAL_FLAT)
    x = tl.load(x_ptr + x_offsets, mask=mask).to(tl.float32)
    prediction = guided_prediction(model_ptr, model_offsets, mask, uncond_offset, guidance_ptr, GUIDED)

    if (PREDICTION == EPSILON) and (not CLIP):
        # The paper's form, (x_t - β/sqrt(1-ᾱ)·ε) / sqrt(α): what the seed computes, without an x0 round trip.
        mean = _row(table_ptr, ROW_SQRT_RECIP_ALPHAS, t, num_timesteps) * (
            x - _row(table_ptr, ROW_EPS_COEF, t, num_timesteps) * prediction)
    else:
        if PREDICTION == EPSILON:
            x0 = (_row(table_ptr, ROW_SQRT_RECIP_AC, t, num_timesteps) * x
                  - _row(table_ptr, ROW_SQRT_RECIPM1_AC, t, num_timesteps) * prediction)
        elif PREDICTION == SAMPLE:
            x0 = prediction
        else:
            x0 = (_row(table_ptr, ROW_SQRT_AC, t, num_timesteps) * x
                  - _row(table_ptr, ROW_SQRT_1M_AC, t, num_timesteps) * prediction)
        if CLIP:
            x0 = tl.minimum(tl.maximum(x0, -clip_range), clip_range)
        mean = (_row(table_ptr, ROW_MEAN_COEF1, t, num_timesteps) * x0
                + _row(table_ptr, ROW_MEAN_COEF2, t, num_timesteps) * x)

    if NOISE == NO_NOISE:
        x_prev = mean
    else:
        if VARIANCE == LEARNED_RANGE:
            # improved DDPM: the model's v in [-1, 1] interpolates log σ² between β̃_t and β_t (guided: the
            # conditional half's v, as DiT and diffusers take it).
            fraction = (tl.load(model_var_ptr + model_offsets, mask=mask).to(tl.float32) + 1.0) * 0.5
            log_variance = (fraction * _row(table_ptr, ROW_LOG_BETAS, t, num_timesteps)
                            + (1.0 - fraction) * _row(table_ptr, ROW_LOG_VAR_CLIPPED, t, num_timesteps))
            sigma = tl.exp(0.5 * log_variance)
        elif VARIANCE == FIXED_LARGE:
            sigma = _row(table_ptr, ROW_SQRT_BETAS, t, num_timesteps)
        else:
            sigma = _row(table_ptr, ROW_POSTERIOR_STD, t, num_timesteps)
        sigma = tl.where(t > 0, sigma, 0.0)  # no noise at t = 0, as a mask
        z = draw_noise(noise_ptr, seed_ptr, sample, sample_offset, t, channel, quad, lane, hw, mask, W,
                        nz_sb, nz_sc, nz_sh, nz_sw, NOISE, SPATIAL_FLAT)
        x_prev = mean + sigma * z
    out_offsets = element_offsets(sample, channel, hw, W, out_sb, out_sc, out_sh, out_sw, SPATIAL_FLAT)
    tl.store(out_ptr + out_offsets, x_prev, mask=mask)


@triton.jit
def ddim_step_kernel(
    model_ptr,  # [B, C, H, W] model output (ε, x0 or v); GUIDED: the conditional half of a [2B] output
    x_ptr,  # [B, C, H, W] x_t, float32
    noise_ptr,  # [B, C, H, W] z (GIVEN_NOISE only)
    out_ptr,  # [B, C, H, W] x_{t_prev}, float32
    t_ptr,  # int64 [B] current timestep
    t_stride,
    t_prev_ptr,  # int64 [B] target timestep; < 0 means the end of the chain (ᾱ = 1)
    t_prev_stride,
    alphas_cumprod_ptr,  # float64 [T] ᾱ: the per-sample scalars below cancel badly in float32
    seed_ptr,  # int64 [1] (PHILOX_NOISE only)
    sample_offset,
    num_timesteps,
    C,
    HW,
    W,
    eta,  # DDIM η: 0 is deterministic, 1 matches the DDPM posterior variance
    clip_range,
    guidance_ptr,  # float32 [1] guidance scale w (GUIDED only)
    uncond_offset,  # elements from the conditional to the unconditional half of the model output (GUIDED only)
    md_sb, md_sc, md_sh, md_sw,  # model output strides
    x_sb, x_sc, x_sh, x_sw,  # x_t strides
    nz_sb, nz_sc, nz_sh, nz_sw,  # noise strides
    out_sb, out_sc, out_sh, out_sw,  # output strides
    PREDICTION: tl.constexpr,
    GUIDED: tl.constexpr,
    CLIP: tl.constexpr,
    CLIPPED_EPS: tl.constexpr,  # with CLIP: ε re-derived from the clipped x0 (diffusers' use_clipped_model_output)
    NOISE: tl.constexpr,
    SPATIAL_FLAT: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    sample, channel, quad, lane, hw, mask = sample_tile(tl.program_id(0), C, HW, BLOCK_C, BLOCK_Q, CHANNELS_LAST)
    t = clamped_timestep(t_ptr, t_stride, sample, num_timesteps)
    t_prev_raw = tl.load(t_prev_ptr + sample * t_prev_stride)
    t_prev = tl.minimum(tl.maximum(t_prev_raw, 0), num_timesteps - 1)
    # Per-sample scalars in float64: at large t, 1-ᾱ_t and 1-ᾱ_prev are both ~1 and their difference (the
    # step's variance) would lose most of its digits in float32. One program computes them once.
    alpha_bar = tl.load(alphas_cumprod_ptr + t).to(tl.float64)
    alpha_bar_prev = tl.where(t_prev_raw < 0, 1.0, tl.load(alphas_cumprod_ptr + t_prev).to(tl.float64))
    one_minus_alpha_bar = 1.0 - alpha_bar
    one_minus_alpha_bar_prev = 1.0 - alpha_bar_prev
    variance = (one_minus_alpha_bar_prev / one_minus_alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev)
    sigma64 = eta * tl.sqrt(tl.maximum(variance, 0.0))
    sqrt_alpha_bar = tl.sqrt(alpha_bar).to(tl.float32)
    sqrt_one_minus_alpha_bar = tl.sqrt(one_minus_alpha_bar).to(tl.float32)
    sqrt_alpha_bar_prev = tl.sqrt(alpha_bar_prev).to(tl.float32)
    direction_64 = tl.sqrt(tl.maximum(one_minus_alpha_bar_prev - sigma64 * sigma64, 0.0))
    direction = direction_64.to(tl.float32)
    sigma = sigma64.to(tl.float32)

    x_offsets = element_offsets(sample, channel, hw, W, x_sb, x_sc, x_sh, x_sw, SPATIAL_FLAT)
    model_offsets = element_offsets(sample, channel, hw, W, md_sb, md_sc, md_sh, md_sw, SPATIAL_FLAT)
    x = tl.load(x_ptr + x_offsets, mask=mask).to(tl.float32)
    prediction = guided_prediction(model_ptr, model_offsets, mask, uncond_offset, guidance_ptr, GUIDED)
    if PREDICTION == EPSILON:
        eps = prediction
        x0 = (x - sqrt_one_minus_alpha_bar * eps) / sqrt_alpha_bar
    elif PREDICTION == SAMPLE:
        x0 = prediction
        eps = (x - sqrt_alpha_bar * x0) / sqrt_one_minus_alpha_bar
    else:
        x0 = sqrt_alpha_bar * x - sqrt_one_minus_alpha_bar * prediction
        eps = sqrt_alpha_bar * prediction + sqrt_one_minus_alpha_bar * x
    if CLIP:
        x0 = tl.minimum(tl.maximum(x0, -clip_range), clip_range)
    if CLIP and CLIPPED_EPS:
        # ε = (x - √ᾱ·x0) / √(1-ᾱ) from the clipped x0, folded into the update so that ε is never held: one fewer
        # live value per element (the guided variant spilled under triton 3.6's ptxas otherwise).
        x_coef = (direction_64 / tl.sqrt(one_minus_alpha_bar)).to(tl.float32)
        x0_coef = (tl.sqrt(alpha_bar_prev) - direction_64 * tl.sqrt(alpha_bar) / tl.sqrt(one_minus_alpha_bar))
        x_prev = x0_coef.to(tl.float32) * x0 + x_coef * x
    else:
        x_prev = sqrt_alpha_bar_prev * x0 + direction * eps
    if NOISE != NO_NOISE:
        z = draw_noise(noise_ptr, seed_ptr, sample, sample_offset, t, channel, quad, lane, hw, mask, W,
                        nz_sb, nz_sc, nz_sh, nz_sw, NOISE, SPATIAL_FLAT)
        x_prev = x_prev + sigma * z
    out_offsets = element_offsets(sample, channel, hw, W, out_sb, out_sc, out_sh, out_sw, SPATIAL_FLAT)
    tl.store(out_ptr + out_offsets, x_prev, mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# torch references (float32 math, the same formulas)


def _reference_noise(noise, seed, sample_offset, t, like):
    """z for the reference path: the given tensor, or the kernels' Philox noise for these samples and timesteps."""
    if noise is not None:
        return noise.float()
    sample_index = torch.arange(like.shape[0], device=like.device) + sample_offset
    shape4 = tuple(launch.as_bchw(like).shape)
    return philox_normal_reference(seed, sample_index, t, STREAM_REVERSE_STEP, shape4).view(like.shape)


def guided_output(model_output: torch.Tensor, channels: int, guidance_scale: Optional[torch.Tensor]) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022) in the model's own parameterisation: for a [2B, C(, +C), ...]
    output of the conditional batch then the unconditional one, u + w·(c − u) on the first C channels (float32),
    with a learned variance's channels taken from the conditional half. Without guidance_scale: the output as is."""
    if guidance_scale is None:
        return model_output
    batch = model_output.shape[0] // 2
    cond, uncond = model_output[:batch].float(), model_output[batch:].float()
    w = guidance_scale.float().reshape((1,) * model_output.dim())
    mean = uncond[:, :channels] + w * (cond[:, :channels] - uncond[:, :channels])
    return torch.cat([mean, cond[:, channels:]], dim=1) if model_output.shape[1] > channels else mean


def data_prediction_reference(output: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                              prediction: int, clip: bool = False, clip_range: float = 1.0) -> torch.Tensor:
    """data_prediction in torch: x0 (float32, x's shape) of `output` (the model's first C channels, any float dtype)
    at x (float32) and (α, σ) broadcast per sample. Never a view of `output`: x0 is an op's output, which may not
    alias its inputs."""
    if prediction == PREDICTION_TYPES["epsilon"]:
        x0 = (x - sigma * output.float()) / alpha
    elif prediction == PREDICTION_TYPES["sample"]:
        x0 = output.to(torch.float32, copy=not clip)  # one copy, unless the clamp below makes it
    else:
        x0 = alpha * x - sigma * output.float()
    return x0.clamp(-clip_range, clip_range) if clip else x0


def column_rows(table: torch.Tensor, column: torch.Tensor, row_index: dict, like: torch.Tensor):
    """row(name) -> the named row of each sample's column of a per-step table (float32 [rows, n]; column int64 [B],
    clamped into the table as the kernels clamp it), as [B, 1, ...] to broadcast against `like` ([B, C, ...])."""
    coefficients = table.index_select(1, column.clamp(0, table.shape[1] - 1))
    shape = (-1,) + (1,) * (like.dim() - 1)
    return lambda name: coefficients[row_index[name]].view(shape)


def solver_data_prediction(model_output: torch.Tensor, x_t: torch.Tensor, row, prediction: int, clip: bool = False,
                           clip_range: float = 1.0, guidance_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A multistep solver step's x0 (float32, x_t's shape) at each sample's α_s, σ_s (the rows "alpha_s" and
    "sigma_s" of `row`, column_rows'): guidance's halves combined first, a learned-variance half dropped."""
    channels = x_t.shape[1]
    output = guided_output(model_output, channels, guidance_scale)[:, :channels]
    return data_prediction_reference(output, x_t.float(), row("alpha_s"), row("sigma_s"), prediction, clip,
                                     clip_range)


def p_step_reference(model_output, t, x_t, table, noise, seed, sample_offset, prediction, variance, clip,
                     clip_range, guidance_scale=None):
    channels = x_t.shape[1]
    model_output = guided_output(model_output, channels, guidance_scale)
    t = t.clamp(0, table.shape[1] - 1)
    # Every row at each sample's t in one gather (this is also the CPU fallback, where each op costs µs).
    coefficients = table.index_select(1, t).view((table.shape[0], -1) + (1,) * (x_t.dim() - 1))

    def row(name: str) -> torch.Tensor:
        return coefficients[ROW_INDEX[name]]

    x = x_t.float()
    out = model_output[:, :channels].float()
    if prediction == PREDICTION_TYPES["epsilon"] and not clip:
        mean = torch.addcmul(x, row("eps_coef"), out, value=-1.0).mul_(row("sqrt_recip_alphas"))
    else:
        if prediction == PREDICTION_TYPES["epsilon"]:
            x0 = row("sqrt_recip_alphas_cumprod") * x - row("sqrt_recipm1_alphas_cumprod") * out
        elif prediction == PREDICTION_TYPES["sample"]:
            x0 = out
        else:
            x0 = row("sqrt_alphas_cumprod") * x - row("sqrt_one_minus_alphas_cumprod") * out
        if clip:
            x0 = x0.clamp(-clip_range, clip_range)
        mean = torch.addcmul(row("posterior_mean_coef2") * x, row("posterior_mean_coef1"), x0)
    if noise is None and seed is None:
        return mean
    if variance == _LEARNED_RANGE:
        fraction = (model_output[:, channels:].float() + 1.0) * 0.5
        log_variance = torch.lerp(row("posterior_log_variance_clipped"), row("log_betas"), fraction)
        sigma = torch.exp(0.5 * log_variance)
    else:
        sigma = row("sqrt_betas" if variance == _FIXED_LARGE else "posterior_std")
    sigma = sigma * (t > 0).view((-1,) + (1,) * (x_t.dim() - 1))  # no noise at t = 0
    return mean.addcmul_(sigma, _reference_noise(noise, seed, sample_offset, t, x_t))


def ddim_step_reference(model_output, t, t_prev, x_t, alphas_cumprod, noise, seed, sample_offset, prediction, eta,
                        clip, clip_range, guidance_scale=None, use_clipped_model_output=False):
    model_output = guided_output(model_output, x_t.shape[1], guidance_scale)
    n = x_t.dim()
    shape = (-1,) + (1,) * (n - 1)
    last = alphas_cumprod.numel() - 1
    t = t.clamp(0, last)
    # Per-sample scalars in float64, as in the kernel; elementwise math in float32.
    alpha_bar = alphas_cumprod.double()[t]
    alpha_bar_prev = torch.where(t_prev < 0, 1.0, alphas_cumprod.double()[t_prev.clamp(0, last)])
    variance = ((1 - alpha_bar_prev) / (1 - alpha_bar)) * (1 - alpha_bar / alpha_bar_prev)
    sigma64 = eta * variance.clamp(min=0.0).sqrt()
    direction = (1 - alpha_bar_prev - sigma64 * sigma64).clamp(min=0.0).sqrt().float().view(shape)
    sqrt_alpha_bar = alpha_bar.sqrt().float().view(shape)
    sqrt_one_minus_alpha_bar = (1 - alpha_bar).sqrt().float().view(shape)
    sigma = sigma64.float().view(shape)
    x = x_t.float()
    out = model_output[:, : x_t.shape[1]].float()
    if prediction == PREDICTION_TYPES["epsilon"]:
        eps = out
        x0 = (x - sqrt_one_minus_alpha_bar * eps) / sqrt_alpha_bar
    elif prediction == PREDICTION_TYPES["sample"]:
        x0 = out
        eps = (x - sqrt_alpha_bar * x0) / sqrt_one_minus_alpha_bar
    else:
        x0 = sqrt_alpha_bar * x - sqrt_one_minus_alpha_bar * out
        eps = sqrt_alpha_bar * out + sqrt_one_minus_alpha_bar * x
    if clip:
        x0 = x0.clamp(-clip_range, clip_range)
        if use_clipped_model_output:
            eps = (x - sqrt_alpha_bar * x0) / sqrt_one_minus_alpha_bar
    x_prev = alpha_bar_prev.sqrt().float().view(shape) * x0 + direction * eps
    if noise is None and seed is None:
        return x_prev
    return x_prev + sigma * _reference_noise(noise, seed, sample_offset, t, x_t)


# ---------------------------------------------------------------------------------------------------------------
# custom ops (unchecked: the public functions in ddpm_fast.diffusion validate; sampling loops call these directly)


def noise_mode(noise: Optional[torch.Tensor], seed: Optional[torch.Tensor]) -> int:
    if noise is not None:
        return _GIVEN_NOISE
    return _PHILOX_NOISE if seed is not None else _NO_NOISE


def _common_launch_args(model_output, x_t, noise, out, guided=False):
    """Grid, tile and stride arguments shared by both step kernels (all tensors already 4-D)."""
    batch, channels, height, width = x_t.shape
    channels_last = launch.is_channels_last(x_t)
    block_c, block_q, num_warps, programs = launch.tile_config(channels, height * width, channels_last,
                                                                heavy=guided)
    noise = noise if noise is not None else x_t
    strides = (*launch.bchw_strides(model_output), *launch.bchw_strides(x_t), *launch.bchw_strides(noise),
               *launch.bchw_strides(out))
    meta = dict(SPATIAL_FLAT=launch.spatial_is_flat(width, model_output, x_t, noise, out),
                CHANNELS_LAST=channels_last, BLOCK_C=block_c, BLOCK_Q=block_q, num_warps=num_warps)
    return (batch * programs,), noise, strides, meta


def guidance_parts(model_output: torch.Tensor, x_t: torch.Tensor, guidance_scale: Optional[torch.Tensor]):
    """(the output the kernel indexes per sample, elements to its unconditional half, the guidance pointer): a
    guided [2B] output is checked (metadata only) and split; an unguided one passes as it is."""
    if guidance_scale is None:
        return model_output, 0, x_t
    batch = x_t.shape[0]
    if model_output.dim() < 1 or model_output.shape[0] != 2 * batch:
        raise ValueError(f"with guidance_scale the model output holds the conditional then the unconditional batch: "
                         f"[{2 * batch}, ...], got {tuple(model_output.shape)}")
    if guidance_scale.device != x_t.device or guidance_scale.dtype != torch.float32 or guidance_scale.numel() != 1:
        raise ValueError(f"guidance_scale must be a float32 tensor of one element on {x_t.device}, got "
                         f"{guidance_scale.dtype} {tuple(guidance_scale.shape)} on {guidance_scale.device}")
    return model_output[:batch], batch * model_output.stride(0), guidance_scale


@triton_op("ddpm_fast::p_step", mutates_args=())
def p_step_op(
    model_output: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor, table: torch.Tensor,
    noise: Optional[torch.Tensor], seed: Optional[torch.Tensor], sample_offset: int, prediction: int,
    variance: int, clip: bool, clip_range: float, guidance_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Unchecked DDPM step x_t -> x_{t-1} (float32). No noise when both `noise` and `seed` are None.

    guidance_scale (float32 [1], on the device so one captured graph serves every w): classifier-free guidance fused
    in — model_output is then [2B, ...], the conditional batch followed by the unconditional one.
    """
    channels = x_t.shape[1]
    learned = variance == _LEARNED_RANGE
    cond_output, uncond_offset, guidance = guidance_parts(model_output, x_t, guidance_scale)
    launch.check_launch_bounds(x_t, t, {"model_output": 2 * channels if learned else channels},
                                model_output=cond_output, noise=noise)
    launch.check_lookup_tensor("table", table, x_t, torch.float32, rows=len(COEFFICIENT_ROWS))
    if seed is not None:
        launch.check_lookup_tensor("seed", seed, x_t, torch.int64)
    if x_t.numel() == 0 or not launch.runs_triton(x_t):
        return p_step_reference(model_output, t, x_t, table, noise, seed, sample_offset, prediction, variance,
                                clip, clip_range, guidance_scale).to(memory_format=launch.memory_format_of(x_t))
    x4, model4 = launch.as_bchw(x_t), launch.as_bchw(cond_output)
    mean_part = model4[:, :channels]
    variance_part = model4[:, channels:] if learned else mean_part
    out = launch.empty_like_layout(x4, torch.float32)
    noise4 = launch.as_bchw(noise) if noise is not None else None
    grid, noise4, strides, meta = _common_launch_args(mean_part, x4, noise4, out, guidance_scale is not None)
    launch.wrap_triton(p_step_kernel)[grid](
        mean_part, variance_part, x4, noise4, out, t, t.stride(0), table, seed if seed is not None else t, sample_offset,
        table.shape[1], channels, x4.shape[2] * x4.shape[3], x4.shape[3], clip_range, guidance, uncond_offset,
        *strides, PREDICTION=prediction, VARIANCE=variance, GUIDED=guidance_scale is not None, CLIP=clip,
        NOISE=noise_mode(noise, seed), **meta,
    )
    return out.view(x_t.shape)


@triton_op("ddpm_fast::ddim_step", mutates_args=())
def ddim_step_op(
    model_output: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, x_t: torch.Tensor,
    alphas_cumprod: torch.Tensor, noise: Optional[torch.Tensor], seed: Optional[torch.Tensor], sample_offset: int,
    prediction: int, eta: float, clip: bool, clip_range: float, guidance_scale: Optional[torch.Tensor] = None,
    use_clipped_model_output: bool = False,
) -> torch.Tensor:
    """Unchecked DDIM step x_t -> x_{t_prev} (float32); t_prev < 0 ends the chain. No noise when eta == 0.

    alphas_cumprod is the float64 [T] ᾱ (NoiseSchedule.buffers(device)["alphas_cumprod_float64"]). guidance_scale:
    as p_step's (model_output [2B, ...]: conditional, then unconditional). use_clipped_model_output: with clip, ε is
    re-derived from the clipped x0 (diffusers' DDIMScheduler option of that name; lucidrains' ddim_sample).
    """
    if eta == 0.0:
        noise, seed = None, None
    cond_output, uncond_offset, guidance = guidance_parts(model_output, x_t, guidance_scale)
    launch.check_launch_bounds(x_t, t, {}, model_output=cond_output, noise=noise)
    launch.check_launch_bounds(x_t, t_prev, {})
    launch.check_lookup_tensor("alphas_cumprod", alphas_cumprod, x_t, torch.float64)
    if seed is not None:
        launch.check_lookup_tensor("seed", seed, x_t, torch.int64)
    if x_t.numel() == 0 or not launch.runs_triton(x_t):
        return ddim_step_reference(model_output, t, t_prev, x_t, alphas_cumprod, noise, seed, sample_offset,
                                   prediction, eta, clip, clip_range, guidance_scale,
                                   use_clipped_model_output).to(memory_format=launch.memory_format_of(x_t))
    x4 = launch.as_bchw(x_t)
    model4 = launch.as_bchw(cond_output)[:, : x4.shape[1]]  # a learned-variance half, if any, is unused
    out = launch.empty_like_layout(x4, torch.float32)
    noise4 = launch.as_bchw(noise) if noise is not None else None
    grid, noise4, strides, meta = _common_launch_args(model4, x4, noise4, out, guidance_scale is not None)
    launch.wrap_triton(ddim_step_kernel)[grid](
        model4, x4, noise4, out, t, t.stride(0), t_prev, t_prev.stride(0), alphas_cumprod,
        seed if seed is not None else t, sample_offset, alphas_cumprod.numel(), x4.shape[1], x4.shape[2] * x4.shape[3],
        x4.shape[3], eta, clip_range, guidance, uncond_offset, *strides, PREDICTION=prediction,
        GUIDED=guidance_scale is not None, CLIP=clip, CLIPPED_EPS=clip and use_clipped_model_output,
        NOISE=noise_mode(noise, seed), **meta,
    )
    return out.view(x_t.shape)
