"""FastSampler: DDPM, respaced DDPM, DDIM, DPM-Solver++ and UniPC sampling with a compiled bf16 channels-last model and
CUDA graphs.

    sampler = ddpm_fast.FastSampler(model, ddpm_fast.NoiseSchedule.linear(1000), sample_shape=(3, 32, 32))
    images = sampler.sample(16, seed=0)                          # float32 in [-1, 1]
    images = sampler.sample(16, seed=0, num_inference_steps=50, method="ddim")
    images = sampler.sample(4, seed=0, class_labels=[3, 3, 5, 5], guidance_scale=2.0)   # classifier-free guidance

On a GPU the model runs in bf16 and channels-last, compiled with torch.compile(fullgraph=True), and each reverse
step — model, fused update, in-kernel noise — is captured in a CUDA graph on static buffers, then replayed T times
with no host sync. x_t stays float32 between steps. On a CPU the same API runs the same steps eagerly.

A call reads top to bottom: `sample` checks its arguments into a ChainRequest, `_run` gets the runner of its batch
size and step options from the fast path (fast_path.py: layout, compile, CUDA graphs, built once and cached), puts
x_T and the labels into the runner's static buffers (chain.py's rules), runs the steps and writes the report.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from ..checks import Naming, ParameterError, check_disable_corrector, check_positive_float, python_name
from ..data.images import to_uint8
from ..diffusion_setup import DiffusionSetup, check_null_class_label, model_class_count
from ..diffusion import check_sample_range, seed_tensor
from ..models.output import unwrap_model_output
from ..models.pt2_package import PT2Model
from ..schedule import NoiseSchedule
from ..vocabulary import OUTPUT_TYPES
from .chain import check_latents, initial_sample
from .distributed import resolve_device
from .fast_path import FastPath, FastPathFallbackWarning
from .guidance import checked_labels, conditioning_for, named_labels
from .loop import ChainBuffers
from .options import SamplerOptions
from .plan import SamplingPlan, build_plan, check_step_choices, planned_timesteps
from .progress import progress_bar

__all__ = ["ChainRequest", "FastPathFallbackWarning", "FastSampler", "SamplingReport"]


@dataclass
class SamplingReport:
    """What the last `sample` call cost and what actually ran.

    setup_seconds: compile, warm-up and graph capture done by that call (0 when its graphs were cached);
    sampling_seconds: the T-step loop alone. compiled: the step ran under torch.compile; cuda_graphs: the steps were
    replayed from CUDA graphs; graphs_captured: how many graphs this batch size's steps hold (k-step and 1-step);
    graph_replays: replays this call launched; fallbacks: each fast path the steps of this call run without, with why
    (empty when they run as the sampler was built); compile_reason: why the steps ran compiled or eager (on a CPU
    the default compiles only a chain long enough to pay for it, see fast_path.CPU_COMPILE_MIN_EAGER_SECONDS), and
    compile_hint the option that would compile them ("compile=True") when the CPU policy kept them eager;
    compile_decision says both; channels_last: the model ran NHWC.
    """

    batch_size: int
    num_steps: int
    method: str
    setup_seconds: float
    compiled: bool = False
    cuda_graphs: bool = False
    graphs_captured: int = 0
    graph_replays: int = 0
    fallbacks: tuple[str, ...] = ()
    compile_reason: str = ""
    compile_hint: Optional[str] = None
    channels_last: bool = False
    _start: Any = field(default=None, repr=False)
    _end: Any = field(default=None, repr=False)
    _seconds: Optional[float] = field(default=None, repr=False)

    @property
    def compile_decision(self) -> str:
        return self.describe_compile_decision()

    def describe_compile_decision(self, naming: Naming = python_name) -> str:
        """compile_reason, and the option that forces a compile named by `naming` (the command line: its flag)."""
        return self.compile_reason + (f" ({naming(self.compile_hint)} forces it)" if self.compile_hint else "")

    @property
    def fell_back(self) -> bool:
        """True when this call ran without a fast path its sampler was built to use."""
        return bool(self.fallbacks)

    @property
    def sampling_seconds(self) -> float:
        if self._seconds is None:  # CUDA events: read on first use, so the report adds no wait of its own
            self._end.synchronize()
            self._seconds = self._start.elapsed_time(self._end) / 1e3
        return self._seconds

    @property
    def images_per_second(self) -> float:
        seconds = self.sampling_seconds
        return self.batch_size / seconds if self.batch_size and seconds > 0 else 0.0

    def __repr__(self) -> str:
        # The figures a user prints the report for (sampling_seconds, images_per_second: properties, not fields)
        # right after setup_seconds; on CUDA this reads the events, a wait only a print of the report pays.
        shown = []
        for item in fields(self):
            if not item.repr:
                continue
            value = getattr(self, item.name)
            shown.append(f"{item.name}={value:.4g}" if isinstance(value, float) else f"{item.name}={value!r}")
            if item.name == "setup_seconds":
                shown += [f"sampling_seconds={self.sampling_seconds:.4g}",
                          f"images_per_second={self.images_per_second:.4g}"]
        return f"{type(self).__name__}({', '.join(shown)})"

    __str__ = __repr__


class FastSampler:
    """Sample any ε-model (or x0- / v-model) fast. See the module docstring; arguments:

    model: our UNet, a diffusers UNet2DModel (its `.sample` is unwrapped), or any `model(x_t, t)` returning a tensor
        [B, C, H, W] ([B, 2C, H, W] with variance_type="learned_range"). The sampler works on its own converted copy
        of an nn.Module; the model passed in is left as it was. A pt2 package (ddpm_fast.models.pt2_package.PT2Model,
        what from_pretrained("x.pt2") loads) runs its compiled code as it is: its device and dtype are the defaults,
        another is a ValueError, and so is compile=True.
    schedule: the NoiseSchedule the model was trained with.
    sample_shape: (C, H, W); taken from the model's config (in_channels, sample_size) when omitted.
    prediction_type, variance_type, clip_sample, clip_sample_range: as in `ddpm_fast.p_step`.
    device: where to sample: "cpu", "cuda", "cuda:N", a torch.device or "auto" (CUDA when available); default the
        model's device. Anything else (mps, meta, ...) is a ValueError.
    dtype: the model's compute dtype; default bfloat16 on CUDA, float32 on a CPU (the images of the model as given;
        pass torch.bfloat16 for speed on CPUs with native bf16).
    channels_last: run the model NHWC. Default for modules: True on CUDA; on a CPU the faster layout for this model,
        timed once (a few eager model calls in each layout at the first batch size; NHWC must be 5 % faster), except
        that a chain that will run compiled (compile=True, or the CPU policy's verdict) keeps NCHW, which inductor's
        CPU code ran as fast or faster, and so does a first chain too short to pay for the timing (fewer than
        fast_path.LAYOUT_MIN_STEPS steps).
    compile: torch.compile(fullgraph=True) each step — model and fused update — (compile_mode is torch.compile's
        mode). Default None: always on CUDA; on a CPU only for a chain whose eager run would take at least
        fast_path.CPU_COMPILE_MIN_EAGER_SECONDS (timed on two eager steps; the compile is announced on the ``ddpm_fast``
        logger at INFO and counted in the report's setup_seconds). Left to default, a model that fails to compile
        runs eagerly with a FastPathFallbackWarning; compile=True raises.
    cuda_graphs: capture the steps in CUDA graphs; default on CUDA. Left to default, a step that cannot be captured
        runs without graphs with a FastPathFallbackWarning; cuda_graphs=True raises.
    steps_per_graph: steps captured per graph (fewer replay launches; same memory, as steps reuse one pool).
    max_cached_graphs: how many (batch size, method, noise, sample_offset) graph sets to keep; the least recently
        used goes first.
    timestep_spacing, steps_offset: how num_inference_steps < T picks timesteps ("linspace", "leading", "trailing").
    set_alpha_to_one: where a DDIM chain ends: at ᾱ = 1 (True, the default) or at ᾱ_0 (False), as diffusers'
        DDIMScheduler option of that name.
    null_class_label: the class label that means "no class" to a class-conditional model trained for classifier-free
        guidance (our Trainer's: the last class); needed by `sample(..., guidance_scale=)`. A model with a
        `config.num_class_embeds` (our UNet, diffusers' UNet2DModel) is called as model(x_t, t, class_labels=...).
    class_names: the name of each class (distinct strs, one per class, the null class left out), so that
        `sample(class_labels=...)` takes names; stored with the setup (from_pretrained reads a run's or model's own;
        the `class_names` attribute, None where unknown). TypeError / ValueError naming class_names otherwise.
    solver_order, lower_order_final, final_sigmas_type, euler_at_final, use_karras_sigmas, use_lu_lambdas,
        use_exponential_sigmas, solver_type, disable_corrector: the multistep solvers' options (methods "dpm_solver++",
        "sde_dpm_solver++" and "unipc"), with the names, defaults and meaning of diffusers'
        DPMSolverMultistepScheduler and UniPCMultistepScheduler: the multistep order (1, 2 or 3), which steps drop
        to first order (lower_order_final: DPM-Solver++, the last of a chain of fewer than 15 steps; UniPC, order ≤
        n − i at step i of any chain; euler_at_final, DPM-Solver++ only: the last of any chain), where the chain
        ends ("zero": σ = 0; "sigma_min": the schedule's σ at t = 0), and the σ spacing the solver steps on instead
        of the timestep spacing (Karras et al. 2022's ρ = 7; uniform λ, Lu et al. 2022; uniform log σ; at most one),
        the model called at the nearest timestep (ddpm_fast.sampling.dpm_solver); UniPC's B(h), solver_type "bh1" or
        "bh2", and disable_corrector, the step indices after which its corrector is skipped
        (ddpm_fast.sampling.unipc). They change the chain's table, not the step: one compiled step and one set of
        CUDA graphs serve them all. Stored with the setup (`setup`), like the options above.
    thresholding, dynamic_thresholding_ratio, sample_max_value: dynamic thresholding of the multistep solvers' x0
        (Saharia et al. 2022; diffusers' options of these names): per sample, s = the dynamic_thresholding_ratio
        quantile of |x0|, clamped to [1, sample_max_value], then x0 ← clamp(x0, −s, s)/s, computed on the device
        with no host sync (ddpm_fast.sampling.chain.thresholded_x0). thresholding=True with another method, or
        with clip_sample=True, is a ValueError.

    The options are checked once into `options` (a SamplerOptions); how the steps run — layout, compile, CUDA
    graphs, the runner cache — is `fast_path`'s (fast_path.py), and the chain's rules are chain.py's. What ran is
    reported after the fact: `last_report` (compiled, cuda_graphs, graphs_captured, graph_replays, fallbacks) and
    `fallbacks` (each fast path this sampler gave up, with the error).
    """

    def __init__(
        self,
        model: Union[nn.Module, Callable[[torch.Tensor, torch.Tensor], Any]],
        schedule: NoiseSchedule,
        sample_shape: Optional[tuple[int, int, int]] = None,
        *,
        prediction_type: str = "epsilon",
        variance_type: str = "fixed_small",
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        device: Union[str, torch.device, None] = None,
        dtype: Optional[torch.dtype] = None,
        channels_last: Optional[bool] = None,
        compile: Optional[bool] = None,
        compile_mode: Optional[str] = None,
        cuda_graphs: Optional[bool] = None,
        steps_per_graph: int = 10,
        max_cached_graphs: int = 4,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        set_alpha_to_one: bool = True,
        null_class_label: Optional[int] = None,
        solver_order: int = 2,
        lower_order_final: bool = True,
        final_sigmas_type: str = "zero",
        euler_at_final: bool = False,
        use_karras_sigmas: bool = False,
        use_lu_lambdas: bool = False,
        use_exponential_sigmas: bool = False,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        solver_type: str = "bh2",
        disable_corrector: Sequence[int] = (),
        class_names: Optional[Sequence[str]] = None,
    ):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a ddpm_fast.NoiseSchedule, got {type(schedule).__name__}")
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a callable model(x_t, t), got {type(model).__name__}")
        self.options = options = SamplerOptions(
            prediction_type=prediction_type, variance_type=variance_type, clip_sample=clip_sample,
            clip_sample_range=clip_sample_range, timestep_spacing=timestep_spacing, steps_offset=steps_offset,
            set_alpha_to_one=set_alpha_to_one, null_class_label=null_class_label, dtype=dtype,
            channels_last=channels_last, compile=compile, compile_mode=compile_mode, cuda_graphs=cuda_graphs,
            steps_per_graph=steps_per_graph, max_cached_graphs=max_cached_graphs, solver_order=solver_order,
            lower_order_final=lower_order_final, final_sigmas_type=final_sigmas_type, euler_at_final=euler_at_final,
            use_karras_sigmas=use_karras_sigmas, use_lu_lambdas=use_lu_lambdas,
            use_exponential_sigmas=use_exponential_sigmas, thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio, sample_max_value=sample_max_value,
            solver_type=solver_type, disable_corrector=disable_corrector)
        self.schedule = schedule
        if isinstance(model, PT2Model):
            _check_package_options(model, device, dtype, compile)
        self.device = _resolve_device(model, device)
        is_cuda = self.device.type == "cuda"
        if cuda_graphs and not is_cuda:
            raise ValueError(f"cuda_graphs=True needs a CUDA device; this sampler runs on {self.device}")
        if compile_mode in ("reduce-overhead", "max-autotune") and cuda_graphs is not False and is_cuda:
            raise ValueError(f"compile_mode={compile_mode!r} makes inductor capture CUDA graphs of its own inside "
                             "FastSampler's; use 'max-autotune-no-cudagraphs' or cuda_graphs=False")
        self.sample_shape = _resolve_sample_shape(model, sample_shape)
        config = getattr(model, "config", None)
        in_channels = getattr(config, "in_channels", None)
        if isinstance(in_channels, int) and self.sample_shape[0] != in_channels:
            raise ValueError(f"sample_shape {self.sample_shape}: the model takes {in_channels} channels (its config's "
                             "in_channels)")
        check_spatial = getattr(config, "check_spatial", None)  # our UNet's config
        if callable(check_spatial):
            check_spatial(*self.sample_shape[1:], "sample_shape")
        # The class count of a model whose config has one (None: unconditional, or a model that does not say).
        self.num_class_embeds = model_class_count(model)
        self._says_unconditional = self.num_class_embeds is None and hasattr(config, "num_class_embeds")
        check_null_class_label(null_class_label, self.num_class_embeds,
                               count_known=self.num_class_embeds is not None or self._says_unconditional)

        if dtype is None:  # a package's own dtype, else the device's default
            dtype = model.dtype if isinstance(model, PT2Model) else _default_dtype(self.device)
        self.dtype = dtype
        is_module = isinstance(model, nn.Module)
        initial_layout = channels_last if channels_last is not None else is_module
        self.model = _prepared_model(model, self.device, self.dtype, initial_layout)
        chain = ChainBuffers(build_plan(schedule), schedule.alphas_cumprod, self.device)
        self.fast_path = FastPath(self.model, _denoiser(self.model, self.dtype), self.sample_shape, options, chain,
                                  self.device, initial_layout,
                                  layout_pending=channels_last is None and is_module and not is_cuda,
                                  ahead_of_time=f"the model compiled ahead of time (pt2 package {model.path.name})"
                                  if isinstance(model, PT2Model) else None)
        self.last_report: Optional[SamplingReport] = None
        self.class_names: Optional[tuple[str, ...]] = None
        if class_names is not None:  # checked as the setup record checks it: distinct names, one per class
            if isinstance(class_names, str):
                raise TypeError(f"class_names must be a sequence of names, one per class, got the str {class_names!r}")
            self.class_names = replace(self.setup, class_names=tuple(class_names)).class_names

    # The setup and fast-path settings, read from the one checked record (and the fast path's current state).
    prediction_type = property(lambda self: self.options.prediction_type)
    variance_type = property(lambda self: self.options.variance_type)
    clip_sample = property(lambda self: self.options.clip_sample)
    clip_sample_range = property(lambda self: self.options.clip_sample_range)
    timestep_spacing = property(lambda self: self.options.timestep_spacing)
    steps_offset = property(lambda self: self.options.steps_offset)
    set_alpha_to_one = property(lambda self: self.options.set_alpha_to_one)
    null_class_label = property(lambda self: self.options.null_class_label)
    solver_order = property(lambda self: self.options.solver_order)
    lower_order_final = property(lambda self: self.options.lower_order_final)
    final_sigmas_type = property(lambda self: self.options.final_sigmas_type)
    euler_at_final = property(lambda self: self.options.euler_at_final)
    use_karras_sigmas = property(lambda self: self.options.use_karras_sigmas)
    use_lu_lambdas = property(lambda self: self.options.use_lu_lambdas)
    use_exponential_sigmas = property(lambda self: self.options.use_exponential_sigmas)
    thresholding = property(lambda self: self.options.thresholding)
    dynamic_thresholding_ratio = property(lambda self: self.options.dynamic_thresholding_ratio)
    sample_max_value = property(lambda self: self.options.sample_max_value)
    solver_type = property(lambda self: self.options.solver_type)
    disable_corrector = property(lambda self: self.options.disable_corrector)
    compile_mode = property(lambda self: self.options.compile_mode)
    steps_per_graph = property(lambda self: self.options.steps_per_graph)
    max_cached_graphs = property(lambda self: self.options.max_cached_graphs)
    channels_last = property(lambda self: self.fast_path.channels_last, doc="The model runs NHWC (on a CPU: as timed).")
    compiled = property(lambda self: self.fast_path.may_compile,
                        doc="Steps may run compiled: False after compile=False or a compile failure fell back.")
    cuda_graphs = property(lambda self: self.fast_path.cuda_graphs,
                           doc="Steps replay CUDA graphs: False off CUDA, with cuda_graphs=False or after a fallback.")
    fallbacks = property(lambda self: self.fast_path.fallbacks, doc="Each fast path given up, with the error.")

    # ------------------------------------------------------------------------------------------------ builders

    @classmethod
    def from_diffusers(cls, pipeline_or_path: Any, **options: Any) -> "FastSampler":
        """A whole diffusers DDPMPipeline — an instance or a local folder (unet/ + scheduler/) — as a FastSampler:
        our UNet with its weights, the scheduler's schedule, prediction type, variance type, clipping and spacing.
        Keyword arguments override (device=, dtype=, compile=, ...)."""
        from ..interop.diffusers_pipeline import sampler_arguments_from_diffusers  # the adapter sits above sampling

        arguments = sampler_arguments_from_diffusers(pipeline_or_path)
        return cls(**{**arguments, **options})

    @classmethod
    def from_denoising_diffusion_pytorch(cls, diffusion: Any, checkpoint: Union[str, os.PathLike, None] = None,
                                         weights: str = "ema", **options: Any) -> "FastSampler":
        """A sampler of a lucidrains denoising-diffusion-pytorch GaussianDiffusion: its Unet, β, objective, image
        size and x0 clipping, read from the object (ddpm_fast.interop.denoising_diffusion_pytorch). checkpoint: one
        of its Trainer's model-N.pt files, read with torch.load(weights_only=True) (`weights`: "ema" or "model").
        Keyword arguments are FastSampler's (device=, dtype=, ...); one that contradicts the GaussianDiffusion
        (schedule, prediction_type, clipping, ...) is a ValueError.

        `sample(..., **sample_arguments(diffusion))` runs the loop its sample() runs (p_sample_loop or ddim_sample)
        and, with generator=, gives its images in [-1, 1]; `unnormalize(images, diffusion)` maps them to its [0, 1]
        when it auto-normalizes. Its self-conditioning and its other diffusion classes are refused, by name."""
        from ..interop import denoising_diffusion_pytorch as lucidrains  # the adapter sits above sampling

        arguments = lucidrains.sampler_arguments_with(diffusion, checkpoint, weights, options)
        return cls(**{**arguments, **options})

    @classmethod
    def from_pretrained(cls, path_or_id: Union[str, os.PathLike], weights: Optional[str] = None, *,
                        override_setup: bool = False, schedule: Optional[NoiseSchedule] = None,
                        prediction_type: Optional[str] = None, variance_type: Optional[str] = None,
                        clip_sample: Optional[bool] = None, clip_sample_range: Optional[float] = None,
                        timestep_spacing: Optional[str] = None, steps_offset: Optional[int] = None,
                        set_alpha_to_one: Optional[bool] = None, null_class_label: Optional[int] = None,
                        solver_order: Optional[int] = None, lower_order_final: Optional[bool] = None,
                        final_sigmas_type: Optional[str] = None, euler_at_final: Optional[bool] = None,
                        use_karras_sigmas: Optional[bool] = None, use_lu_lambdas: Optional[bool] = None,
                        use_exponential_sigmas: Optional[bool] = None, thresholding: Optional[bool] = None,
                        dynamic_thresholding_ratio: Optional[float] = None, sample_max_value: Optional[float] = None,
                        solver_type: Optional[str] = None, disable_corrector: Optional[Sequence[int]] = None,
                        **options: Any) -> "FastSampler":
        """A sampler of a model and its stored diffusion setup, from any artefact (ddpm_fast.interop.pretrained):
        a training run folder (its last good checkpoint), one checkpoint folder, a UNet.save folder, a diffusers
        pipeline folder or a Hugging Face Hub id (the user's cache; HF_HUB_OFFLINE=1 works with a cached copy).

        weights: a training checkpoint's "ema" (default) or "model" weights. schedule, prediction_type, ...: checked
        against the stored setup — a different value raises SetupConflict (a ValueError naming both values) unless
        override_setup=True; where the source stores no setup, they are used, and a UserWarning names the defaults
        taken for the rest. Other keyword arguments are FastSampler's (device defaults to "auto": CUDA if present).
        """
        from ..interop.pretrained import sampler_arguments_from_pretrained  # the adapter sits above sampling

        given = {"schedule": schedule, "prediction_type": prediction_type, "variance_type": variance_type,
                 "clip_sample": clip_sample, "clip_sample_range": clip_sample_range,
                 "timestep_spacing": timestep_spacing, "steps_offset": steps_offset,
                 "set_alpha_to_one": set_alpha_to_one, "null_class_label": null_class_label,
                 "solver_order": solver_order, "lower_order_final": lower_order_final,
                 "final_sigmas_type": final_sigmas_type, "euler_at_final": euler_at_final,
                 "use_karras_sigmas": use_karras_sigmas, "use_lu_lambdas": use_lu_lambdas,
                 "use_exponential_sigmas": use_exponential_sigmas, "thresholding": thresholding,
                 "dynamic_thresholding_ratio": dynamic_thresholding_ratio, "sample_max_value": sample_max_value,
                 "solver_type": solver_type,
                 "disable_corrector": check_disable_corrector(disable_corrector) if disable_corrector is not None
                 else None}
        return cls(**sampler_arguments_from_pretrained(path_or_id, weights, given, override_setup, options))

    @property
    def setup(self):
        """The DiffusionSetup this sampler samples with (β, prediction and variance type, clipping, spacing, DDIM's
        final ᾱ, sample shape, class conditioning): what export_onnx and save_diffusers_pipeline store."""
        return DiffusionSetup.from_schedule(
            self.schedule, prediction_type=self.prediction_type, variance_type=self.variance_type,
            clip_sample=self.clip_sample, clip_sample_range=self.clip_sample_range,
            timestep_spacing=self.timestep_spacing, steps_offset=self.steps_offset,
            set_alpha_to_one=self.set_alpha_to_one, sample_shape=self.sample_shape,
            num_class_embeds=model_class_count(self.model), null_class_label=self.null_class_label,
            class_names=self.class_names, **asdict(self.options.solver_options()))

    # ---------------------------------------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample(
        self,
        batch_size: int,
        seed: Union[int, torch.Tensor, None] = None,
        num_inference_steps: Optional[int] = None,
        method: str = "ddpm",
        eta: float = 0.0,
        generator: Union[torch.Generator, None] = None,
        progress: bool = False,
        output_type: str = "tensor",
        sample_offset: int = 0,
        class_labels: Union[torch.Tensor, list, tuple, int, None] = None,
        guidance_scale: Optional[float] = None,
        timesteps: Optional[Sequence[int]] = None,
        use_clipped_model_output: bool = False,
        latents: Optional[torch.Tensor] = None,
    ):
        """`batch_size` samples: float32 [B, C, H, W] in [-1, 1] ("tensor"), [B, H, W, C] uint8 ("uint8") or a
        list of PIL images ("pil").

        seed: per-sample in-kernel noise (Philox keyed by seed, sample index, step): the first k samples of a batch
            of n equal a batch of k. generator: the noise is drawn with torch.randn from it instead, x_T first and
            then one draw per step but the last, as the seed's reference loop draws it (for comparisons; a CPU
            generator costs a host-to-device copy per step). Neither: a key drawn from torch's global generator.
        num_inference_steps: None runs every timestep; fewer gives respaced DDPM or DDIM on spaced timesteps.
        method: "ddpm" (ancestral), "ddim" (eta=0 deterministic), "dpm_solver++" (DPM-Solver++ 2M, Lu et al. 2022:
            the multistep ODE solver, by default of order 2, first order on the first and last step, as diffusers'
            DPMSolverMultistepScheduler with its defaults), "sde_dpm_solver++" (its SDE variant, noise as every
            method draws it) or "unipc" (UniPC, Zhao et al. 2023: the UniP predictor and the UniC corrector sharing
            each model call, by default bh2 of order 2, as diffusers' UniPCMultistepScheduler with its defaults); all
            three need num_inference_steps (5-25 is what they are for) and space it as those schedulers do
            (timestep_spacing, or the sampler's σ spacing; the solver options say which order each step takes and
            where the chain ends). progress: a tqdm bar of the steps.
        sample_offset: the global index of sample 0 (a shard of a larger batch draws that batch's noise).
        class_labels: the class of each sample (int64 [B], a list, or one int for all; a class name, a str, in place
            of any int where the sampler knows its class_names) for a class-conditional model;
            required by one (its null_class_label gives unconditional samples). guidance_scale: classifier-free
            guidance (Ho & Salimans 2022), ε = ε_uncond + w·(ε_cond − ε_uncond) in the model's own parameterisation:
            each step runs the model once on 2B samples (the labels, then the null class) and the fused step
            combines the halves; needs class_labels and null_class_label. None or 1 is plain conditional sampling
            (one pass of B); w = 0 gives the unconditional prediction (a learned variance stays the conditional
            half's, as in diffusers' guided pipelines). Guided or not, sample i's noise is the same.
        timesteps: a custom chain, strictly descending ints in [0, T), instead of num_inference_steps (diffusers'
            `timesteps=`); DDPM steps between them with the respaced posterior, DDIM ends it as set_alpha_to_one says,
            DPM-Solver++ and UniPC as final_sigmas_type says (not with a σ spacing: a ValueError naming timesteps).
        use_clipped_model_output: method="ddim" with clip_sample: re-derive ε from the clipped x0 (diffusers'
            DDIMScheduler.step option of that name; what lucidrains' ddim_sample does).
        latents: x_T to start the chain from instead of drawing it (diffusers' pipelines' `latents=`): float32
            [batch_size, *sample_shape] on the sampler's device, finite; copied, never modified. seed= / generator=
            still give the per-step noise (a generator's first draw is then the first step's z).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if seed is not None and generator is not None:
            raise ValueError("pass seed= or generator=, not both")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True or False, got {progress!r}")
        plan, eta, sample_offset = self._checked_plan(batch_size, method, eta, num_inference_steps, sample_offset,
                                                      timesteps, use_clipped_model_output)
        class_labels = named_labels(class_labels, lambda: self.setup)
        conditioning = conditioning_for(class_labels, guidance_scale, self.num_class_embeds, self.null_class_label,
                                        self._says_unconditional)
        labels = (checked_labels(class_labels, batch_size, self.num_class_embeds, self.device,
                                 self.null_class_label)
                  if conditioning != "none" else None)
        if latents is not None:
            latents = check_latents(latents, (batch_size, *self.sample_shape), self.device)
        key = None if generator is not None else seed_tensor(seed, self.device)
        request = ChainRequest(plan, batch_size, key, generator, eta=eta, sample_offset=sample_offset,
                               conditioning=conditioning, labels=labels, guidance_scale=guidance_scale,
                               use_clipped_model_output=use_clipped_model_output, latents=latents)
        with self._on_device():
            images = self._run(request, progress)
        return _convert(images, output_type)

    @torch.no_grad()
    def sample_plan(self, plan: SamplingPlan, batch_size: int, *, seed: Union[int, torch.Tensor, None] = None,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Run a SamplingPlan built by ddpm_fast.sampling.plan.build_plan — for one whose coefficient table comes
        from elsewhere (the seed's `sample` builds it from the caller's own vectors) — unconditionally, from drawn
        noise: float32 [batch_size, C, H, W] in [-1, 1]. seed / generator as in `sample`."""
        if not isinstance(plan, SamplingPlan):
            raise TypeError(f"plan must be a SamplingPlan, got {type(plan).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
        if seed is not None and generator is not None:
            raise ValueError("pass seed= or generator=, not both")
        key = None if generator is not None else seed_tensor(seed, self.device)
        with self._on_device():
            return self._run(ChainRequest(plan, batch_size, key, generator), progress=False)

    def timesteps(self, num_inference_steps: Optional[int] = None, method: str = "ddpm") -> list[int]:
        """The timesteps a chain of `num_inference_steps` (None: all T) visits, in sampling order, as `sample` plans
        it with this sampler's timestep_spacing and steps_offset (the one spacing function FastDDPMScheduler and
        OnnxSampler use too; DPM-Solver++ methods space theirs as diffusers' DPMSolverMultistepScheduler, and need
        num_inference_steps). ValueError / TypeError as `sample` raises them."""
        return planned_timesteps(self.schedule, method, num_inference_steps, self.timestep_spacing,
                                 self.steps_offset, self.options.solver_options())

    def _checked_plan(self, batch_size: int, method: str, eta: float, num_inference_steps: Optional[int],
                      sample_offset: int, timesteps: Optional[Sequence[int]] = None,
                      use_clipped_model_output: bool = False) -> tuple[SamplingPlan, float, int]:
        eta = check_positive_float("eta", eta, allow_zero=True)
        check_step_choices(method, eta, use_clipped_model_output, self.options.thresholding)
        sample_offset = check_sample_range(sample_offset, batch_size)
        plan = build_plan(self.schedule, method, num_inference_steps, self.timestep_spacing, self.steps_offset,
                          self.set_alpha_to_one, timesteps, self.options.solver_options())
        return plan, eta, sample_offset

    def _on_device(self):
        """Streams, graph pools, events and syncs act on the current CUDA device: make it the sampler's."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _run(self, request: "ChainRequest", progress: bool) -> torch.Tensor:
        """One chain: its runner (built, compiled and captured on first use: the report's setup), x_T and the static
        buffers, the steps, the images (float32 [B, C, H, W] in [-1, 1]) and the report."""
        plan, batch_size = request.plan, request.batch_size
        shape = (batch_size, *self.sample_shape)
        if batch_size == 0:
            self.last_report = SamplingReport(0, plan.num_steps, plan.method, 0.0, fallbacks=tuple(self.fallbacks),
                                              _seconds=0.0)
            return torch.empty(shape, device=self.device)

        options = self.options.step_options(
            plan.method, eta=request.eta, noise="philox" if request.key is not None else "given",
            sample_offset=request.sample_offset, conditioning=request.conditioning,
            use_clipped_model_output=request.use_clipped_model_output)
        setup_start = time.perf_counter()
        runner = self.fast_path.runner(batch_size, options, plan)
        setup_seconds = time.perf_counter() - setup_start

        state = runner.state
        runner.chain.load(plan)
        if request.key is not None:
            state.seed.copy_(request.key)
        # into the static buffer (the caller's latents are copied, never stepped in place)
        state.x.copy_(initial_sample(shape, self.device, request.key, request.generator, request.sample_offset,
                                     request.latents))
        state.step_index.zero_()
        if request.conditioning != "none":  # into the static buffers a captured graph reads
            state.class_labels[:batch_size].copy_(request.labels)
            if request.conditioning == "guided":
                state.class_labels[batch_size:].fill_(self.null_class_label)
                state.guidance.fill_(request.guidance_scale)

        clock = _Clock(self.device)
        bar = progress_bar(progress, plan.num_steps, f"{plan.method} steps")
        replays = runner.run(plan.num_steps, request.generator, self.device, bar.update if bar is not None else None)
        # A new NCHW tensor: state.x (maybe channels-last) is reused by the next call.
        images = state.x.clamp(-1.0, 1.0).contiguous()
        clock.stop()
        if bar is not None:
            bar.close()
        self.last_report = SamplingReport(
            batch_size, plan.num_steps, plan.method, setup_seconds, compiled=runner.compiled,
            cuda_graphs=replays > 0, graphs_captured=len(runner.graphs.graphs) if runner.graphs is not None else 0,
            graph_replays=replays, fallbacks=tuple(runner.fallbacks), compile_reason=runner.compile_decision,
            compile_hint=runner.compile_hint, channels_last=self.channels_last, **clock.parts())
        return images

    @torch.no_grad()
    def warm_up(self, batch_size: int, method: str = "ddpm", eta: float = 0.0,
                num_inference_steps: Optional[int] = None, sample_offset: int = 0,
                guidance_scale: Optional[float] = None, timesteps: Optional[Sequence[int]] = None,
                use_clipped_model_output: bool = False) -> float:
        """Compile, warm up and capture for seeded sampling at this batch size now (a class-conditional model: with
        class labels, guided when guidance_scale is given and not 1); returns the seconds it took (0 when already
        cached). sample() does this itself on first use."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        plan, eta, sample_offset = self._checked_plan(batch_size, method, eta, num_inference_steps, sample_offset,
                                                      timesteps, use_clipped_model_output)
        conditioning = "none"
        if self.num_class_embeds is not None or guidance_scale is not None:
            conditioning = conditioning_for(0, guidance_scale, self.num_class_embeds, self.null_class_label,
                                            self._says_unconditional)
        options = self.options.step_options(method, eta=eta, sample_offset=sample_offset, conditioning=conditioning,
                                            use_clipped_model_output=use_clipped_model_output)
        start = time.perf_counter()
        with self._on_device():
            self.fast_path.runner(batch_size, options, plan)
        return time.perf_counter() - start


@dataclass(frozen=True)
class ChainRequest:
    """One call's chain, checked by `sample`: the plan, B, the noise (key: the Philox seed tensor; None draws x_T and
    every z with torch.randn from `generator`, None: torch's global generator, in a reference loop's order), and
    what the call adds: DDIM's eta, the global index of sample 0, conditioning ("none" | "labels" | "guided") with
    its labels (int64 [B]) and guidance scale, DDIM's clipped-ε option, and x_T given as latents."""

    plan: SamplingPlan
    batch_size: int
    key: Optional[torch.Tensor]
    generator: Optional[torch.Generator]
    eta: float = 0.0
    sample_offset: int = 0
    conditioning: str = "none"
    labels: Optional[torch.Tensor] = None
    guidance_scale: Optional[float] = None
    use_clipped_model_output: bool = False
    latents: Optional[torch.Tensor] = None


class _Clock:
    """Wall time of the loop: CUDA events on a GPU (read lazily, no sync), perf_counter on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.start = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self.end.record()
        else:
            self.end = time.perf_counter()

    def parts(self) -> dict:
        if self.cuda:
            return {"_start": self.start, "_end": self.end}
        return {"_seconds": self.end - self.start}


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _resolve_device(model: Any, device: Union[str, torch.device, None]) -> torch.device:
    """The device given ("auto", cpu, cuda, cuda:N), else the model's; checked as every entry point checks it."""
    if isinstance(model, PT2Model) and (device is None or device == "auto"):
        return model.device  # where its code runs
    if device is None:
        tensor = None
        if isinstance(model, nn.Module):
            tensor = next(iter(model.parameters()), None)
            if tensor is None:
                tensor = next(iter(model.buffers()), None)
        device = tensor.device if tensor is not None else torch.device("cpu")
    return resolve_device(device)


def _check_package_options(model: PT2Model, device: Any, dtype: Optional[torch.dtype], compile: Optional[bool]) -> None:
    """A pt2 package fixes the device type and dtype it was compiled for, and is compiled already: a different
    device or dtype, or compile=True, is a ValueError naming it."""
    package = model.path.name
    if compile:
        raise ParameterError("compile=True", lambda name: f"{name('compile=True')}: {package} is a pt2 package, "
                                                          "compiled ahead of time; sample it without compiling again")
    if dtype is not None and dtype != model.dtype:
        given = str(dtype).replace("torch.", "")
        raise ParameterError("dtype", lambda name: f"{name(f'dtype={given}')}: {package} is compiled for "
                                                   f"{model.metadata['dtype']}; export a package in {given} for it")
    if device is not None and device != "auto" and resolve_device(device).type != model.device.type:
        given_device = str(device)
        raise ParameterError("device", lambda name: f"{name(f'device={given_device!r}')}: {package} is compiled "
                                                    f"for {model.device.type}; export a package for "
                                                    f"{torch.device(given_device).type} to sample there")


def _default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (the card's format); float32 elsewhere, so that a drop-in gives the model's own images."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _resolve_sample_shape(model: Any, sample_shape: Optional[tuple]) -> tuple[int, int, int]:
    if sample_shape is None:
        config = getattr(model, "config", None)
        channels, size = getattr(config, "in_channels", None), getattr(config, "sample_size", None)
        if isinstance(size, (tuple, list)) and len(size) == 2:
            size = tuple(size)
        elif isinstance(size, int):
            size = (size, size)
        if not isinstance(channels, int) or size is None:
            raise ValueError("sample_shape=(C, H, W) is required: the model has no config with in_channels and "
                             "sample_size")
        sample_shape = (channels, *size)
    if not (isinstance(sample_shape, (tuple, list)) and len(sample_shape) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sample_shape)):
        raise ValueError(f"sample_shape must be (C, H, W) of positive ints, got {sample_shape!r}")
    return tuple(sample_shape)  # type: ignore[return-value]


def _prepared_model(model: Any, device: torch.device, dtype: torch.dtype, channels_last: bool) -> Any:
    """A copy of an nn.Module on `device`, in `dtype` (and NHWC), in eval mode without gradients."""
    if not isinstance(model, nn.Module):
        return model
    model = copy.deepcopy(model)
    # dtype only when it changes something: diffusers models log a warning on every .to(dtype).
    same_dtype = all(t.dtype == dtype for t in itertools.chain(model.parameters(), model.buffers())
                     if t.is_floating_point())
    model = model.to(device=device) if same_dtype else model.to(device=device, dtype=dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval().requires_grad_(False)
    return model


def _denoiser(model: Any, dtype: torch.dtype) -> Callable[..., torch.Tensor]:
    """x_t (float32), t and the class labels (None: an unconditional call) → the model's prediction, with x_t cast
    to the model's dtype and diffusers' output (an object with .sample, or a tuple) unwrapped."""

    def denoise(x: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if class_labels is None:
            return unwrap_model_output(model(x.to(dtype), t))
        return unwrap_model_output(model(x.to(dtype), t, class_labels=class_labels))

    return denoise


def _convert(images: torch.Tensor, output_type: str):
    """[-1, 1] float32 → the requested output type."""
    if output_type == "tensor":
        return images
    pixels = to_uint8(images).permute(0, 2, 3, 1).contiguous()
    if output_type == "uint8":
        return pixels
    from PIL import Image

    array = pixels.cpu().numpy()
    return [Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image) for image in array]
