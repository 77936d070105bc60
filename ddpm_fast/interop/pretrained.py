"""One loader for every entry point: a model and its stored diffusion setup from any artefact that holds one.

    pretrained = load_pretrained("runs/shapes")                  # weights: the last good checkpoint's EMA
    setup = resolve_setup(pretrained, {"prediction_type": None, "schedule": None})
    FastSampler(pretrained.model, setup.schedule(), setup.sample_shape, **setup.sampler_options())

FastSampler.from_pretrained, export_onnx, `ddpm-fast sample` and `ddpm-fast export` all resolve their source here, so a
run exported to ONNX samples what the run samples. Accepted sources, tried in this order:

- a training checkpoint folder (state.json), or a training run folder (checkpoints/step-*/: its last good one);
  weights="ema" (the default: what DDPMs sample with) or "model" (the trained weights);
- a `UNet.save` folder (config.json of format ddpm_fast.UNet + model.safetensors; setup.json when saved with one);
- a diffusers DDPMPipeline folder (unet/ + scheduler/scheduler_config.json, whose keys are the setup);
- a diffusers UNet2DModel folder (config.json + weights; no setup stored);
- a Hugging Face Hub id ("google/ddpm-cifar10-32"), fetched by huggingface_hub into the user's cache (so
  HF_HUB_OFFLINE=1 and a cached copy work without the network), then read as a pipeline folder;
- a pt2 package file (name ending in .pt2, written by export_pt2): a model compiled ahead of time, with its setup; it
  holds compiled code, not weights, so it samples but is not exported again (require_weights).
"""

from __future__ import annotations

import os
import pathlib
import re
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from .. import files
from ..checks import ParameterError
from ..diffusion_setup import DEFAULTS, SAMPLER_OPTIONS, DiffusionSetup, defaults_note
from ..vocabulary import SOLVER_DEFAULTS
from ..models import checkpoints
from ..models.pt2_package import load_pt2
from ..models.unet import CHECKPOINT_FORMAT, CONFIG_NAME, UNet
from ..schedule import NoiseSchedule
from .diffusers_scheduler import setup_from_diffusers_config

WEIGHTS = ("ema", "model")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_FILES = ["*.json", "*.safetensors"]  # weights as safetensors only: nothing is unpickled from the Hub


@dataclass
class Pretrained:
    """A loaded model and what its source stores.

    model: our UNet (float32, CPU), or for a pt2 package its loaded PT2Model (on the package's device). setup: the
    stored DiffusionSetup, or None when the source stores none (a UNet.save folder without setup.json, a UNet2DModel
    folder). kind: "checkpoint", "unet", "diffusers_pipeline", "diffusers_unet", "pt2_package" (a run folder and a
    Hub id resolve to a checkpoint and a pipeline folder). path: the folder (or package file) read.
    weights: "ema" or "model" for a training checkpoint, else None. name: the source as given, for messages.
    """

    model: Any
    setup: Optional[DiffusionSetup]
    kind: str
    path: pathlib.Path
    weights: Optional[str]
    name: str


def load_pretrained(source: Union[str, os.PathLike], weights: Optional[str] = None) -> Pretrained:
    """The model and stored setup of `source` (see the module's docstring for what it may be).

    weights: "ema" / "model" for a training checkpoint (None: "ema"); a source with one set of weights refuses them.
    Raises FileNotFoundError (no such folder, no usable checkpoint, a Hub id that cannot be had), ValueError (a
    folder of no known kind, corrupt files, weights= for a one-weights folder), TypeError (source not a path or id).
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a folder path or a Hugging Face Hub id, got {type(source).__name__}")
    if weights is not None and weights not in WEIGHTS:
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    name = os.fspath(source)
    folder = pathlib.Path(source)
    if folder.suffix.lower() == ".pt2" and not folder.is_dir():
        if not folder.exists():  # a file name, never a Hub id
            raise FileNotFoundError(f"{name}: no such file")
        if weights is not None:
            given = weights
            raise ParameterError("weights", lambda flag: f"{flag(f'weights={given}')}: {name} is a pt2 package, one "
                                                         "compiled model; 'ema' and 'model' are a training "
                                                         "checkpoint's")
        model = load_pt2(folder)
        return Pretrained(model, model.setup, "pt2_package", folder, None, name)
    if folder.is_file():
        raise ValueError(f"{name} is a file; expected a training run, checkpoint, UNet.save or diffusers folder, or "
                         "a .pt2 package")
    if not folder.exists():
        if isinstance(source, str) and looks_like_hub_id(source):
            folder = _hub_snapshot(source)
        else:
            raise FileNotFoundError(f"{name}: no such folder")
    return _load_folder(folder, weights, name)


def looks_like_hub_id(text: str) -> bool:
    """Whether a string that names no local folder reads as a Hub model id ("name" or "owner/name")."""
    return bool(_HUB_ID.match(text)) and not text.startswith(".")


def require_weights(pretrained: Pretrained, purpose: str) -> None:
    """ValueError unless `pretrained` holds weights (a pt2 package holds compiled code): for an export or conversion,
    `purpose` saying what the weights were wanted for ("export ONNX from")."""
    if pretrained.kind == "pt2_package":
        raise ValueError(f"{pretrained.name} is a pt2 package: it holds compiled code, not weights to {purpose}; use "
                         "the run or model folder it was exported from")


def require_stored_setup(pretrained: Pretrained) -> None:
    """ValueError where `pretrained` stores no setup, for the writers of artefacts (a diffusers pipeline folder, a pt2
    package): the defaults written into one would no longer say they were guessed."""
    if pretrained.setup is None:
        raise ValueError(f"{pretrained.name} stores no diffusion setup; save it with UNet.save(folder, setup=...) "
                         "first (a training run stores its own), or pass the model with setup=")


def artefact_source(source: Union[str, os.PathLike], weights: Optional[str], purpose: str):
    """(model, stored setup) of the source an artefact is written from: it holds weights (require_weights, with
    `purpose`) and stores a setup (require_stored_setup); FileNotFoundError / ValueError as load_pretrained."""
    pretrained = load_pretrained(source, weights)
    require_weights(pretrained, purpose)
    require_stored_setup(pretrained)
    return pretrained.model, resolve_setup(pretrained, {})


def resolve_setup(pretrained: Pretrained, given: Mapping[str, Any], *, override: bool = False,
                  warn: bool = True, warn_level: int = 3) -> DiffusionSetup:
    """The setup to sample or export with: the stored one with the caller's `given` settings checked against it
    (SetupConflict naming both values on a difference, unless override=True), or, where nothing is stored, the given
    settings with DEFAULTS (and linear, T = 1000) for the rest — said in one UserWarning when warn=True."""
    if pretrained.setup is not None:
        return pretrained.setup.with_given(given, source=pretrained.name, override=override)
    used: dict[str, Any] = {}
    schedule = given.get("schedule")
    if schedule is None:
        schedule = NoiseSchedule.linear(1000)
        used["schedule"] = "linear, T=1000"
    options = {}
    for option in SAMPLER_OPTIONS:
        options[option] = given.get(option)
        if options[option] is None:
            options[option] = DEFAULTS[option]
            # None: no null class, which nothing but guidance asks for; the multistep solvers' options: diffusers'
            # defaults, which only those methods read
            if option != "null_class_label" and option not in SOLVER_DEFAULTS:
                used[option] = DEFAULTS[option]
    if used and warn:
        warnings.warn(defaults_note(pretrained.name, used), UserWarning, stacklevel=warn_level)
    return DiffusionSetup.from_schedule(schedule, sample_shape=pretrained.model.config.sample_shape,
                                        num_class_embeds=pretrained.model.config.num_class_embeds, **options)


def sampler_arguments_from_pretrained(path_or_id: Union[str, os.PathLike], weights: Optional[str],
                                      given: Mapping[str, Any], override_setup: bool,
                                      options: Mapping[str, Any]) -> dict[str, Any]:
    """FastSampler's keyword arguments for FastSampler.from_pretrained: the model and the stored setup read from
    `path_or_id`, the caller's `given` settings checked against it (resolve_setup), then `options` (FastSampler's
    other arguments; device defaults to "auto", sample_shape to the stored one)."""
    if not isinstance(override_setup, bool):
        raise TypeError(f"override_setup must be True or False, got {override_setup!r}")
    schedule = given.get("schedule")
    if schedule is not None and not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a ddpm_fast.NoiseSchedule, got {type(schedule).__name__}")
    pretrained = load_pretrained(path_or_id, weights)
    setup = resolve_setup(pretrained, given, override=override_setup, warn_level=4)
    options = dict(options)
    options.setdefault("device", "auto")
    if pretrained.kind == "pt2_package" and options["device"] in (None, "auto"):
        options["device"] = pretrained.model.device  # where its code was compiled for
    sample_shape = options.pop("sample_shape", None) or setup.sample_shape  # another H x W our UNet takes
    return {"model": pretrained.model, "schedule": setup.schedule(), "sample_shape": sample_shape,
            "class_names": setup.class_names, **setup.sampler_options(), **options}


# ---------------------------------------------------------------------------------------------------------------


def _load_folder(folder: pathlib.Path, weights: Optional[str], name: str) -> Pretrained:
    if checkpoints.is_training_checkpoint(folder):
        weights = weights or "ema"
        checkpoint = checkpoints.resolve_checkpoint(folder, parts=(f"{weights}.safetensors",))  # only what it uses
        model, setup = checkpoints.checkpoint_model(checkpoint, weights)
        return Pretrained(model, setup, "checkpoint", checkpoint.path, weights, name)
    one_set = f"weights={weights!r}: {name} holds one set of weights; 'ema' and 'model' are a training checkpoint's"
    config_file = folder / CONFIG_NAME
    config = files.read_json(config_file) if config_file.is_file() else None
    if config is not None and config.get("format") == CHECKPOINT_FORMAT:
        if weights is not None:
            raise ValueError(one_set)
        model = UNet.load(folder)
        setup = DiffusionSetup.load(folder) if (folder / "setup.json").is_file() else None
        if setup is not None:
            setup.check_fits(model.config, str(folder / "setup.json"))
        return Pretrained(model, setup, "unet", folder, None, name)
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    if scheduler_file.is_file():
        if weights is not None:
            raise ValueError(one_set)
        model = UNet.from_diffusers(folder)
        setup = setup_from_diffusers_config(files.read_json(scheduler_file),
                                                     sample_shape=model.config.sample_shape,
                                                     num_class_embeds=model.config.num_class_embeds)
        return Pretrained(model, setup, "diffusers_pipeline", folder, None, name)
    if config is not None:  # a diffusers UNet2DModel folder
        if weights is not None:
            raise ValueError(one_set)
        return Pretrained(UNet.from_diffusers(folder), None, "diffusers_unet", folder, None, name)
    raise ValueError(f"{name}: not a training run, training checkpoint, UNet.save, diffusers pipeline or UNet2DModel "
                     f"folder (it holds neither {folder / 'state.json'}, {folder / 'checkpoints'}/, {config_file} nor "
                     f"{scheduler_file})")



def _hub_snapshot(repo_id: str) -> pathlib.Path:
    """A local copy of a Hub model repo (the user's cache; HF_HUB_OFFLINE=1 reads the cache alone)."""
    try:
        import huggingface_hub
    except ImportError:
        raise FileNotFoundError(f"{repo_id}: no such folder (to read a Hugging Face Hub id, install "
                                "huggingface_hub)") from None
    try:
        return pathlib.Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as error:  # offline without a cached copy, no such repo, no network: all one message
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise FileNotFoundError(f"{repo_id}: no such folder, and no Hugging Face Hub model of that id could be had "
                                f"({type(error).__name__}: {first_line})") from None
