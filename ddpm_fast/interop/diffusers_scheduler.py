"""FastDDPMScheduler: a drop-in for diffusers' DDPMScheduler whose step is the fused p_step kernel.

    pipe = diffusers.DDPMPipeline.from_pretrained(path)
    pipe.scheduler = ddpm_fast.FastDDPMScheduler.from_config(pipe.scheduler.config)
    images = pipe(generator=torch.Generator().manual_seed(0)).images      # the same images as with diffusers'

With diffusers installed it is a real diffusers scheduler — a subclass of DDPMScheduler (SchedulerMixin +
ConfigMixin): config registration, `from_config` / `from_pretrained` / `save_pretrained`, `compatibles`,
`_get_variance`, diffusers' output class; a pipeline holding it saves it (scheduler/, `_class_name`
FastDDPMScheduler, library ddpm_fast) and `DDPMPipeline.from_pretrained` loads it back. Without diffusers, a
standalone class keeps the same config keys and methods. Either way `set_timesteps` plans with ddpm_fast's one
planner (integer spacings: exactly n timesteps for every n), and `step`, `add_noise` and `get_velocity` are fused
kernels on a float64-derived schedule; the noise of a step is drawn exactly as diffusers draws it (same generator
calls, same order), so the same generator gives the same images.

Refused with a ValueError at construction (documented differences from DDPMScheduler): thresholding=True (dynamic
thresholding), variance_type="learned" (an unclamped learned variance; "learned_range" is supported),
rescale_betas_zero_snr=True (ᾱ_T = 0), spacings other than leading / trailing / linspace, and any β outside (0, 1)
(diffusers accepts β ≥ 1 and steps to NaN). diffusers' own DDPMScheduler tests, run with this class swapped in, pass
but for those refusals and one expected number that carries diffusers' float32 error (see the README).

Respaced chains (num_inference_steps < num_train_timesteps, or custom timesteps) step from each kept timestep to the
next one, as diffusers does: the coefficient table then holds, per kept timestep, the posterior of that pair.
"""

from __future__ import annotations

import os
import pathlib
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .. import files
from ..diffusion import q_sample
from ..diffusion_setup import DiffusionSetup
from ..kernels import ops as _ops  # noqa: F401 — registers torch.ops.ddpm_fast.*
from ..vocabulary import (COEFFICIENT_ROWS, SOLVER_DEFAULTS, PREDICTION_TYPES, SPACINGS, THRESHOLDING_DEFAULTS,
                          VARIANCE_TYPES)
from ..sampling.plan import chain_timesteps
from ..sampling.timesteps import respaced_coefficient_table
from ..schedule import NoiseSchedule

CONFIG_NAME = "scheduler_config.json"
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")  # what NoiseSchedule.from_diffusers builds
DEFAULT_CONFIG = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon",
    "thresholding": False, "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0,
    "timestep_spacing": "leading", "steps_offset": 0, "rescale_betas_zero_snr": False,
}


class SchedulerConfig(dict):
    """The config as diffusers exposes it: a dict that also reads as attributes (config.num_train_timesteps)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class DDPMSchedulerOutput:
    """step's output without diffusers (with diffusers, its own DDPMSchedulerOutput): attributes, keys, a tuple."""

    prev_sample: torch.Tensor
    pred_original_sample: Optional[torch.Tensor] = None

    def __getitem__(self, index):  # diffusers' BaseOutput also indexes like a tuple, and by key
        if isinstance(index, str):
            return dict(self.items())[index]
        return self.to_tuple()[index]

    def keys(self):
        return [key for key, _ in self.items()]

    def values(self):
        return [value for _, value in self.items()]

    def items(self):
        # as BaseOutput: the fields that are set (not None), in order
        return [(key, value) for key, value in (("prev_sample", self.prev_sample),
                                                ("pred_original_sample", self.pred_original_sample))
                if value is not None]

    def to_tuple(self) -> tuple:
        return tuple(self.values())


class _FusedDDPMScheduling:
    """What FastDDPMScheduler adds to (or, without diffusers, has instead of) diffusers' DDPMScheduler: the chain
    planned by ddpm_fast's one planner, the fused `step`, `add_noise` and `get_velocity`, on a float64-derived schedule.
    Needs `self.config` (keys as diffusers' DDPMScheduler config) and `_init_fused` called once the config is set."""

    order = 1
    init_noise_sigma = 1.0
    _output_class: Any = DDPMSchedulerOutput

    def _init_fused(self, values: Mapping[str, Any]) -> None:
        self.schedule = NoiseSchedule.from_diffusers(values)
        self.betas = self.schedule.betas.float()
        self.alphas = self.schedule.alphas.float()
        self.alphas_cumprod = self.schedule.alphas_cumprod.float()
        self.one = torch.tensor(1.0)
        self.variance_type = values["variance_type"]
        self.num_inference_steps: Optional[int] = None
        self.custom_timesteps = False
        self.timesteps = torch.arange(values["num_train_timesteps"] - 1, -1, -1, dtype=torch.int64)
        self._tables: dict[torch.device, torch.Tensor] = {}
        self._step_index: Optional[dict[int, int]] = None  # kept timestep -> column of the respaced table

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # --------------------------------------------------------------------------------------------- timesteps

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device: Union[str, torch.device] = None,
                      timesteps: Optional[Sequence[int]] = None) -> None:
        """The chain to sample: every step, `num_inference_steps` spaced ones, or a descending custom list."""
        total = self.config.num_train_timesteps
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("pass num_inference_steps or timesteps, not both")
        if timesteps is not None:
            chain = np.asarray(list(timesteps), dtype=np.int64)
            if chain.ndim != 1 or chain.size == 0:
                raise ValueError("timesteps must be a non-empty list of ints")
            if np.any(chain[1:] >= chain[:-1]):
                raise ValueError("timesteps must be in descending order")
            if chain[0] >= total or chain[-1] < 0:
                raise ValueError(f"timesteps must lie in [0, {total}), got {chain[0]} ... {chain[-1]}")
            self.custom_timesteps, self.num_inference_steps = True, len(chain)
        else:
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) \
                    or not 1 <= num_inference_steps <= total:
                raise ValueError(f"num_inference_steps must be an int in [1, {total}], got {num_inference_steps!r}")
            # the one planner of FastSampler and OnnxSampler too
            chain = chain_timesteps(total, num_inference_steps, self.config.timestep_spacing, self.config.steps_offset)
            self.custom_timesteps, self.num_inference_steps = False, num_inference_steps
        self.timesteps = torch.from_numpy(chain.copy()).to(device)
        self._tables = {}
        self._step_index = {int(t): column for column, t in enumerate(chain[::-1].tolist(), start=1)}

    def previous_timestep(self, timestep: Union[int, torch.Tensor]) -> Union[int, torch.Tensor]:
        """The timestep after `timestep` in the chain, as diffusers gives it: once set_timesteps has run, a tensor (the
        next kept timestep, or tensor(-1) after the last); before, timestep - 1."""
        if self._step_index is None:
            return timestep - 1
        chain = self.timesteps.tolist()
        position = chain.index(_host_timestep(timestep))
        return self.timesteps[position + 1] if position + 1 < len(chain) else torch.tensor(-1)

    # -------------------------------------------------------------------------------------------------- step

    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[int] = None) -> torch.Tensor:
        return sample

    def step(self, model_output: torch.Tensor, timestep: Union[int, torch.Tensor], sample: torch.Tensor,
             generator: Union[torch.Generator, list, None] = None, return_dict: bool = True):
        """x_t → x_{t_prev} with the fused kernel; noise drawn as diffusers draws it (none at t = 0)."""
        if not isinstance(model_output, torch.Tensor) or not isinstance(sample, torch.Tensor):
            raise TypeError("model_output and sample must be tensors")
        t = _host_timestep(timestep)
        channels = sample.shape[1]
        learned = model_output.shape[1] == 2 * channels and self.variance_type == "learned_range"
        if model_output.shape[1] != channels and not learned:
            raise ValueError(f"model_output has {model_output.shape[1]} channels; expected {channels}"
                             + (" or twice that" if self.variance_type == "learned_range" else ""))
        if self._step_index is None and not 0 <= t < self.config.num_train_timesteps:
            raise ValueError(f"timestep {t} is outside [0, {self.config.num_train_timesteps})")
        column = t if self._step_index is None else self._column(t)
        table = self._table(sample.device)
        eps_or_x0 = model_output[:, :channels]
        noise = None
        if t > 0:
            noise = _randn_like_diffusers(eps_or_x0.shape, generator, sample.device, model_output.dtype)
        x = sample.float()  # x_t is carried in float32; the kernel reads any layout in place
        t_vector = torch.full((sample.shape[0],), column, dtype=torch.int64, device=sample.device)
        prev = torch.ops.ddpm_fast.p_step(
            model_output if learned else eps_or_x0, t_vector, x, table, noise, None, 0,
            PREDICTION_TYPES[self.config.prediction_type], VARIANCE_TYPES[self.variance_type],
            bool(self.config.clip_sample), float(self.config.clip_sample_range))
        x0 = self._pred_original_sample(eps_or_x0, x, table, column)
        prev, x0 = prev.to(sample.dtype), x0.to(sample.dtype)
        if not return_dict:
            return (prev, x0)
        return self._output_class(prev_sample=prev, pred_original_sample=x0)

    def _column(self, t: int) -> int:
        try:
            return self._step_index[t]
        except KeyError:
            raise ValueError(f"timestep {t} is not in this scheduler's timesteps (see set_timesteps)") from None

    def _table(self, device: torch.device) -> torch.Tensor:
        if device not in self._tables:
            if self._step_index is None:
                self._tables[device] = self.schedule.coefficient_table(device)
            else:
                # Column j + 1 for kept step j: column 0 is a dummy, so the kernel's "no noise at index 0" never
                # hides the noise diffusers adds at a last kept step > 0 (`step` skips it where t == 0 itself).
                table = respaced_coefficient_table(self.schedule.alphas_cumprod, sorted(self._step_index))
                self._tables[device] = torch.cat([table[:, :1], table], dim=1).contiguous().to(device)
        return self._tables[device]

    def _pred_original_sample(self, model_output, x, table, column):
        """diffusers' pred_original_sample (clipped when clip_sample), from the same table column."""
        row = {name: table[i, column] for i, name in enumerate(COEFFICIENT_ROWS)}
        out = model_output.float()
        kind = self.config.prediction_type
        if kind == "epsilon":
            x0 = row["sqrt_recip_alphas_cumprod"] * x - row["sqrt_recipm1_alphas_cumprod"] * out
        elif kind == "sample":
            x0 = out
        else:
            x0 = row["sqrt_alphas_cumprod"] * x - row["sqrt_one_minus_alphas_cumprod"] * out
        if self.config.clip_sample:
            r = float(self.config.clip_sample_range)
            x0 = x0.clamp(-r, r)
        return x0

    # ----------------------------------------------------------------------------------------- training side

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor,
                  timesteps: torch.Tensor) -> torch.Tensor:
        """sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε with the fused q-sample kernel."""
        return self._linear_mix(original_samples, noise, timesteps)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """v = sqrt(ᾱ_t)·ε − sqrt(1-ᾱ_t)·x0: the same fused mix with (ε, −x0)."""
        return self._linear_mix(noise, -sample, timesteps)

    def _linear_mix(self, first, second, timesteps):
        # The public q_sample: its checks (shapes, devices, t in [0, T)) and its kernel.
        t = torch.as_tensor(timesteps, device=first.device)
        if t.numel() == 1:
            t = t.reshape(())
        return q_sample(first, t, self.schedule, noise=second.to(first.dtype))[0]


class _StandaloneFastDDPMScheduler(_FusedDDPMScheduling):
    """FastDDPMScheduler where diffusers is not installed: the same config keys, from_config / from_pretrained /
    save_pretrained of a local folder, the same fused steps."""

    config_name = CONFIG_NAME

    def __init__(self, **config: Any):
        unknown = sorted(k for k in config if k not in DEFAULT_CONFIG and not k.startswith("_"))
        if unknown:  # diffusers ignores keys it does not know (with a warning); so do we
            warnings.warn(f"FastDDPMScheduler ignores unknown config keys: {', '.join(unknown)}", stacklevel=2)
        values = {**DEFAULT_CONFIG, **{k: v for k, v in config.items() if k in DEFAULT_CONFIG}}
        if values["trained_betas"] is not None:  # JSON-ready, whatever the caller passed
            values["trained_betas"] = np.asarray(values["trained_betas"], dtype=np.float64).tolist()
        check_scheduler_config(values)
        self.config = SchedulerConfig(values)
        self._init_fused(values)

    @classmethod
    def from_config(cls, config: Union[Mapping, Any] = None, **overrides: Any) -> "FastDDPMScheduler":
        """From a config dict (e.g. `pipe.scheduler.config`) or a scheduler; keyword arguments override keys."""
        config = getattr(config, "config", config)
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping or a scheduler, got {type(config).__name__}")
        return cls(**{**dict(config or {}), **overrides})

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], subfolder: Optional[str] = None,
                        **overrides: Any) -> "FastDDPMScheduler":
        """From a local folder holding scheduler_config.json (or a pipeline folder with scheduler/)."""
        folder = pathlib.Path(path) / (subfolder or "")
        if not (folder / CONFIG_NAME).exists() and (folder / "scheduler" / CONFIG_NAME).exists():
            folder = folder / "scheduler"
        return cls.from_config(files.read_json(folder / CONFIG_NAME), **overrides)

    def save_config(self, save_directory: Union[str, os.PathLike], **_: Any) -> None:
        """Write scheduler_config.json (atomically) so either diffusers' DDPMScheduler or this class reads it."""
        files.atomic_write_json(pathlib.Path(save_directory) / CONFIG_NAME,
                                {"_class_name": "DDPMScheduler", **self.config})

    save_pretrained = save_config


def _diffusers_flavour():
    """FastDDPMScheduler as a real diffusers scheduler: a DDPMScheduler subclass (SchedulerMixin + ConfigMixin: config
    registration, from_config / from_pretrained / save_pretrained, compatibles, _get_variance, pipelines that save
    and load it) whose chain, step, add_noise and get_velocity are ours."""
    from diffusers import DDPMScheduler
    from diffusers.configuration_utils import register_to_config
    from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput as Output

    class FastDDPMScheduler(_FusedDDPMScheduling, DDPMScheduler):
        _output_class = Output

        @register_to_config
        def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                     beta_schedule: str = "linear", trained_betas: Union[np.ndarray, list, None] = None,
                     variance_type: str = "fixed_small", clip_sample: bool = True, prediction_type: str = "epsilon",
                     thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
                     clip_sample_range: float = 1.0, sample_max_value: float = 1.0, timestep_spacing: str = "leading",
                     steps_offset: int = 0, rescale_betas_zero_snr: bool = False):
            values = {"num_train_timesteps": num_train_timesteps, "beta_start": beta_start, "beta_end": beta_end,
                      "beta_schedule": beta_schedule, "trained_betas": trained_betas, "variance_type": variance_type,
                      "clip_sample": clip_sample, "prediction_type": prediction_type, "thresholding": thresholding,
                      "dynamic_thresholding_ratio": dynamic_thresholding_ratio, "clip_sample_range": clip_sample_range,
                      "sample_max_value": sample_max_value, "timestep_spacing": timestep_spacing,
                      "steps_offset": steps_offset, "rescale_betas_zero_snr": rescale_betas_zero_snr}
            if trained_betas is not None:  # a list of floats in the config, so save_pretrained writes JSON
                values["trained_betas"] = np.asarray(trained_betas, dtype=np.float64).tolist()
            check_scheduler_config(values)  # our refusals, before diffusers builds anything
            DDPMScheduler.__init__(self, **values)
            self.register_to_config(trained_betas=values["trained_betas"])
            self._init_fused(values)

        @classmethod
        def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
            """diffusers' from_config, with a TypeError for what is neither a config mapping nor a scheduler."""
            if config is not None and not isinstance(config, Mapping) and not hasattr(config, "config"):
                raise TypeError(f"config must be a mapping or a scheduler, got {type(config).__name__}")
            return super().from_config(getattr(config, "config", config), return_unused_kwargs=return_unused_kwargs,
                                       **kwargs)

        @classmethod
        def from_pretrained(cls, pretrained_model_name_or_path=None, subfolder=None, return_unused_kwargs=False,
                            **kwargs):
            """diffusers' from_pretrained (a folder, or a Hub id through the user's cache); a local path that does not
            exist is a FileNotFoundError naming it, not a Hub lookup. A pipeline folder's scheduler/ is found."""
            path = pathlib.Path(os.fspath(pretrained_model_name_or_path))
            local = path.is_absolute() or str(path).startswith(".") or len(path.parts) > 2
            if local and not path.is_dir():
                raise FileNotFoundError(f"{path}: no such scheduler folder")
            if subfolder is None and (path / "scheduler" / CONFIG_NAME).is_file() and not (path / CONFIG_NAME).is_file():
                subfolder = "scheduler"
            return super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder,
                                           return_unused_kwargs=return_unused_kwargs, **kwargs)

    FastDDPMScheduler.__module__ = __name__
    FastDDPMScheduler.__qualname__ = "FastDDPMScheduler"
    FastDDPMScheduler.__doc__ = __doc__
    return FastDDPMScheduler


try:
    # diffusers' pipeline loader finds a component's loading methods by looking up SchedulerMixin (and its other
    # base classes) in the module model_index.json names for it: this one
    from diffusers import SchedulerMixin  # noqa: F401
except ImportError:  # no diffusers: the standalone scheduler
    FastDDPMScheduler = _StandaloneFastDDPMScheduler
else:
    FastDDPMScheduler = _diffusers_flavour()
HAS_DIFFUSERS = FastDDPMScheduler is not _StandaloneFastDDPMScheduler


def _host_timestep(timestep: Union[int, torch.Tensor]) -> int:
    """The step's timestep as a Python int. CPU tensors (what set_timesteps gives by default) cost no device sync;
    a CUDA tensor would, so keep `timesteps` on the CPU (the default) in sync-free loops."""
    if isinstance(timestep, torch.Tensor):
        if timestep.numel() != 1 or timestep.is_floating_point():
            raise ValueError(f"timestep must be one integer, got a tensor of shape {tuple(timestep.shape)}")
        return int(timestep.item())
    if isinstance(timestep, bool) or not isinstance(timestep, (int, np.integer)):
        raise TypeError(f"timestep must be an int or a one-element tensor, got {type(timestep).__name__}")
    return int(timestep)


def _randn_like_diffusers(shape, generator, device, dtype) -> torch.Tensor:
    """torch.randn exactly as diffusers' randn_tensor draws it: on the generator's device, one call per sample
    when given a list of generators, then moved to `device`."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        draws = [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator]
        return torch.cat(draws).to(device)
    draw_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=draw_device, dtype=dtype).to(device)


def check_scheduler_config(config: dict) -> None:
    """ValueError for every DDPMScheduler option FastDDPMScheduler (and FastSampler) cannot honour."""
    total = config["num_train_timesteps"]
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ValueError(f"num_train_timesteps must be a positive int, got {total!r}")
    if config["trained_betas"] is not None and len(config["trained_betas"]) != total:
        raise ValueError(f"trained_betas holds {len(config['trained_betas'])} values; num_train_timesteps is {total}")
    if config["trained_betas"] is None and config["beta_schedule"] not in BETA_SCHEDULES:
        raise ValueError(f"beta_schedule={config['beta_schedule']!r} is not supported; expected one of "
                         f"{', '.join(BETA_SCHEDULES)} or trained_betas")
    if config["thresholding"]:
        raise ValueError("thresholding=True (dynamic thresholding) is not supported by FastDDPMScheduler")
    if config["variance_type"] not in VARIANCE_TYPES:
        raise ValueError(f"variance_type={config['variance_type']!r} is not supported; "
                         f"choose one of {', '.join(VARIANCE_TYPES)}")
    if config["prediction_type"] not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type={config['prediction_type']!r} is not supported; "
                         f"choose one of {', '.join(PREDICTION_TYPES)}")
    if config["timestep_spacing"] not in SPACINGS:
        raise ValueError(f"timestep_spacing={config['timestep_spacing']!r} is not supported; "
                         f"choose one of {', '.join(SPACINGS)}")
    if config["rescale_betas_zero_snr"]:
        raise ValueError("rescale_betas_zero_snr=True is not supported by FastDDPMScheduler")


def setup_from_diffusers_config(config: Mapping, *, sample_shape: Optional[tuple] = None,
                                num_class_embeds: Optional[int] = None) -> DiffusionSetup:
    """The DiffusionSetup of a diffusers DDPMScheduler / DDIMScheduler config (keys diffusers' defaults fill where
    missing): β built as diffusers builds it (NoiseSchedule.from_diffusers), its options under the same names.
    ValueError for a config FastDDPMScheduler cannot reproduce (check_scheduler_config). The multistep solvers'
    options (a DPMSolverMultistepScheduler or UniPCMultistepScheduler config's, or what
    DiffusionSetup.to_diffusers_config wrote) are read where present;
    one FastSampler does not have is a ValueError naming it."""
    # None where a key is unset (a DPMSolverMultistepScheduler's variance_type): the default
    values = {**DEFAULT_CONFIG, **{k: v for k, v in config.items() if k in DEFAULT_CONFIG and v is not None}}
    check_scheduler_config(values)
    # (thresholding is DDPMScheduler's key too, refused above: a DDPM step of ours does not threshold)
    solver_options = {name: config[name] for name in SOLVER_DEFAULTS if name in config
                      and name not in THRESHOLDING_DEFAULTS}
    # solver_type names two things in diffusers: UniPC's B(h) ("bh1", "bh2", ours) and DPM-Solver++'s second-order
    # form ("midpoint", the one our DPM-Solver++ takes; "heun" it does not)
    if solver_options.get("solver_type") == "midpoint":
        del solver_options["solver_type"]
    elif solver_options.get("solver_type") == "heun":
        raise ValueError("solver_type='heun' (DPM-Solver++'s Heun form) is not supported: FastSampler's DPM-Solver++ "
                         "takes the midpoint form (solver_type='midpoint')")
    if "disable_corrector" in solver_options and isinstance(solver_options["disable_corrector"], list):
        solver_options["disable_corrector"] = tuple(solver_options["disable_corrector"])
    return DiffusionSetup.from_schedule(
        NoiseSchedule.from_diffusers(values), prediction_type=values["prediction_type"],
        variance_type=values["variance_type"], clip_sample=bool(values["clip_sample"]),
        clip_sample_range=float(values["clip_sample_range"]), timestep_spacing=values["timestep_spacing"],
        steps_offset=int(values["steps_offset"]), set_alpha_to_one=bool(config.get("set_alpha_to_one", True)),
        sample_shape=sample_shape, num_class_embeds=num_class_embeds, **solver_options)
