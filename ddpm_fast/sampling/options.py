"""FastSampler's options as one record, checked once when the sampler is built: the model's setup (what a step
computes) and the fast path's settings (how the steps run). Every step's StepOptions is derived from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..checks import check_step_setup
from ..vocabulary import DEFAULTS, MULTISTEP_METHODS, SOLVER_DEFAULTS
from .chain import StepOptions, x0_history
from .dpm_solver import SolverOptions

SAMPLER_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class SamplerOptions:
    """FastSampler's keyword arguments (its docstring says what each does), checked in __post_init__: ValueError /
    TypeError naming the argument. None means "the device's default" for dtype, channels_last, compile and
    cuda_graphs; the checks that need the device (cuda_graphs=True off CUDA) are FastSampler's."""

    prediction_type: str = DEFAULTS["prediction_type"]
    variance_type: str = DEFAULTS["variance_type"]
    clip_sample: bool = DEFAULTS["clip_sample"]
    clip_sample_range: float = DEFAULTS["clip_sample_range"]
    timestep_spacing: str = DEFAULTS["timestep_spacing"]
    steps_offset: int = DEFAULTS["steps_offset"]
    set_alpha_to_one: bool = DEFAULTS["set_alpha_to_one"]
    null_class_label: Optional[int] = DEFAULTS["null_class_label"]
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
    dtype: Optional[torch.dtype] = None
    channels_last: Optional[bool] = None
    compile: Optional[bool] = None
    compile_mode: Optional[str] = None
    cuda_graphs: Optional[bool] = None
    steps_per_graph: int = 10
    max_cached_graphs: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "clip_sample_range", check_step_setup(
            self.prediction_type, self.variance_type, self.clip_sample_range, self.timestep_spacing, self.steps_offset,
            self.set_alpha_to_one))
        for name in ("steps_per_graph", "max_cached_graphs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("clip_sample", "compile", "cuda_graphs", "channels_last"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{name} must be True, False or None (automatic), got {value!r}")
        object.__setattr__(self, "clip_sample", bool(self.clip_sample))  # None (not given): off
        object.__setattr__(self, "disable_corrector", self.solver_options().disable_corrector)  # checked here, once
        if self.thresholding and self.clip_sample:
            raise ValueError("clip_sample=True and thresholding=True both bound the predicted x0: choose one")
        if self.dtype is not None and self.dtype not in SAMPLER_DTYPES:
            raise TypeError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {self.dtype!r}")

    def solver_options(self) -> SolverOptions:
        """The multistep solvers' options (order, final step, σ spacing, UniPC's B(h) and corrector): what their
        chains' plans are built with."""
        return SolverOptions(**{name: getattr(self, name) for name in SOLVER_DEFAULTS})

    def step_options(self, method: str, *, eta: float = 0.0, noise: str = "philox", sample_offset: int = 0,
                     conditioning: str = "none", use_clipped_model_output: bool = False) -> StepOptions:
        """What one step of a chain computes with these options (the key its runner is cached under)."""
        return StepOptions(method=method, prediction_type=self.prediction_type, variance_type=self.variance_type,
                           clip_sample=self.clip_sample, clip_sample_range=self.clip_sample_range, eta=eta,
                           noise=noise, sample_offset=sample_offset, conditioning=conditioning,
                           use_clipped_model_output=use_clipped_model_output and self.clip_sample,
                           x0_history=x0_history(method, self.solver_order),
                           thresholding=(float(self.dynamic_thresholding_ratio), float(self.sample_max_value))
                           if method in MULTISTEP_METHODS and self.thresholding else None)
