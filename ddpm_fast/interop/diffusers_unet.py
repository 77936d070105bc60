"""Read a diffusers UNet2DModel (a local folder or an instance) as (UNetConfig, state dict in our key names).

Our module names follow diffusers', so the only renames are the attention weights of old checkpoints (the google/ddpm-*
releases store query/key/value/proj_attn, today's diffusers to_q/to_k/to_v/to_out.0). A .bin file is read with
torch.load(weights_only=True): tensors only, never arbitrary pickled objects.
"""

from __future__ import annotations

import os
import pathlib

import torch

from .. import files
from ..models.config import UNetConfig, config_from_diffusers

SAFETENSORS_NAME = "diffusion_pytorch_model.safetensors"
BIN_NAME = "diffusion_pytorch_model.bin"
_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def load_diffusers_unet(source) -> tuple[UNetConfig, dict[str, torch.Tensor]]:
    if isinstance(source, (str, os.PathLike)):
        return _load_folder(pathlib.Path(source))
    if hasattr(source, "config") and hasattr(source, "state_dict"):  # a diffusers UNet2DModel instance
        return config_from_diffusers(dict(source.config)), rename_keys(source.state_dict())
    raise TypeError(f"expected a folder path or a diffusers UNet2DModel, got {type(source).__name__}")


def _load_folder(folder: pathlib.Path) -> tuple[UNetConfig, dict[str, torch.Tensor]]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not (folder / "config.json").exists() and (folder / "unet" / "config.json").exists():
        folder = folder / "unet"  # a DDPMPipeline folder
    config = config_from_diffusers(files.read_json(folder / "config.json"))
    if (folder / SAFETENSORS_NAME).exists():
        state = files.load_tensors(folder / SAFETENSORS_NAME)
    elif (folder / BIN_NAME).exists():
        try:
            state = torch.load(folder / BIN_NAME, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated file, or pickled objects weights_only refuses
            raise ValueError(f"{folder / BIN_NAME}: not a readable tensors-only checkpoint ({error})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{folder / BIN_NAME}: expected a dict of tensors")
    else:
        raise FileNotFoundError(f"{folder}: neither {SAFETENSORS_NAME} nor {BIN_NAME} found")
    return config, rename_keys(state)


def rename_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers key names → ours (identical except the attention weights of old checkpoints)."""
    renamed = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if len(parts) >= 2 and parts[-2] in _OLD_ATTENTION_NAMES and ".attentions." in f".{key}":
            parts[-2] = _OLD_ATTENTION_NAMES[parts[-2]]
            key = ".".join(parts)
        renamed[key] = tensor
    return renamed
