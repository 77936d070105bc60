"""Training checkpoints: one folder per step, written whole or not at all, verified before use. No pickle.

    run/checkpoints/step-00001000/
        config.json          the UNet config (so UNet.load and `ddpm-fast sample --checkpoint` read the folder)
        model.safetensors    the trained weights
        ema.safetensors      the EMA weights (what sampling uses by default)
        optimizer.safetensors  AdamW's moment tensors
        state.json           step, training config, the diffusion setup (β as numbers, prediction type, ...: see
                             ddpm_fast.diffusion_setup), optimizer hyper-parameters, RNG states, and the SHA-256
                             of every file above

The folder is written under a temporary name, fsynced, then renamed: a crash mid-write leaves a stray temp folder
(ignored, cleared on the next save), never a half checkpoint under a real name. Loading re-hashes every file, so a
truncated or corrupted one is a ValueError naming it, and `latest_checkpoint` skips it for the last good one.
Sampling reads and verifies only the weights it samples with (`parts`): a corrupt EMA file does not block the
trained weights beside it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pathlib
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Collection, Optional, Union

import torch

from .. import files
from ..diffusion_setup import DiffusionSetup
from ..schedule import NoiseSchedule
from .config import UNetConfig
from .unet import CHECKPOINT_FORMAT as UNET_FORMAT
from .unet import CONFIG_NAME, UNet

FORMAT = "ddpm_fast.TrainingCheckpoint"
STATE_NAME = "state.json"
CHECKPOINTS_DIR = "checkpoints"
TENSOR_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors")
_STEP_NAME = re.compile(r"^step-(\d{8,})$")
PathLike = Union[str, os.PathLike]


@dataclass
class Checkpoint:
    """A verified checkpoint, loaded on the CPU. model / ema / optimizer are None where load_checkpoint was asked
    for other parts only (sampling reads one set of weights)."""

    path: pathlib.Path
    step: int
    state: dict[str, Any]
    model: Optional[dict[str, torch.Tensor]]
    ema: Optional[dict[str, torch.Tensor]]
    optimizer: Optional[dict[str, torch.Tensor]]


def step_folder_name(step: int) -> str:
    return f"step-{step:08d}"


# ------------------------------------------------------------------------------------------------------ writing


def save_checkpoint(run_dir: PathLike, step: int, *, unet_config: dict, model_state: dict[str, torch.Tensor],
                    ema_state: dict[str, torch.Tensor], optimizer_tensors: dict[str, torch.Tensor],
                    state: dict[str, Any], keep: int = 2, unusable: Collection[int] = ()) -> pathlib.Path:
    """Write run_dir/checkpoints/step-XXXXXXXX atomically, then delete all but the newest `keep` checkpoints.
    unusable: steps whose folders are known not to load (those a resumed run skipped): neither counted among the
    `keep` nor deleted, so a good checkpoint is never pruned in favour of a broken one.

    state: JSON-ready facts (training config, schedule, optimizer hyper-parameters, RNG states...); `step`, the
    format and the files' hashes are added here."""
    root = pathlib.Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_folder_name(step)
    temp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        blobs = {
            "config.json": files.json_bytes({"format": UNET_FORMAT, "config": unet_config}),
            "model.safetensors": files.safetensors_bytes(model_state),
            "ema.safetensors": files.safetensors_bytes(ema_state),
            "optimizer.safetensors": files.safetensors_bytes(optimizer_tensors),
        }
        hashes = {name: hashlib.sha256(data).hexdigest() for name, data in blobs.items()}
        blobs[STATE_NAME] = files.json_bytes({**state, "format": FORMAT, "step": step, "sha256": hashes})
        for name, data in blobs.items():
            _write_synced(temp / name, data)
        files.fsync_directory(temp)
        if final.exists():  # the same step saved again (e.g. at exit right after a periodic save): replace it
            shutil.rmtree(final)
        os.rename(temp, final)
        files.fsync_directory(root)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _prune(root, keep, set(unusable) - {step})
    return final


def _write_synced(path: pathlib.Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _prune(root: pathlib.Path, keep: int, unusable: Collection[int] = ()) -> None:
    """Delete all but the newest `keep` step folders that are not `unusable` (those are left as they are), and temp
    folders that a crashed save left behind."""
    for stray in root.glob(".step-*.tmp"):
        shutil.rmtree(stray, ignore_errors=True)
    for _, folder in [found for found in _step_folders(root) if found[0] not in unusable][:-keep]:
        shutil.rmtree(folder, ignore_errors=True)


def steps_after(run_dir: PathLike, step: int) -> list[int]:
    """The steps of the run's step folders newer than `step` (for a run resumed from `step`: the ones
    latest_checkpoint skipped as unusable)."""
    return [found for found, _ in _step_folders(pathlib.Path(run_dir) / CHECKPOINTS_DIR) if found > step]


# ------------------------------------------------------------------------------------------------------ reading


def _step_folders(root: pathlib.Path) -> list[tuple[int, pathlib.Path]]:
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _STEP_NAME.match(child.name)
            if match and child.is_dir():
                found.append((int(match.group(1)), child))
    return sorted(found)


def has_checkpoints(run_dir: PathLike) -> bool:
    """Whether a run folder holds any step folder (good or not)."""
    return bool(_step_folders(pathlib.Path(run_dir) / CHECKPOINTS_DIR))


def is_training_checkpoint(path: PathLike) -> bool:
    """Whether `path` is a checkpoint folder (has state.json) or a run folder (has checkpoints/)."""
    path = pathlib.Path(path)
    return (path / STATE_NAME).is_file() or (path / CHECKPOINTS_DIR).is_dir()


def latest_checkpoint(run_dir: PathLike, parts: tuple[str, ...] = TENSOR_FILES) -> Optional[Checkpoint]:
    """The newest checkpoint of a run whose state, config and `parts` verify (see load_checkpoint), or None when
    there is none. Newer ones that fail to verify (truncated, corrupted) are skipped with a warning naming the
    file."""
    root = pathlib.Path(run_dir) / CHECKPOINTS_DIR
    for _, folder in reversed(_step_folders(root)):
        try:
            return load_checkpoint(folder, parts)
        except (ValueError, FileNotFoundError) as error:
            warnings.warn(f"skipping unusable checkpoint: {error}", RuntimeWarning, stacklevel=2)
    return None


def resolve_checkpoint(path: PathLike, parts: tuple[str, ...] = TENSOR_FILES) -> Checkpoint:
    """A checkpoint folder, or a run folder's latest good checkpoint (good: its `parts` verify); a clear error when
    there is none."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint or run folder")
    if (path / STATE_NAME).is_file():
        return load_checkpoint(path, parts)
    checkpoint = latest_checkpoint(path, parts)
    if checkpoint is None:
        raise FileNotFoundError(f"{path}: no usable checkpoint (expected {path / CHECKPOINTS_DIR}/step-*/)")
    return checkpoint


def load_checkpoint(folder: PathLike, parts: tuple[str, ...] = TENSOR_FILES) -> Checkpoint:
    """Read and verify one checkpoint folder: state.json, config.json and the tensor files named in `parts` (all
    three by default; sampling asks for the one set of weights it uses, so a corrupt ema.safetensors does not
    block model.safetensors) present, each SHA-256 as recorded, safetensors readable. ValueError naming the file
    that fails."""
    unknown = [part for part in parts if part not in TENSOR_FILES]
    if unknown:
        raise ValueError(f"parts must name files of {', '.join(TENSOR_FILES)}, got {', '.join(unknown)}")
    folder = pathlib.Path(folder)
    state_path = folder / STATE_NAME
    state = files.read_json(state_path)
    if state.get("format") != FORMAT or not isinstance(state.get("step"), int) or not isinstance(
            state.get("sha256"), dict):
        raise ValueError(f"{state_path}: not a {FORMAT} state file")
    tensors = {}
    for name in ("config.json",) + tuple(part for part in TENSOR_FILES if part in parts):
        path = folder / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ValueError(f"{path}: missing from the checkpoint") from None
        if hashlib.sha256(data).hexdigest() != state["sha256"].get(name):
            raise ValueError(f"{path}: corrupt or truncated (its SHA-256 differs from the one in {STATE_NAME})")
        if name.endswith(".safetensors"):
            tensors[name] = files.parse_safetensors(path, data)
    return Checkpoint(folder, state["step"], state, tensors.get("model.safetensors"), tensors.get("ema.safetensors"),
                      tensors.get("optimizer.safetensors"))


# ------------------------------------------------------------------------------------- optimizer and RNG state


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state_dict split into flat tensors ("state.<param>.<name>") and JSON (param groups)."""
    state_dict = optimizer.state_dict()
    tensors = {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            tensors[f"state.{index}.{name}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    return tensors, {"param_groups": state_dict["param_groups"]}


def optimizer_state_dict(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of optimizer_tensors: a state_dict for optimizer.load_state_dict."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_states() -> dict[str, Any]:
    """torch's CPU and CUDA generator states, base64 in JSON (restored on resume for models that draw randomness)."""
    states = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii")}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode("ascii") for s in torch.cuda.get_rng_state_all()]
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    def tensor(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)

    if "torch" in states:
        torch.set_rng_state(tensor(states["torch"]))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensor(s) for s in states["cuda"]])


# ---------------------------------------------------------------------------------------------------- sampling


def checkpoint_model(checkpoint: Checkpoint, weights: str = "ema"):
    """(UNet, DiffusionSetup) of a loaded checkpoint, with its EMA weights (weights="ema", what DDPMs sample with) or
    the trained ones ("model"). The setup is the one the Trainer stored; checkpoints written before it stored one
    give their β and prediction type, with the fixed options the Trainer always used (fixed_small, no clipping)."""
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    config = UNetConfig.from_dict(files.read_json(checkpoint.path / CONFIG_NAME)["config"])
    model = UNet(config)
    source = checkpoint.path / f"{weights}.safetensors"
    tensors = checkpoint.ema if weights == "ema" else checkpoint.model
    if tensors is None:
        raise ValueError(f"{source}: not loaded (load_checkpoint(..., parts=) left it out)")
    model.load_state_dict_checked(tensors, source)
    stored = checkpoint.state.get("setup")
    if stored is not None:
        setup = DiffusionSetup.from_dict(stored, f"{checkpoint.path / STATE_NAME} (setup)")
        setup.check_fits(config, str(checkpoint.path / STATE_NAME))
    else:
        schedule = checkpoint.state["schedule"]
        setup = DiffusionSetup.from_schedule(
            NoiseSchedule.from_betas(schedule["betas"], name=schedule.get("name") or "custom"),
            prediction_type=checkpoint.state["training_config"]["prediction_type"],
            sample_shape=config.sample_shape,
            num_class_embeds=config.num_class_embeds)
    return model, setup
