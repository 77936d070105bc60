"""Write a model as a pt2 package: the U-Net compiled ahead of time by AOTInductor, with its diffusion setup, so a
fresh process samples at compiled speed without compiling (ddpm_fast.models.pt2_package reads it back).

    export_pt2("runs/shapes", "shapes.pt2")                       # a run's EMA weights, for this CPU
    FastSampler.from_pretrained("shapes.pt2").sample(16, seed=0)  # in any later process: no compile

The model is traced by torch.export with the fused GroupNorm inlined as its torch reference (as for ONNX), then
compiled by inductor for one device and dtype with the batch dynamic and C, H, W fixed; the package is a zip archive
(PyTorch's .pt2) written atomically.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
import tempfile
from typing import Optional, Union

import torch
from torch import nn

from ddpm_fast import __version__
from ddpm_fast.diffusion_setup import DiffusionSetup, model_class_count
from ddpm_fast.interop.pretrained import artefact_source
from ddpm_fast.kernels import launch
from ddpm_fast.models.pt2_package import CLASS_LABELS, INPUT_NAMES, METADATA_KEY, PT2_FORMAT, PT2_VERSION
from ddpm_fast.models.unet import UNet
from ddpm_fast.sampling.distributed import resolve_device
from ddpm_fast.vocabulary import PT2_DTYPES

from .step_graphs import ModelGraph
from .tracing import quiet_torch_export

DTYPES = {getattr(torch, name): name for name in PT2_DTYPES}


def export_pt2(
    model: Union[nn.Module, str, os.PathLike],
    path: Union[str, os.PathLike],
    *,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    setup: Optional[DiffusionSetup] = None,
    weights: Optional[str] = None,
) -> pathlib.Path:
    """Compile `model` ahead of time and write it to `path` (a file name ending in .pt2; missing folders are made,
    an existing file is replaced whole); returns the path.

    model: a source ddpm_fast.interop.pretrained.load_pretrained reads (a training run or checkpoint folder — EMA
        weights unless weights="model" —, a UNet.save folder, a diffusers pipeline folder, a Hub id) that stores a
        diffusion setup, or our UNet (a diffusers UNet2DModel is converted) with `setup=`. The setup (β, prediction
        and variance type, clipping, spacing, class names, sample shape) travels in the package.
    device: where the package runs: "cpu" (code for this machine's CPU: its instruction sets, e.g. AVX-512 or AMX,
        are recorded, and a CPU without them refuses the package) or "cuda" / "cuda:N".
    dtype: the model's compute dtype, torch.float32, torch.bfloat16 or torch.float16 (the sampler casts x_t to it).

    The compiled model takes sample [B, C, H, W] (dtype; C, H, W those of the setup's sample_shape, any B >= 1),
    timestep [B] int64 and, for a class-conditional model, class_labels [B] int64. Compiling takes a while (about
    30 s for the tiny U-Net on a 2-core CPU). Raises ValueError / TypeError naming the argument before any work;
    a package compiled by one torch version loads only under that version (ddpm_fast.models.pt2_package).
    """
    path = pathlib.Path(path)
    if path.suffix.lower() != ".pt2":
        raise ValueError(f"path {path}: expected a file name ending in .pt2")
    if path.is_dir():
        raise ValueError(f"path {path} is a folder; expected the .pt2 file to write")
    if dtype not in DTYPES:
        raise TypeError(f"dtype must be one of torch.{', torch.'.join(PT2_DTYPES)}, got {dtype!r}")
    device = resolve_device(device)
    unet, setup = _model_and_setup(model, setup, weights)
    sample_shape = setup.sample_shape or unet.config.sample_shape
    class_count = model_class_count(unet)
    names = INPUT_NAMES + ((CLASS_LABELS,) if class_count is not None else ())
    unet = copy.deepcopy(unet).to(device=device, dtype=dtype, memory_format=torch.contiguous_format)
    graph = ModelGraph(unet.eval().requires_grad_(False)).eval()
    example = [torch.zeros(2, *sample_shape, dtype=dtype, device=device),
               torch.zeros(2, dtype=torch.int64, device=device)]
    if class_count is not None:
        example.append(torch.zeros(2, dtype=torch.int64, device=device))
    batch = torch.export.Dim("batch", min=1)
    metadata = {
        "format": PT2_FORMAT, "version": PT2_VERSION, "inputs": list(names), "sample_shape": list(sample_shape),
        "dtype": DTYPES[dtype], "device": device.type, "num_class_embeds": class_count, "torch": torch.__version__,
        "ddpm_fast": __version__, "unet_config": unet.config.to_dict(),
        "setup": dataclasses.replace(setup, sample_shape=tuple(sample_shape)).to_dict(),
    }
    # One trace with the fused GroupNorm inlined as its torch reference: inductor fuses it with its neighbours.
    with torch.no_grad(), launch.inline_references(), quiet_torch_export():
        program = torch.export.export(graph, tuple(example), dynamic_shapes=tuple({0: batch} for _ in example))
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written under its own name (the archive's inner folder is named after the file) in a folder beside the
        # target, then renamed over it: readers see the old package or the whole new one.
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as folder:
            from torch._inductor import aoti_compile_and_package  # heavy: only an export needs it

            temp = pathlib.Path(folder) / path.name
            aoti_compile_and_package(program, package_path=str(temp), inductor_configs={
                "aot_inductor.metadata": {METADATA_KEY: json.dumps(metadata)}})
            os.replace(temp, path)
    return path


def _model_and_setup(model, setup: Optional[DiffusionSetup], weights: Optional[str]) -> tuple[UNet, DiffusionSetup]:
    """Our UNet and the setup the package stores: a source's own (it must store one), or setup= for a model."""
    if isinstance(model, (str, os.PathLike)):
        if setup is not None:
            raise ValueError("setup= applies to a model object; a folder brings its own setup")
        return artefact_source(model, weights, "compile a pt2 package from")
    if weights is not None:
        raise ValueError("weights= applies to a training checkpoint folder; a model object holds one set of weights")
    if type(model).__name__ == "UNet2DModel" and hasattr(model, "config"):
        model = UNet.from_diffusers(model)
    if not isinstance(model, UNet):
        raise TypeError(f"model must be a ddpm_fast.UNet, a diffusers UNet2DModel or a model folder / Hub id, got "
                        f"{type(model).__name__}")
    if not isinstance(setup, DiffusionSetup):
        raise TypeError("setup must be the model's ddpm_fast.DiffusionSetup (it travels in the package), got "
                        f"{type(setup).__name__}")
    setup.check_fits(model.config, "setup=")
    return model, setup
