"""DiffusionSetup: how a model diffuses, as one record that travels with every artefact and is read back by every
loader (README, "A model's setup travels with it").

    setup = DiffusionSetup.from_schedule(NoiseSchedule.cosine(250), prediction_type="v_prediction",
                                         sample_shape=(3, 16, 16))
    setup.save(folder)                        # folder/setup.json, written atomically
    setup = DiffusionSetup.load(folder)
    setup = setup.with_given({"prediction_type": "epsilon"}, source="runs/x")   # SetupConflict: names both values
    FastSampler(model, setup.schedule(), setup.sample_shape, **setup.sampler_options())

β is stored as numbers (float64 values in JSON), never re-derived from the schedule's name; the name only labels it.
The record lives in a training checkpoint's state.json ("setup"), in a `UNet.save` folder's setup.json, in an ONNX
file's metadata ("setup") and, as diffusers' own keys, in a pipeline folder's scheduler/scheduler_config.json.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from . import files
from .checks import ParameterError, check_disable_corrector, check_solver_options, check_step_setup
from .schedule import NoiseSchedule
from .vocabulary import DEFAULTS, SOLVER_DEFAULTS, THRESHOLDING_DEFAULTS

FORMAT = "ddpm_fast.DiffusionSetup"
SETUP_NAME = "setup.json"
SAMPLER_OPTIONS = tuple(DEFAULTS)  # the FastSampler keyword arguments the record sets
# Settings a caller may give (to check against, or to override, a stored record): the options and the schedule.
GIVEN_NAMES = ("schedule",) + SAMPLER_OPTIONS
BETAS_RTOL = 1e-6  # two schedules agree when every β does to this relative tolerance (float32 copies of one agree)


class SetupConflict(ValueError):
    """A setting given by the caller contradicts the stored record. `name`, `given`, `stored`, `source` say which."""

    def __init__(self, name: str, given: Any, stored: Any, source: str):
        self.name, self.given, self.stored, self.source = name, given, stored, source
        show = str if name == "schedule" else _show  # a schedule is described ("cosine, T=250"), not quoted
        super().__init__(f"{name}={show(given)} contradicts the setup stored with {source} ({name}={show(stored)}); "
                         "pass override_setup=True to use the given value anyway")


@dataclass(frozen=True)
class DiffusionSetup:
    """How a model diffuses: everything a sampler, an exporter or diffusers needs besides the weights.

    betas: β_t for t = 0..T-1 (float64 values, each in (0, 1)). schedule_name: a label ("linear", "cosine",
    "custom", a diffusers beta_schedule ...), never used to recompute β.
    prediction_type: "epsilon", "sample" or "v_prediction". variance_type: σ_t of the DDPM step (VARIANCE_TYPES).
    clip_sample, clip_sample_range: clamp the predicted x0 to [-r, r].
    timestep_spacing, steps_offset: how a shorter chain picks its timesteps (diffusers' names: "leading",
    "trailing", "linspace"). set_alpha_to_one: DDIM's final ᾱ (True: 1; False: ᾱ_0, diffusers' DDIMScheduler key).
    sample_shape: (C, H, W) the model samples, or None when unknown. num_class_embeds: the number of classes of a
    class-conditional model, None for an unconditional one. null_class_label: the class label that stands for "no
    class" in a model trained for classifier-free guidance (label dropout; our Trainer's is the last one,
    num_class_embeds - 1), None when the model has none (guidance then needs it given). class_names: the name of
    each class a caller may ask for (index i names label i; the null class has none), e.g. an image folder's class
    sub-folders; None when not known. Sampling takes a class by name through them (`sample --class-labels cat`).
    solver_order, lower_order_final, final_sigmas_type, euler_at_final, use_karras_sigmas, use_lu_lambdas,
    use_exponential_sigmas, thresholding, dynamic_thresholding_ratio, sample_max_value, solver_type,
    disable_corrector: the multistep solvers' options (FastSampler's; diffusers' DPMSolverMultistepScheduler's and
    UniPCMultistepScheduler's names);
    stored only where they differ from the defaults, so a record that leaves them at their defaults reads anywhere.
    """

    betas: tuple
    schedule_name: str = "custom"
    prediction_type: str = DEFAULTS["prediction_type"]
    variance_type: str = DEFAULTS["variance_type"]
    clip_sample: bool = DEFAULTS["clip_sample"]
    clip_sample_range: float = DEFAULTS["clip_sample_range"]
    timestep_spacing: str = DEFAULTS["timestep_spacing"]
    steps_offset: int = DEFAULTS["steps_offset"]
    set_alpha_to_one: bool = DEFAULTS["set_alpha_to_one"]
    sample_shape: Optional[tuple] = None
    num_class_embeds: Optional[int] = None
    null_class_label: Optional[int] = None
    class_names: Optional[tuple] = None
    solver_order: int = DEFAULTS["solver_order"]
    lower_order_final: bool = DEFAULTS["lower_order_final"]
    final_sigmas_type: str = DEFAULTS["final_sigmas_type"]
    euler_at_final: bool = DEFAULTS["euler_at_final"]
    use_karras_sigmas: bool = DEFAULTS["use_karras_sigmas"]
    use_lu_lambdas: bool = DEFAULTS["use_lu_lambdas"]
    use_exponential_sigmas: bool = DEFAULTS["use_exponential_sigmas"]
    thresholding: bool = DEFAULTS["thresholding"]
    dynamic_thresholding_ratio: float = DEFAULTS["dynamic_thresholding_ratio"]
    sample_max_value: float = DEFAULTS["sample_max_value"]
    solver_type: str = DEFAULTS["solver_type"]
    disable_corrector: tuple = DEFAULTS["disable_corrector"]

    def __post_init__(self) -> None:
        betas = tuple(float(b) for b in self.betas) if _is_sequence(self.betas) else None
        if not betas or not all(math.isfinite(b) and 0 < b < 1 for b in betas):
            raise ValueError("betas must be a non-empty sequence of numbers in (0, 1)")
        object.__setattr__(self, "betas", betas)
        if not isinstance(self.schedule_name, str) or not self.schedule_name:
            raise TypeError(f"schedule_name must be a non-empty str, got {self.schedule_name!r}")
        if not isinstance(self.clip_sample, bool):
            raise TypeError(f"clip_sample must be True or False, got {self.clip_sample!r}")
        object.__setattr__(self, "clip_sample_range", check_step_setup(
            self.prediction_type, self.variance_type, self.clip_sample_range, self.timestep_spacing, self.steps_offset,
            self.set_alpha_to_one))
        check_solver_options(**{name: getattr(self, name) for name in SOLVER_DEFAULTS})
        object.__setattr__(self, "disable_corrector", check_disable_corrector(self.disable_corrector))
        if self.sample_shape is not None:
            shape = tuple(self.sample_shape) if _is_sequence(self.sample_shape) else ()
            if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
                raise ValueError(f"sample_shape must be (C, H, W) of positive ints or None, got {self.sample_shape!r}")
            object.__setattr__(self, "sample_shape", shape)
        if self.num_class_embeds is not None and (isinstance(self.num_class_embeds, bool) or not isinstance(
                self.num_class_embeds, int) or self.num_class_embeds < 1):
            raise ValueError(f"num_class_embeds must be a positive int or None, got {self.num_class_embeds!r}")
        check_null_class_label(self.null_class_label, self.num_class_embeds)
        if self.class_names is not None:
            names = tuple(self.class_names) if _is_sequence(self.class_names) else ()
            if not names or not all(isinstance(name, str) and name for name in names) or len(set(names)) < len(names):
                raise ValueError(f"class_names must be distinct non-empty strings or None, got {self.class_names!r}")
            count = user_class_count(self.num_class_embeds, self.null_class_label)
            if count != len(names):
                raise ValueError(f"class_names holds {len(names)} names for a model of {count} classes "
                                 f"(num_class_embeds={self.num_class_embeds}, null_class_label="
                                 f"{self.null_class_label})")
            object.__setattr__(self, "class_names", names)

    # -------------------------------------------------------------------------------------------- derived

    @property
    def num_train_timesteps(self) -> int:
        return len(self.betas)

    def schedule(self):
        """The NoiseSchedule of these β (derived in float64), labelled with schedule_name."""
        return NoiseSchedule.from_betas(self.betas, name=self.schedule_name)

    def sampler_options(self) -> dict[str, Any]:
        """The FastSampler keyword arguments this record sets (prediction and variance type, clipping, spacing...)."""
        return {name: getattr(self, name) for name in SAMPLER_OPTIONS}

    def check_fits(self, model_config, source: str) -> None:
        """ValueError naming `source` when this record's sample shape (its channels) or class count does not fit a
        UNetConfig: a record is never read with another model's weights."""
        if self.sample_shape is not None and self.sample_shape[0] != model_config.in_channels:
            raise ValueError(f"{source}: sample_shape {self.sample_shape} does not fit the model's "
                             f"{model_config.in_channels} input channels")
        if self.num_class_embeds != model_config.num_class_embeds:
            raise ValueError(f"{source}: num_class_embeds={self.num_class_embeds} differs from the model's "
                             f"{model_config.num_class_embeds}")

    def class_indices(self, labels: Any) -> list[int]:
        """Class labels given as indices or names (a sequence of ints and strs) as indices: a name is looked up in
        class_names, an int passes as it is (the sampler checks its range). ParameterError naming class_labels for a
        name this record does not hold, or for any name when it stores none."""
        indices = []
        for label in labels:
            if isinstance(label, str):
                names = self.class_names
                count = user_class_count(self.num_class_embeds, self.null_class_label)
                if names is None and count is None:
                    raise ParameterError("class_labels", lambda term, label=label: (
                        f"{term('class_labels')} {label!r}: this model has no classes (num_class_embeds=None)"))
                if names is None:
                    raise ParameterError("class_labels", lambda term, label=label, count=count: (
                        f"{term('class_labels')} {label!r}: this model stores no class names; give class indices "
                        f"(0 to {count - 1})"))
                if label not in names:
                    listed = ", ".join(f"{i} {name}" for i, name in enumerate(names))
                    raise ParameterError("class_labels", lambda term, label=label, listed=listed: (
                        f"{term('class_labels')} {label!r} is not a class of this model (its classes: {listed})"))
                indices.append(names.index(label))
            else:
                indices.append(label)
        return indices

    def describe_schedule(self) -> str:
        return f"{self.schedule_name}, T={self.num_train_timesteps}"

    # -------------------------------------------------------------------------------------------- builders

    @classmethod
    def from_schedule(cls, schedule, **fields: Any) -> "DiffusionSetup":
        """From a NoiseSchedule and any other fields (defaults where left out)."""
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a ddpm_fast.NoiseSchedule, got {type(schedule).__name__}")
        return cls(betas=tuple(schedule.betas.tolist()), schedule_name=schedule.name, **fields)

    def to_diffusers_config(self) -> dict[str, Any]:
        """A DDPMScheduler config that diffusers and FastDDPMScheduler read back to this record. β goes as
        trained_betas (diffusers would recompute a named schedule in float32, and has no name for several of ours);
        set_alpha_to_one is DDIMScheduler's key, which DDPMScheduler ignores silently (a compatible scheduler's)."""
        return {"_class_name": "DDPMScheduler", "num_train_timesteps": self.num_train_timesteps,
                "trained_betas": list(self.betas), "variance_type": self.variance_type,
                "clip_sample": self.clip_sample, "clip_sample_range": self.clip_sample_range,
                "prediction_type": self.prediction_type, "thresholding": False,
                "timestep_spacing": self.timestep_spacing, "steps_offset": self.steps_offset,
                "rescale_betas_zero_snr": False, "set_alpha_to_one": self.set_alpha_to_one,
                # DPMSolverMultistepScheduler's keys, where they differ from its defaults (read back by
                # setup_from_diffusers_config); not thresholding, which a DDPMScheduler would apply to its own steps
                **{name: getattr(self, name) for name, default in SOLVER_DEFAULTS.items()
                   if getattr(self, name) != default and name not in THRESHOLDING_DEFAULTS}}

    # ------------------------------------------------------------------------------------------ given values

    def with_given(self, given: Mapping[str, Any], *, source: str, override: bool = False) -> "DiffusionSetup":
        """This record with the caller's settings applied: `given` maps GIVEN_NAMES to a value, or None (not given).
        A given value equal to the stored one is fine; a different one raises SetupConflict naming both, unless
        `override`, which replaces it; where the record stores None (no null class known), or a multistep solver's
        option at its default (which the record leaves out: the model was not set up with it), the given value is
        taken. "schedule" is a NoiseSchedule, compared β by β."""
        changes = {}
        for name, value in given.items():
            if name not in GIVEN_NAMES:
                raise TypeError(f"unknown setup setting {name!r}; expected one of {', '.join(GIVEN_NAMES)}")
            if value is None:
                continue
            if name == "schedule":
                if self.same_betas(value):
                    continue
                if not override:
                    given_text, stored_text = f"{value.name}, T={value.num_timesteps}", self.describe_schedule()
                    if given_text == stored_text:  # one name, two meanings (e.g. diffusers' unscaled "linear")
                        given_text += f", β {value.betas[0].item():.4g} … {value.betas[-1].item():.4g}"
                        stored_text += f", β {self.betas[0]:.4g} … {self.betas[-1]:.4g}"
                    raise SetupConflict("schedule", given_text, stored_text, source)
                changes.update(betas=tuple(value.betas.tolist()), schedule_name=value.name)
            elif getattr(self, name) is None:  # nothing stored (a null class of a diffusers folder): the given one
                changes[name] = value
            elif name in SOLVER_DEFAULTS and getattr(self, name) == SOLVER_DEFAULTS[name]:
                # a solver option at its default is one the record does not store (to_dict leaves it out): the
                # model was not set up with it, so the caller's choice is taken, as for nothing stored
                changes[name] = value
            elif value != getattr(self, name):
                if not override:
                    raise SetupConflict(name, value, getattr(self, name), source)
                changes[name] = value
        return dataclasses.replace(self, **changes) if changes else self

    def same_betas(self, schedule) -> bool:
        """Whether a NoiseSchedule has these β (same T, each within BETAS_RTOL)."""
        betas = schedule.betas.tolist()
        return len(betas) == len(self.betas) and all(
            abs(a - b) <= BETAS_RTOL * abs(b) for a, b in zip(betas, self.betas))

    # ---------------------------------------------------------------------------------------------- storage

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the format tag."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        data["sample_shape"] = list(self.sample_shape) if self.sample_shape is not None else None
        if self.class_names is None:  # left out: a record without names reads as before, anywhere
            del data["class_names"]
        else:
            data["class_names"] = list(self.class_names)
        for name, default in SOLVER_DEFAULTS.items():  # likewise for the solvers' options at their defaults
            if data[name] == default:
                del data[name]
        if "disable_corrector" in data:
            data["disable_corrector"] = list(data["disable_corrector"])
        return {"format": FORMAT, **data}

    @classmethod
    def from_dict(cls, data: Any, source: str = "setup") -> "DiffusionSetup":
        """The record of `to_dict`; ValueError naming `source` for anything else (unknown keys included)."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"{source}: not a {FORMAT} record")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields - {"format"})
        if unknown:
            raise ValueError(f"{source}: unknown setup keys {', '.join(unknown)}")
        if "betas" not in data:
            raise ValueError(f"{source}: the setup stores no betas")
        try:
            return cls(**{k: v for k, v in data.items() if k != "format"})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from None

    def save(self, folder: Union[str, os.PathLike]) -> pathlib.Path:
        """Write folder/setup.json atomically; returns its path."""
        path = pathlib.Path(folder) / SETUP_NAME
        files.atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, folder: Union[str, os.PathLike]) -> "DiffusionSetup":
        path = pathlib.Path(folder) / SETUP_NAME
        return cls.from_dict(files.read_json(path), str(path))


def check_null_class_label(label: Any, num_class_embeds: Optional[int], name: str = "null_class_label", *,
                           count_known: bool = True) -> None:
    """ValueError / TypeError unless `label` is None or a class index of a model with num_class_embeds classes.
    count_known=False: a model that does not say how many classes it has (a plain callable); the label need only be
    a non-negative int."""
    if label is None:
        return
    if isinstance(label, bool) or not isinstance(label, int):
        raise TypeError(f"{name} must be an int or None, got {type(label).__name__}")
    if not count_known:
        if label < 0:
            raise ValueError(f"{name} must be a class index >= 0, got {label}")
        return
    if num_class_embeds is None:
        raise ParameterError(name, lambda term: f"{term(f'{name}={label}')} given for a model with no class "
                             "embedding (num_class_embeds=None)")
    if not 0 <= label < num_class_embeds:
        raise ParameterError(name, lambda term: f"{term(name)} must be a class index in [0, {num_class_embeds}), "
                             f"got {label}")


def user_class_count(num_class_embeds: Optional[int], null_class_label: Optional[int]) -> Optional[int]:
    """How many classes a caller may ask for: the class embeddings less the null class when it is the last one (as
    ddpm_fast's Trainer makes it), None for a model without classes."""
    if num_class_embeds is None:
        return None
    return num_class_embeds - 1 if null_class_label == num_class_embeds - 1 else num_class_embeds


def model_class_count(model: Any) -> Optional[int]:
    """num_class_embeds of a model with a config that has one (our UNet, diffusers' UNet2DModel), else None."""
    classes = getattr(getattr(model, "config", None), "num_class_embeds", None)
    return classes if isinstance(classes, int) and not isinstance(classes, bool) else None


def defaults_note(source: str, used: Mapping[str, Any]) -> str:
    """The one line that says which defaults stand in where nothing is stored."""
    shown = ", ".join(f"{name}={value if name == 'schedule' else _show(value)}" for name, value in used.items())
    return f"{source} stores no diffusion setup; using {shown}"


def _is_sequence(value: Any) -> bool:
    if isinstance(value, (str, bytes)):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)
