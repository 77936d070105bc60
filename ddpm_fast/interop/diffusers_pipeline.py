"""A diffusers DDPMPipeline — an instance or a local folder — as the arguments of a FastSampler, and the other way:
a model with its setup written as a DDPMPipeline folder (save_diffusers_pipeline).

The U-Net becomes our UNet (same weights, fused kernels); the scheduler's config gives the schedule and the step's
options, so FastSampler.from_diffusers(pipe) samples what pipe() samples.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Any, Optional, Union

import torch

from .. import files
from ..models.unet import UNet
from ..diffusion_setup import DiffusionSetup
from .diffusers_scheduler import CONFIG_NAME, setup_from_diffusers_config
from ..models.config import config_to_diffusers
from ..sampling.sampler import FastSampler
from .diffusers_unet import SAFETENSORS_NAME
from .pretrained import artefact_source


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

    setup = setup_from_diffusers_config(scheduler_config, sample_shape=model.config.sample_shape,
                                                 num_class_embeds=model.config.num_class_embeds)
    return {"model": model, "schedule": setup.schedule(), "sample_shape": setup.sample_shape, "device": device,
            **setup.sampler_options()}


def save_diffusers_pipeline(source: Any, folder: Union[str, os.PathLike], *, setup: Optional[DiffusionSetup] = None,
                            weights: Optional[str] = None) -> pathlib.Path:
    """Write a diffusers DDPMPipeline folder that `diffusers.DDPMPipeline.from_pretrained(folder)` and every ddpm_fast
    loader read back to the same model and setup; returns the folder.

        folder/model_index.json                       DDPMPipeline: unet UNet2DModel, scheduler DDPMScheduler
        folder/unet/config.json, diffusion_pytorch_model.safetensors     float32 weights
        folder/scheduler/scheduler_config.json        the setup as DDPMScheduler keys, β as trained_betas

    source: a FastSampler that samples in float32 (its model and `setup`), our UNet with `setup=` given, or anything
    load_pretrained reads (a training run folder — EMA weights unless weights="model" —, a checkpoint folder, a
    UNet.save folder with its setup, a pipeline folder or a Hub id; a source that stores no setup is refused). The
    folder is written under a temporary name and renamed: a crash leaves no half pipeline. An existing pipeline folder is replaced; any other non-empty folder is
    refused (ValueError), as are a sampler in bf16/fp16 (its weights were rounded: save from its source instead) and a
    model without its setup (TypeError/ValueError naming the argument).
    """
    if isinstance(source, FastSampler):
        if setup is not None or weights is not None:
            raise ValueError("setup= and weights= apply to a model or a folder; a FastSampler brings its own")
        if source.dtype != torch.float32 or not isinstance(source.model, UNet):
            raise ValueError("source: this FastSampler holds its model in "
                             f"{source.dtype} (or not as our UNet); save from the model or folder it was built from")
        model, setup = source.model, source.setup
    elif isinstance(source, UNet):
        if weights is not None:
            raise ValueError("weights= applies to a training checkpoint; a UNet holds one set of weights")
        if not isinstance(setup, DiffusionSetup):
            raise TypeError(f"setup must be the model's ddpm_fast.DiffusionSetup, got {type(setup).__name__}")
        model = source
    elif isinstance(source, (str, os.PathLike)):
        if setup is not None:
            raise ValueError("setup= applies to a UNet; a folder brings its own (or the defaults, said in a warning)")
        model, setup = artefact_source(source, weights, "write a diffusers pipeline from")
    else:
        raise TypeError(f"source must be a FastSampler, a UNet or a model folder / Hub id, got {type(source).__name__}")
    return _write_pipeline(model, setup, pathlib.Path(folder))


def _write_pipeline(model: UNet, setup: DiffusionSetup, folder: pathlib.Path) -> pathlib.Path:
    if folder.is_file():
        raise ValueError(f"folder {folder} is a file; expected the pipeline folder to write")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "model_index.json").is_file():
        raise ValueError(f"folder {folder} is not empty and not a pipeline folder; refusing to replace it")
    version = _diffusers_version()
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        (temp / "unet").mkdir()
        (temp / "scheduler").mkdir()
        state = {name: tensor.detach().to("cpu", torch.float32).contiguous()
                 for name, tensor in model.state_dict().items()}
        files.save_tensors(temp / "unet" / SAFETENSORS_NAME, state, metadata={"format": "pt"})
        files.atomic_write_json(temp / "unet" / "config.json", {"_class_name": "UNet2DModel", "_diffusers_version":
                                                               version, **config_to_diffusers(model.config)})
        files.atomic_write_json(temp / "scheduler" / CONFIG_NAME,
                                {**setup.to_diffusers_config(), "_diffusers_version": version})
        files.atomic_write_json(temp / "model_index.json", {
            "_class_name": "DDPMPipeline", "_diffusers_version": version,
            "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]})
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(folder, old)
            os.rename(temp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temp, folder)
        files.fsync_directory(folder.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return folder


def _diffusers_version() -> str:
    """The installed diffusers' version (written as diffusers writes it), or the oldest we test with."""
    from importlib import metadata

    try:
        return metadata.version("diffusers")
    except metadata.PackageNotFoundError:
        return "0.30.0"
