"""ddpm_fast.UNet: the DDPM U-Net of Ho et al. 2020 (diffusers' UNet2DModel with resnet_time_scale_shift="default"),
with optional FiLM (scale-shift) time conditioning and class conditioning.

    model = UNet.from_preset("ddpm-cifar10")          # 35,746,307 parameters
    model = UNet.from_diffusers("path/to/ddpm-cifar10-32")
    eps = model(x_t, t)                               # x_t [B, C, H, W], t int or [B]
    model.save("checkpoints/unet"); UNet.load("checkpoints/unet")

Runs as fp32/NCHW or as bf16 channels-last (``model.to(torch.bfloat16, memory_format=torch.channels_last)``) and
under ``torch.compile(fullgraph=True)``. Every GroupNorm (with its SiLU, time-embedding add or FiLM) is one fused op.
"""

from __future__ import annotations

import os
import pathlib
from typing import Optional, Union

import torch
from torch import nn

from .. import files
from ..diffusion_setup import SETUP_NAME, DiffusionSetup
from .blocks import DownBlock, GroupNormAct, MidBlock, TimestepEmbedding, UpBlock, timestep_embedding
from .config import PRESETS, UNetConfig

CHECKPOINT_FORMAT = "ddpm_fast.UNet"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class UNet(nn.Module):
    def __init__(self, config: Optional[UNetConfig] = None, **overrides):
        super().__init__()
        if config is None:
            config = UNetConfig(**overrides)
        elif overrides:
            config = UNetConfig.from_dict({**config.to_dict(), **overrides})
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
        self.config = config
        widths = config.block_out_channels
        levels = len(widths)
        temb = config.time_embed_dim

        self.conv_in = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(widths[0], temb)
        self.class_embedding = nn.Embedding(config.num_class_embeds, temb) if config.num_class_embeds else None

        self.down_blocks = nn.ModuleList()
        out_channels = widths[0]
        for level in range(levels):
            in_channels, out_channels = out_channels, widths[level]
            self.down_blocks.append(DownBlock(in_channels, out_channels, temb, config.layers_per_block,
                                              config.down_attention[level], level < levels - 1, config))
        self.mid_block = MidBlock(widths[-1], temb, config) if config.mid_block else None

        reversed_widths = list(reversed(widths))
        out_channels = reversed_widths[0]
        self.up_blocks = nn.ModuleList()
        for i in range(levels):
            prev_output, out_channels = out_channels, reversed_widths[i]
            in_channels = reversed_widths[min(i + 1, levels - 1)]
            self.up_blocks.append(UpBlock(in_channels, out_channels, prev_output, temb, config.layers_per_block + 1,
                                          config.up_attention[i], i < levels - 1, config))
        self.conv_norm_out = GroupNormAct(config.norm_num_groups, widths[0], config.norm_eps)
        self.conv_out = nn.Conv2d(widths[0], config.out_channels, 3, padding=1)

    # ---------------------------------------------------------------------------------------------- forward

    def forward(self, sample: torch.Tensor, timestep: Union[torch.Tensor, int],
                class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ε (or whatever the model was trained to predict) for a batch sample [B, C, H, W] at timesteps [B]."""
        config = self.config
        if sample.dim() != 4 or sample.shape[1] != config.in_channels:
            raise ValueError(f"sample must be [B, {config.in_channels}, H, W], got {tuple(sample.shape)}")
        config.check_spatial(sample.shape[2], sample.shape[3])
        if config.center_input_sample:
            sample = 2 * sample - 1.0
        t = _batch_timesteps(timestep, sample)
        dtype = self.conv_in.weight.dtype
        emb = self.time_embedding(
            timestep_embedding(t, config.block_out_channels[0], config.flip_sin_to_cos, config.freq_shift).to(dtype))
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("class_labels is required: this UNet is class-conditional (num_class_embeds)")
            emb = emb + self.class_embedding(class_labels).to(dtype)
        elif class_labels is not None:
            raise ValueError("class_labels given, but this UNet has no class embedding (num_class_embeds=None)")

        x = self.conv_in(sample.to(dtype))
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, emb)
            skips.extend(block_skips)
        if self.mid_block is not None:
            x = self.mid_block(x, emb)
        for block in self.up_blocks:
            x = block(x, skips, emb)
        return self.conv_out(self.conv_norm_out(x))

    # --------------------------------------------------------------------------------------------- builders

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "UNet":
        """"ddpm-cifar10" (google/ddpm-cifar10-32), "ddpm-256" (the LSUN/CelebA-HQ 256² layout) or "tiny"."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(PRESETS[name](), **overrides)

    @classmethod
    def from_diffusers(cls, source, *, dtype: Optional[torch.dtype] = None) -> "UNet":
        """Our UNet with the weights of a diffusers UNet2DModel: a local folder (config.json +
        diffusion_pytorch_model.safetensors, or a .bin read with weights_only), a pipeline folder with a unet/
        subfolder, or a UNet2DModel instance. Outputs are identical to the diffusers model's."""
        from ..interop.diffusers_unet import load_diffusers_unet  # a thin delegate: the adapter sits above models

        config, state = load_diffusers_unet(source)
        model = cls(config)
        model.load_state_dict_checked(state, source)
        return model.to(dtype) if dtype is not None else model

    def load_state_dict_checked(self, state: dict[str, torch.Tensor], source) -> None:
        """load_state_dict with a ValueError naming the source and every missing, unexpected or misshapen key."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        misshapen = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or misshapen:
            def show(keys):
                return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
            problems = [f"{label}: {show(keys)}" for label, keys in
                        (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)) if keys]
            raise ValueError(f"{source}: weights do not fit the config — " + "; ".join(problems))
        with torch.no_grad():
            for name, tensor in own.items():
                tensor.copy_(state[name])

    # ---------------------------------------------------------------------------------------- checkpoints

    def save(self, directory: Union[str, os.PathLike], setup=None) -> pathlib.Path:
        """Write config.json and model.safetensors into `directory`, each atomically, and setup.json when `setup` (a
        ddpm_fast.DiffusionSetup: how this model diffuses) is given, which every loader then reads back
        (FastSampler.from_pretrained, export_onnx, the CLI). Returns the directory. TypeError for another setup
        type; ValueError when the setup's sample shape or class count does not fit this model."""
        if setup is not None:
            if not isinstance(setup, DiffusionSetup):
                raise TypeError(f"setup must be a ddpm_fast.DiffusionSetup or None, got {type(setup).__name__}")
            setup.check_fits(self.config, "setup")
        directory = pathlib.Path(directory)
        files.save_tensors(directory / WEIGHTS_NAME, self.state_dict(), metadata={"format": CHECKPOINT_FORMAT})
        files.atomic_write_json(directory / CONFIG_NAME, {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict()})
        if setup is not None:
            setup.save(directory)
        elif (directory / SETUP_NAME).exists():  # a stale record of another model must not be read with these weights
            (directory / SETUP_NAME).unlink()
        return directory

    @classmethod
    def load(cls, directory: Union[str, os.PathLike], *, map_location: Union[str, torch.device] = "cpu") -> "UNet":
        """A UNet saved by `save` (no pickle: JSON config + safetensors weights). FileNotFoundError for a missing
        folder or file; ValueError for a path that is not such a folder or holds a config of another kind."""
        directory = pathlib.Path(directory)
        if directory.is_file():
            raise ValueError(f"{directory} is a file; expected a UNet.save folder ({CONFIG_NAME} + {WEIGHTS_NAME})")
        meta = files.read_json(directory / CONFIG_NAME)
        if meta.get("format") != CHECKPOINT_FORMAT or "config" not in meta:
            raise ValueError(f"{directory / CONFIG_NAME}: not a {CHECKPOINT_FORMAT} checkpoint config")
        model = cls(UNetConfig.from_dict(meta["config"]))
        model.load_state_dict_checked(files.load_tensors(directory / WEIGHTS_NAME), directory / WEIGHTS_NAME)
        return model.to(map_location)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _may_sync() -> bool:
    """Whether a host sync is allowed here: not while torch traces, compiles or captures a CUDA graph."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def _batch_timesteps(timestep, sample: torch.Tensor) -> torch.Tensor:
    """t as a [B] tensor on the sample's device (an int or 0-d tensor is broadcast), without a host sync for the
    integer tensors every sampler passes.

    DDPM timesteps are integer steps: a non-integral one (5.5) is a ValueError naming `timestep`, never rounded away
    in silence. A Python float is checked at once; a float tensor in eager mode costs one host sync for the check,
    and is not checked while torch traces, compiles or captures a CUDA graph (where a sync is not allowed; the
    ONNX export and the samplers pass int64 tensors anyway)."""
    batch = sample.shape[0]
    if isinstance(timestep, bool) or not isinstance(timestep, (int, float, torch.Tensor)):
        raise TypeError(f"timestep must be an int or a tensor, got {type(timestep).__name__}")
    if isinstance(timestep, float) and not timestep.is_integer():
        raise ValueError(f"timestep must be an integer step, got {timestep}")
    if not isinstance(timestep, torch.Tensor):  # a Python number becomes an integer step, as in diffusers
        return torch.full((batch,), int(timestep), device=sample.device, dtype=torch.int64)
    if timestep.is_complex() or timestep.dtype == torch.bool:
        raise TypeError(f"timestep must be an integer tensor, got {timestep.dtype}")
    if timestep.is_floating_point() and _may_sync() and not bool((timestep == timestep.round()).all()):
        raise ValueError(f"timestep must hold integer steps, got a {timestep.dtype} tensor with non-integral values "
                         f"(e.g. {timestep[timestep != timestep.round()].flatten()[0].item()})")
    if timestep.dim() == 0:
        return timestep.to(sample.device).expand(batch)
    if timestep.dim() != 1 or timestep.shape[0] not in (1, batch):
        raise ValueError(f"timestep must be a scalar or a [{batch}] tensor, got shape {tuple(timestep.shape)}")
    return timestep.to(sample.device).expand(batch)
