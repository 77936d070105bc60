"""Building blocks of the DDPM U-Net. Module and parameter names follow diffusers' UNet2DModel, so its state dicts
load as they are (see interop/diffusers_unet.py). Every GroupNorm runs through the fused op (kernels/group_norm.py):
its Triton kernel on a GPU; on a CPU its torch reference, called directly (autograd differentiates it)."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import launch
from ..kernels.group_norm import group_norm_act_op, group_norm_act_reference


class GroupNormAct(nn.Module):
    """GroupNorm with optional time-embedding bias, FiLM modulation and SiLU, as one fused op.

    forward(x, emb=None, scale=None, shift=None) = SiLU?((GroupNorm(x + emb)·weight + bias)·(1 + scale) + shift).
    Parameters are named like nn.GroupNorm's (weight, bias), so its state dict keys carry over.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-6, silu: bool = True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels={num_channels} is not divisible by num_groups={num_groups}")
        self.num_groups, self.eps, self.silu = num_groups, float(eps), silu
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x, emb=None, scale=None, shift=None):
        op = group_norm_act_reference if self._plain_torch(x) else group_norm_act_op
        return op(x, emb, self.weight, self.bias, scale, shift, self.num_groups, self.eps, self.silu)[0]

    def _plain_torch(self, x) -> bool:
        """The torch reference called directly: while tracing for export, or wherever the op would run it anyway (no
        Triton launch), so the custom op's dispatch (~80 µs a call on a CPU, as much as the work of a batch-1 block)
        is skipped. With a gradient, autograd then differentiates torch's own group norm (its C++ backward): a CPU
        training step of the tiny U-Net took 8-13% less time than through the op's backward reference, which
        recomputes the normalised input in plain torch (benchmarks/test_training_step.py). The price is memory:
        autograd keeps the float32 z, n and u of each block (2-3x what the op saves for its backward). An image with
        no positions goes to the op, whose backward gives zero gradients where autograd's would be NaN."""
        if launch.references_inlined():
            return True
        if torch.compiler.is_compiling() or launch.runs_triton(x):  # compiled: the op, traced as it always was
            return False
        return x.numel() > 0

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.weight.numel()}, eps={self.eps}, silu={self.silu}"


def timestep_embedding(timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool, freq_shift: int,
                       max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] in float32, computed op for op as diffusers' get_timestep_embedding."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    frequencies = torch.exp(exponent / (half - freq_shift))
    angles = timesteps[:, None].float() * frequencies[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock(nn.Module):
    """GroupNorm → SiLU → conv → (+ time embedding, or FiLM) → GroupNorm → SiLU → dropout → conv, plus the skip."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float,
                 dropout: float, scale_shift: bool, output_scale_factor: float = 1.0):
        super().__init__()
        self.scale_shift = scale_shift
        self.output_scale_factor = output_scale_factor
        self.norm1 = GroupNormAct(groups, in_channels, eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, 2 * out_channels if scale_shift else out_channels)
        self.norm2 = GroupNormAct(groups, out_channels, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x, temb):
        h = self.conv1(self.norm1(x))
        projected = self.time_emb_proj(F.silu(temb))
        if self.scale_shift:
            scale, shift = projected.chunk(2, dim=1)
            h = self.norm2(h, scale=scale, shift=shift)
        else:
            h = self.norm2(h, emb=projected)
        h = self.conv2(self.dropout(h))
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        out = skip + h
        return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


class Attention(nn.Module):
    """Spatial self-attention over H·W positions: GroupNorm → q, k, v → scaled_dot_product_attention → proj, + x."""

    def __init__(self, channels: int, head_dim: Optional[int], groups: Optional[int], eps: float,
                 rescale_output_factor: float = 1.0):
        super().__init__()
        self.heads = channels // head_dim if head_dim else 1
        self.rescale_output_factor = rescale_output_factor
        self.group_norm = GroupNormAct(groups, channels, eps, silu=False) if groups else None
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x):
        batch, channels, height, width = x.shape
        h = self.group_norm(x) if self.group_norm is not None else x
        tokens = h.flatten(2).transpose(1, 2)  # [B, HW, C]: a view (no copy) for channels-last x

        def heads(t):
            return t.view(batch, -1, self.heads, channels // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.to_q(tokens)), heads(self.to_k(tokens)),
                                             heads(self.to_v(tokens)))
        out = self.to_out[1](self.to_out[0](out.transpose(1, 2).reshape(batch, -1, channels)))
        # [B, HW, C] → [B, C, H, W] is a channels-last view; keep the input's layout for the residual sum.
        out = out.transpose(1, 2).reshape(batch, channels, height, width)
        if not x.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous()
        out = out + x
        return out if self.rescale_output_factor == 1.0 else out / self.rescale_output_factor


class Downsample(nn.Module):
    """Stride-2 3×3 conv; padding=0 pads one row/column at the bottom/right first (the original DDPM)."""

    def __init__(self, channels: int, padding: int):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x):
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """layers_per_block residual blocks (each followed by attention when asked), then a downsample."""

    def __init__(self, in_channels, out_channels, temb_channels, num_layers, attention, add_downsample, config):
        super().__init__()
        groups, eps = config.norm_num_groups, config.norm_eps
        self.resnets = nn.ModuleList([
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, temb_channels, groups, eps,
                        config.dropout, config.resnet_time_scale_shift == "scale_shift")
            for i in range(num_layers)])
        self.attentions = nn.ModuleList([
            Attention(out_channels, config.attention_head_dim, config.norm_num_groups, eps)
            for _ in range(num_layers)]) if attention else None
        self.downsamplers = nn.ModuleList([Downsample(out_channels, config.downsample_padding)]) \
            if add_downsample else None

    def forward(self, x, temb):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """layers_per_block + 1 residual blocks, each on [x, skip] concatenated (+ attention), then an upsample."""

    def __init__(self, in_channels, out_channels, prev_output_channels, temb_channels, num_layers, attention,
                 add_upsample, config):
        super().__init__()
        groups, eps = config.norm_num_groups, config.norm_eps
        resnets = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in = prev_output_channels if i == 0 else out_channels
            resnets.append(ResnetBlock(resnet_in + skip_channels, out_channels, temb_channels, groups, eps,
                                       config.dropout, config.resnet_time_scale_shift == "scale_shift"))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList([
            Attention(out_channels, config.attention_head_dim, config.norm_num_groups, eps)
            for _ in range(num_layers)]) if attention else None
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if add_upsample else None

    def forward(self, x, skips, temb):
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    """resnet → attention → resnet at the lowest resolution."""

    def __init__(self, channels, temb_channels, config):
        super().__init__()
        groups, eps = config.norm_num_groups, config.norm_eps
        scale_shift = config.resnet_time_scale_shift == "scale_shift"
        factor = config.mid_block_scale_factor
        self.resnets = nn.ModuleList([
            ResnetBlock(channels, channels, temb_channels, groups, eps, config.dropout, scale_shift, factor)
            for _ in range(2)])
        self.attentions = nn.ModuleList([
            Attention(channels, config.attention_head_dim, config.mid_attention_norm_groups, eps, factor)
        ]) if config.mid_attention else None

    def forward(self, x, temb):
        x = self.resnets[0](x, temb)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x, temb)
