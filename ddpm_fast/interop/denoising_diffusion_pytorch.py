"""Models trained with lucidrains' denoising-diffusion-pytorch, sampled by FastSampler.

    diffusion = GaussianDiffusion(Unet(dim=64), image_size=32, timesteps=1000, objective="pred_v")
    sampler = FastSampler.from_denoising_diffusion_pytorch(diffusion, checkpoint="results/model-10.pt")
    images = unnormalize(sampler.sample(16, generator=torch.Generator().manual_seed(0), **sample_arguments(diffusion)),
                         diffusion)          # = torch.manual_seed(0); diffusion.sample(16)  (seed= for per-sample noise)

Everything is read from the GaussianDiffusion object itself — its β buffer, objective, image size, channels, its
sampling_timesteps / ddim_sampling_eta and its auto_normalize choice — never from the library's defaults. Its
samplers always clip x0 to [-1, 1]: p_sample_loop is our ancestral DDPM with clip_sample=True and the fixed-small
variance; ddim_sample is our DDIM on its own timesteps (ddim_timesteps) with ε re-derived from the clipped x0
(use_clipped_model_output=True). With generator= the noise is drawn as its loops draw it (x_T, then one draw per step
but the last), so a CPU generator seeded as torch.manual_seed gives its images (fp32).

The library is not a dependency: nothing here imports it. Its checkpoints (Trainer.save's model-N.pt) are read with
torch.load(weights_only=True).
"""

from __future__ import annotations

import copy
import os
import sys
import types
from typing import Any, Union

import torch
from torch import nn

from ..schedule import NoiseSchedule

# Its objectives in diffusers' (and our) prediction-type words.
PREDICTION_TYPES = {"pred_noise": "epsilon", "pred_x0": "sample", "pred_v": "v_prediction"}
_MODULE = "denoising_diffusion_pytorch.denoising_diffusion_pytorch"
# The names of its [-1, 1] <-> [0, 1] maps (GaussianDiffusion(auto_normalize=True)) and of the identity (False).
_NORMALIZERS = {"unnormalize_to_zero_to_one": True, "identity": False}


def check_gaussian_diffusion(diffusion: Any) -> None:
    """TypeError / ValueError naming what FastSampler cannot reproduce: any class but its GaussianDiffusion (the
    learned-variance, continuous-time, elucidated, weighted-objective and 1-D variants sample differently), a Unet
    with self-conditioning (each step feeds the last x0 back to the model), an unknown objective."""
    kind = type(diffusion)
    if kind.__name__ != "GaussianDiffusion" or kind.__module__ != _MODULE:
        raise TypeError(f"expected denoising_diffusion_pytorch's GaussianDiffusion, got {kind.__module__}."
                        f"{kind.__qualname__}: its subclasses and other diffusion classes sample differently and are "
                        "not supported")
    if not isinstance(diffusion.model, nn.Module):
        raise TypeError(f"the GaussianDiffusion's model must be an nn.Module, got {type(diffusion.model).__name__}")
    if diffusion.self_condition:
        raise ValueError("self-conditioning (Unet(self_condition=True)) is not supported: each of its steps feeds the "
                         "previous x0 estimate back into the model, which FastSampler's fused step does not do")
    if diffusion.objective not in PREDICTION_TYPES:
        raise ValueError(f"objective {diffusion.objective!r} is not supported; expected one of "
                         f"{', '.join(PREDICTION_TYPES)}")
    _normalizes(diffusion)


class UnetInModelDtype(nn.Module):
    """Its Unet as FastSampler calls it, in the dtype FastSampler gives the weights: the Unet computes its sinusoidal
    time embedding in float32 whatever its weights' dtype, so in bf16 / fp16 it runs under autocast to that dtype
    (in float32, as it is). `unet` is the wrapped module."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return self.unet(x, t)
        with torch.autocast(x.device.type, dtype=x.dtype):
            return self.unet(x, t)


def sampler_arguments_with(diffusion: Any, checkpoint: Union[str, os.PathLike, None], weights: str,
                           options: dict[str, Any]) -> dict[str, Any]:
    """FastSampler's keyword arguments for FastSampler.from_denoising_diffusion_pytorch: sampler_arguments of the
    GaussianDiffusion (its weights first read from `checkpoint` when given), then `options`; an option that
    contradicts the GaussianDiffusion (schedule, prediction_type, clipping, ...) or model= is refused."""
    if "model" in options:
        raise TypeError("model comes from the GaussianDiffusion; do not pass model=")
    if checkpoint is not None:
        diffusion = load_checkpoint(diffusion, checkpoint, weights)
    arguments = sampler_arguments(diffusion)
    for name in sorted(options.keys() & arguments.keys()):
        given, read = options[name], arguments[name]
        if isinstance(given, NoiseSchedule):
            same = given.num_timesteps == read.num_timesteps and torch.equal(given.betas, read.betas)
        else:
            same = (tuple(given) if isinstance(given, list) else given) == read  # sample_shape as a list
        if not same:
            raise ValueError(f"{name}={given!r} contradicts the GaussianDiffusion, which samples with "
                             f"{name}={read!r}")
    return {**arguments, **options}


def sampler_arguments(diffusion: Any) -> dict[str, Any]:
    """FastSampler's arguments for a GaussianDiffusion: its Unet (in UnetInModelDtype), its β (the float32 buffer
    it samples with, as a float64 schedule; a β of 1, which its linear schedule reaches at T = 20, is a ValueError),
    (channels, *image_size), the objective as prediction_type, clip_sample=True (both of its samplers clip x0 to
    [-1, 1]) and the fixed-small posterior variance (its posterior_log_variance_clipped)."""
    check_gaussian_diffusion(diffusion)
    betas = diffusion.betas.detach().double().cpu()
    if not bool(((betas > 0) & (betas < 1)).all()):  # its linear schedule scales β by 1000 / T: 1.0 at T = 20
        raise ValueError(f"the GaussianDiffusion's β reach {betas.max().item():g} (T = {betas.numel()}); a step "
                         "with β = 1 destroys all signal, and FastSampler's schedule needs every β in (0, 1): use "
                         "more timesteps or another beta_schedule")
    height, width = diffusion.image_size
    return {
        "model": UnetInModelDtype(diffusion.model),
        "schedule": NoiseSchedule.from_betas(betas, name="denoising_diffusion_pytorch"),
        "sample_shape": (int(diffusion.channels), int(height), int(width)),
        "prediction_type": PREDICTION_TYPES[diffusion.objective],
        "variance_type": "fixed_small",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,  # its ddim_sample ends on the clipped x0 estimate
    }


def ddim_timesteps(num_timesteps: int, sampling_timesteps: int) -> list[int]:
    """The timesteps its ddim_sample visits, in sampling order: int(linspace(-1, T - 1, S + 1)) reversed, without
    the final -1 (computed as it computes them, in float32, so a rounding there is a rounding here)."""
    for name, value in (("num_timesteps", num_timesteps), ("sampling_timesteps", sampling_timesteps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if sampling_timesteps > num_timesteps:
        raise ValueError(f"sampling_timesteps ({sampling_timesteps}) must not exceed num_timesteps ({num_timesteps})")
    times = torch.linspace(-1, num_timesteps - 1, steps=sampling_timesteps + 1).int().tolist()
    return list(reversed(times))[:-1]


def sample_arguments(diffusion: Any) -> dict[str, Any]:
    """FastSampler.sample's keyword arguments for the loop diffusion.sample() runs: {} (ancestral DDPM over every
    timestep: p_sample_loop) when its sampling_timesteps equals its timesteps, else DDIM on ddim_sample's timesteps
    with its ddim_sampling_eta and ε re-derived from the clipped x0."""
    check_gaussian_diffusion(diffusion)
    if not diffusion.is_ddim_sampling:
        return {}
    return {"method": "ddim", "timesteps": ddim_timesteps(int(diffusion.num_timesteps),
                                                          int(diffusion.sampling_timesteps)),
            "eta": float(diffusion.ddim_sampling_eta), "use_clipped_model_output": True}


def unnormalize(images: torch.Tensor, diffusion: Any) -> torch.Tensor:
    """FastSampler's images as its sample() returns them: (x + 1) / 2 for auto_normalize=True, else unchanged."""
    check_gaussian_diffusion(diffusion)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    return (images + 1) * 0.5 if _normalizes(diffusion) else images


def load_checkpoint(diffusion: Any, path: Union[str, os.PathLike], weights: str = "ema") -> Any:
    """A copy of `diffusion` with the weights of one of its Trainer's checkpoints (results/model-N.pt): "ema" (the
    EMA model's, what its Trainer samples with) or "model". Read with torch.load(weights_only=True). A checkpoint
    whose β differ from the diffusion's, or a file of another layout, is a ValueError; a missing file a
    FileNotFoundError."""
    check_gaussian_diffusion(diffusion)
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"checkpoint {path!r} is a folder; expected one of its Trainer's model-N.pt files")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 — weights_only refuses anything but tensors and plain containers
        raise ValueError(f"checkpoint {path!r} could not be read as tensors ({type(error).__name__}: {error})") \
            from error
    state = data.get(weights) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path!r} holds no {weights!r} weights (a denoising_diffusion_pytorch Trainer "
                         "checkpoint has 'model' and 'ema')")
    if weights == "ema":  # its EMA wrapper keeps the averaged copy of the whole GaussianDiffusion as ema_model
        state = {key[len("ema_model."):]: value for key, value in state.items() if key.startswith("ema_model.")}
    stored = state.get("betas")
    if not isinstance(stored, torch.Tensor) or stored.shape != diffusion.betas.shape or not torch.equal(
            stored.to(diffusion.betas), diffusion.betas):
        raise ValueError(f"checkpoint {path!r} was trained with other β than the given GaussianDiffusion's "
                         f"({diffusion.num_timesteps} steps): build it with the checkpoint's schedule")
    loaded = copy.deepcopy(diffusion)
    try:
        loaded.load_state_dict(state)
    except RuntimeError as error:  # missing / unexpected keys, other shapes: weights of another Unet
        raise ValueError(f"checkpoint {path!r} does not fit the given GaussianDiffusion (another Unet?): "
                         f"{str(error)[:300]}") from error
    return loaded


def import_library(stand_in_torchvision: bool = False) -> types.ModuleType:
    """Import denoising_diffusion_pytorch. stand_in_torchvision: where the real torchvision cannot load (PyPI's
    torchvision wheels need their own torch build; beside a CPU torch they fail with "operator torchvision::nms
    does not exist"), empty stand-in modules for torchvision, torchvision.transforms, torchvision.utils and
    torchvision.models sit in sys.modules while it imports, and are taken out again after (so that other libraries,
    diffusers among them, still see no torchvision). Its GaussianDiffusion and Unet never call them; its Trainer and
    Dataset do, and fail."""
    if not stand_in_torchvision or "denoising_diffusion_pytorch" in sys.modules:
        import denoising_diffusion_pytorch

        return denoising_diffusion_pytorch
    try:
        import torchvision  # noqa: F401

        stand_ins = []
    except Exception:  # noqa: BLE001 — ImportError, or the RuntimeError of a mismatched torch build
        stand_ins = ["torchvision", "torchvision.transforms", "torchvision.utils", "torchvision.models"]
    for name in stand_ins:
        sys.modules[name] = types.ModuleType(name)
    for name in stand_ins[1:]:
        setattr(sys.modules["torchvision"], name.split(".")[1], sys.modules[name])
    try:
        import denoising_diffusion_pytorch
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
    return denoising_diffusion_pytorch


def _normalizes(diffusion: Any) -> bool:
    name = getattr(diffusion.unnormalize, "__name__", None)
    if name not in _NORMALIZERS:
        raise ValueError(f"the GaussianDiffusion's unnormalize ({name!r}) is neither its [-1, 1] -> [0, 1] map nor "
                         "the identity; set auto_normalize=True or False")
    return _NORMALIZERS[name]
