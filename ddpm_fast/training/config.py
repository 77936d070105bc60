"""TrainingConfig: every setting of a training run, validated, and saved in each checkpoint as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from ..models.config import PRESETS
from ..checks import check_min_snr_gamma, check_prediction_type, check_value_range
from ..vocabulary import SCHEDULES, TRAINED_VARIANCE_TYPES
from ..vocabulary import TRAINING_DTYPES as DTYPES



@dataclass
class TrainingConfig:
    """A run's settings. batch_size is the global batch: under torchrun each of N ranks takes batch_size / N.

    model / model_overrides: a UNet preset and UNetConfig fields to change (sample_size follows image_size).
    data: "shapes" (the embedded dataset), an image folder, a .npz file or a CIFAR-10 python folder.
    data_key, data_range: for a .npz file, the array holding the images (needed when it holds several) and the range
        (low, high) a float array's values lie in, mapped onto [-1, 1] (e.g. (0, 1); see NpzDataset). Both are
        stored with the run, so a resumed run reads its data as before.
    skip_unreadable_images: leave out the images of an image folder that cannot be decoded (counted in log.jsonl)
        instead of refusing the folder.
    schedule, num_train_timesteps: the noise schedule (linear with T ≠ 1000 scales β by 1000/T, as improved-diffusion
        does, so ᾱ_T still reaches ~0).
    prediction_type, min_snr_gamma: the objective (ε, x0 or v; optional Min-SNR-γ weighting).
    variance_type, vlb_weight: σ_t of the reverse step. "fixed_small" / "fixed_large": fixed (β̃_t / β_t), the loss is
        L_simple. "learned_range": the model outputs 2C channels and learns the variance with improved DDPM's hybrid
        loss L_simple + vlb_weight·L_vlb (Nichol & Dhariwal 2021; λ = 0.001). Stored with every checkpoint.
    class_conditional, cond_drop_prob: train a class-conditional model on the dataset's classes (the shapes' kinds,
        CIFAR-10's classes, an image folder's sub-folders) for classifier-free guidance (Ho & Salimans 2022): the
        U-Net gets num_classes + 1 class embeddings, the last one the null (unconditional) class, and each label is
        replaced by the null class with probability cond_drop_prob (0 trains a conditional model alone; drawn from
        (seed, step), so a resumed run drops the same labels).
    learning_rate, weight_decay, adam_betas, warmup_steps, grad_clip: AdamW with a linear warm-up, then constant; the
        global gradient norm is clipped to grad_clip (None: no clipping).
    ema_decay, ema_warmup: the EMA of the weights (sampling uses it).
    dtype: "auto" (bf16 autocast on CUDA, fp32 on CPU), "float32" or "bfloat16" (autocast). Weights stay fp32.
    channels_last, compile: None picks the device's default (on for CUDA, off for CPU).
    checkpoint_every, keep_checkpoints, log_every, sample_every, sample_count, sample_steps: what is written when.
    tensorboard: also write a TensorBoard event file into the run folder (loss, lr, grad norm, images/s, the sample
        grids); needs the tensorboard package.
    """

    model: str = "tiny"
    model_overrides: dict = field(default_factory=dict)
    data: str = "shapes"
    data_key: Optional[str] = None
    data_range: Optional[tuple[float, float]] = None
    skip_unreadable_images: bool = False
    image_size: int = 32
    num_workers: int = 0
    schedule: str = "linear"
    num_train_timesteps: int = 1000
    prediction_type: str = "epsilon"
    min_snr_gamma: Optional[float] = None
    variance_type: str = "fixed_small"
    vlb_weight: float = 0.001
    class_conditional: bool = False
    cond_drop_prob: float = 0.1
    steps: int = 10_000
    batch_size: int = 64
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 500
    grad_clip: Optional[float] = 1.0
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    seed: int = 0
    dtype: str = "auto"
    channels_last: Optional[bool] = None
    compile: Optional[bool] = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    sample_every: int = 0
    sample_count: int = 16
    sample_steps: Optional[int] = None
    tensorboard: bool = False

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)
        self.model_overrides = dict(self.model_overrides)
        self.data_range = check_value_range(self.data_range, "data_range")
        self.validate()

    def validate(self) -> None:
        if self.model not in PRESETS:
            raise ValueError(f"model must be one of the UNet presets {', '.join(PRESETS)}, got {self.model!r}")
        if not isinstance(self.data, str) or not self.data:
            raise TypeError(f"data must be 'shapes' or a path string, got {self.data!r}")
        if self.data_key is not None and (not isinstance(self.data_key, str) or not self.data_key):
            raise TypeError(f"data_key must be the name of an array in the .npz file (a str) or None, got "
                            f"{self.data_key!r}")
        check_value_range(self.data_range, "data_range")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        check_prediction_type(self.prediction_type)
        check_min_snr_gamma(self.min_snr_gamma)
        if "num_class_embeds" in self.model_overrides:
            raise ValueError("model_overrides cannot set num_class_embeds: class_conditional=True sizes the class "
                             "embedding from the dataset's classes (plus the null class)")
        if self.variance_type not in TRAINED_VARIANCE_TYPES:
            raise ValueError(f"variance_type must be one of {', '.join(TRAINED_VARIANCE_TYPES)}, "
                             f"got {self.variance_type!r}")
        _check_number("vlb_weight", self.vlb_weight, positive=True)
        if self.variance_type == "learned_range" and self.min_snr_gamma is not None:
            raise ValueError("min_snr_gamma weights L_simple alone; with variance_type='learned_range' (the hybrid "
                             "loss) it is not supported: leave one of them out")
        for name in ("image_size", "num_train_timesteps", "steps", "batch_size", "checkpoint_every",
                     "keep_checkpoints", "log_every", "sample_count"):
            _check_int(name, getattr(self, name), low=1)
        for name in ("num_workers", "warmup_steps", "sample_every", "seed"):
            _check_int(name, getattr(self, name), low=0)
        if self.sample_steps is not None:
            _check_int("sample_steps", self.sample_steps, low=1)
        for name in ("learning_rate", "weight_decay"):
            _check_number(name, getattr(self, name), positive=name == "learning_rate")
        if self.grad_clip is not None:
            _check_number("grad_clip", self.grad_clip, positive=True)
        if len(self.adam_betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)) or not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be a number in [0, 1), got {self.ema_decay!r}")
        if isinstance(self.cond_drop_prob, bool) or not isinstance(self.cond_drop_prob, (int, float)) or not (
                0 <= self.cond_drop_prob < 1):
            raise ValueError(f"cond_drop_prob must be a number in [0, 1), got {self.cond_drop_prob!r}")
        if not self.class_conditional and self.cond_drop_prob != TrainingConfig.cond_drop_prob:
            raise ValueError("cond_drop_prob applies to class_conditional=True training only")
        for name in ("ema_warmup", "skip_unreadable_images", "class_conditional", "tensorboard"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("channels_last", "compile"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{name} must be True, False or None (the device's default), got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists), so a config compares equal to its own saved copy."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @staticmethod
    def to_dict_of(settings: dict[str, Any]) -> dict[str, Any]:
        """Some settings as to_dict writes them (tuples as lists), to compare with a stored config."""
        return json.loads(json.dumps(settings))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainingConfig":
        return dataclasses.replace(self, **changes)


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")


def _check_number(name: str, value: object, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (value > 0 if positive else value >= 0) or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
