"""A diffusers DDPMPipeline — an instance or a local folder — as the arguments of a FastSampler.

The U-Net becomes our UNet (same weights, fused kernels); the scheduler's config gives the schedule and the step's
options, so FastSampler.from_diffusers(pipe) samples what pipe() samples.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import torch

from .. import files
from ..models.unet import UNet
from ..schedule import NoiseSchedule
from .diffusers_scheduler import CONFIG_NAME, DEFAULT_CONFIG, check_scheduler_config


def sampler_arguments_from_diffusers(source: Any) -> dict[str, Any]:
    """model, schedule, sample_shape, device and the step options of a DDPMPipeline (or its folder)."""
    if isinstance(source, (str, os.PathLike)):
        folder = pathlib.Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such pipeline folder")
        scheduler_file = folder / "scheduler" / CONFIG_NAME
        if not scheduler_file.exists():
            raise FileNotFoundError(f"{scheduler_file}: a DDPMPipeline folder holds unet/ and scheduler/")
        model = UNet.from_diffusers(folder)
        scheduler_config = files.read_json(scheduler_file)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif hasattr(source, "unet") and hasattr(source, "scheduler"):
        unet = source.unet
        model = UNet.from_diffusers(unet)
        scheduler_config = dict(source.scheduler.config)
        device = getattr(unet, "device", torch.device("cpu"))
    else:
        raise TypeError(f"expected a diffusers DDPMPipeline or a local pipeline folder, got {type(source).__name__}")

    config = {**DEFAULT_CONFIG, **{k: v for k, v in scheduler_config.items() if k in DEFAULT_CONFIG}}
    check_scheduler_config(config)
    size = model.config.sample_size
    return {
        "model": model,
        "schedule": NoiseSchedule.from_diffusers(config),
        "sample_shape": (model.config.in_channels, size, size),
        "device": device,
        "prediction_type": config["prediction_type"],
        "variance_type": config["variance_type"],
        "clip_sample": bool(config["clip_sample"]),
        "clip_sample_range": float(config["clip_sample_range"]),
        "timestep_spacing": config["timestep_spacing"],
        "steps_offset": int(config["steps_offset"]),
        # A DDIMScheduler's key (a DDPMScheduler has none): where its DDIM chain ends.
        "set_alpha_to_one": scheduler_config.get("set_alpha_to_one", True),
    }
