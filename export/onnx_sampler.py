"""OnnxSampler: the sampling loop in ONNX Runtime, from an export_onnx file alone.

    sampler = OnnxSampler("step.onnx")                  # schedule and options from the file's metadata
    images = sampler.sample(16, seed=0)                 # float32 [16, C, H, W] in [-1, 1], like FastSampler's
    images = sampler.sample(4, seed=0, class_labels=[1, 1, 2, 2], guidance_scale=3.0)   # a class-conditional file

A step graph runs the whole reverse step in ONNX Runtime (T calls of one graph); a model graph runs the U-Net there
and the fused update in torch. Noise is drawn exactly as FastSampler draws it — Philox keyed by (seed, sample, step)
with seed=, torch.randn in order with generator= — so both samplers give the same images from the same noise.

With the CUDA provider every tensor stays on the GPU: inputs and outputs are bound to fixed torch buffers (I/O
binding), ONNX Runtime runs on torch's current stream, and `cuda_graph=True` lets it replay a captured CUDA graph.
Otherwise the CPU provider runs it, through the same bindings to CPU buffers.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import warnings
from typing import Optional, Sequence, Union

import numpy as np
import torch
from ddpm_fast.kernels import ops as _ops  # noqa: F401 — registers torch.ops.ddpm_fast.*
from ddpm_fast.vocabulary import (DPM_METHODS, MULTISTEP_METHODS, SOLVER_DEFAULTS, STEP_GRAPH_SOLVER_ROWS,
                                  UNIPC_ROWS)

from ddpm_fast.checks import check_positive_float
from ddpm_fast.diffusion import check_sample_range, seed_tensor
from ddpm_fast.diffusion_setup import DiffusionSetup, check_null_class_label
from ddpm_fast.sampling.fast_path import FastPathFallbackWarning
from ddpm_fast.sampling.chain import (StepOptions, check_latents, draws_noise_on, fused_step, guided_model_input,
                                      initial_sample, is_noiseless, noise_timesteps, step_noise, torch_noise,
                                      x0_history)
from ddpm_fast.sampling.loop import StepState, store_step_result
from ddpm_fast.sampling.guidance import checked_labels, conditioning_for, named_labels
from ddpm_fast.sampling.dpm_solver import SolverOptions
from ddpm_fast.sampling.progress import progress_bar
from ddpm_fast.sampling.plan import build_plan, check_step_choices, planned_timesteps
from ddpm_fast.schedule import NoiseSchedule

from .metadata import METADATA_KEY

_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}
_TORCH = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(int64)": torch.int64}
# Inputs without a batch dimension, and their shapes.
_UNBATCHED = {"guidance_scale": (1,), "solver_coefficients": (STEP_GRAPH_SOLVER_ROWS,),
              "unipc_coefficients": (len(UNIPC_ROWS),)}
# The methods a step graph runs (the first is its default); a model graph runs every method.
_STEP_GRAPH_METHODS = {"ddpm_step": ("ddpm",), "ddim_step": ("ddim",), "dpm_solver_step": DPM_METHODS,
                       "unipc_step": ("unipc",)}
# A unipc_step graph's x0 history inputs, newest first.
_X0_HISTORY_INPUTS = ("prev_pred_original_sample", "prev_pred_original_sample_2", "prev_pred_original_sample_3")
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class OnnxProviderFallbackWarning(FastPathFallbackWarning):
    """ONNX Runtime could not start the CUDA provider an OnnxSampler asked for (its CUDA or cuDNN libraries missing,
    say), and the session runs on the CPU provider instead.

    Raised as a warning, once per sampler; the sampler's `fallbacks` says the same after the fact. A
    FastPathFallbackWarning, so `warnings.simplefilter("error", ddpm_fast.FastPathFallbackWarning)` turns every
    fallback of either sampler into an error.
    """


class OnnxSampler:
    """Sample with an ONNX file written by `export_onnx`.

    schedule: overrides the schedule stored in the file (required when the file has none).
    providers: ONNX Runtime providers; default the CUDA provider when onnxruntime has it and torch sees a GPU,
        else the CPU provider. When the CUDA provider was asked for but ONNX Runtime could not start it, the
        session runs on the CPU with an OnnxProviderFallbackWarning, and `fallbacks` (a tuple of str, empty when
        the session runs as asked) says why; `provider` is the provider the session runs on.
    cuda_graph: let the CUDA provider capture and replay the graph (static shapes: one batch size per sampler).
    session_options: an onnxruntime.SessionOptions (threads, optimisation level, ...).
    null_class_label: the null class of a class-conditional model whose file stores none (one exported from a
        diffusers folder), so a model graph can run classifier-free guidance; a value contradicting the stored one
        is a ValueError. A step graph guides only if it was exported with the null class (its guidance_scale input).

    DPM-Solver++ chains take the options stored in the file (`solver_options`: solver_order, final_sigmas_type, a σ
    spacing, ...; a file written before they were stored: diffusers' defaults), from a model graph and from a
    dpm_solver_step graph alike: they live in the chain's table, whose column is that graph's solver_coefficients —
    except solver_order=3, whose second x0 history only a model graph carries (a step graph refuses it).
    """

    def __init__(self, path: Union[str, os.PathLike], schedule: Optional[NoiseSchedule] = None,
                 providers: Optional[Sequence] = None, *, cuda_graph: bool = False, device_id: int = 0,
                 session_options=None, null_class_label: Optional[int] = None):
        import onnxruntime as ort

        path = pathlib.Path(path)
        if path.is_dir():
            raise ValueError(f"{path} is a folder; expected an ONNX file written by export_onnx")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        if providers is None:
            providers = [CUDA, CPU] if CUDA in ort.get_available_providers() and torch.cuda.is_available() else [CPU]
        providers = [(p, {}) if isinstance(p, str) else (p[0], dict(p[1])) for p in providers]
        cuda_options = next((options for name, options in providers if name == CUDA), None)
        if cuda_options is not None:
            device_id = int(cuda_options.get("device_id", device_id))
        # ONNX Runtime and torch share one side stream: no cross-stream syncs around the bound buffers, and a CUDA
        # graph can be captured (never on the legacy default stream, whose handle is 0).
        self.stream = torch.cuda.Stream(device_id) if cuda_options is not None and torch.cuda.is_available() else None
        providers = [self._with_options(name, options, cuda_graph, device_id, self.stream)
                     for name, options in providers]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=session_options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for unreadable files
            if _uses_contrib_ops(path):
                raise ValueError(f"{path} uses ONNX Runtime's CUDA contrib ops (GroupNorm, NhwcConv): run it with "
                                 f"the CUDAExecutionProvider, or export without contrib_ops") from None
            raise ValueError(f"{path}: not a loadable ONNX model ({type(error).__name__}: {error})") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise ValueError(f"{path}: no ddpm_fast metadata (export the model with ddpm_fast.export.export_onnx)")
        self.metadata = json.loads(raw)
        self.path = path
        self.graph = self.metadata["graph"]
        # How a shorter chain picks its timesteps and where DDIM ends, as the file's source sampled (files written
        # before these were stored sampled "linspace", offset 0, ending at ᾱ = 1).
        self.timestep_spacing = self.metadata.get("timestep_spacing", "linspace")
        self.steps_offset = int(self.metadata.get("steps_offset", 0))
        self.set_alpha_to_one = bool(self.metadata.get("set_alpha_to_one", True))
        # the multistep solvers' options (a file that stores none: diffusers' defaults)
        self.solver_options = SolverOptions(**{name: self.metadata.get(name, default)
                                               for name, default in SOLVER_DEFAULTS.items()})
        self.sample_shape = tuple(self.metadata["sample_shape"])
        if schedule is None:
            stored = self.metadata.get("schedule")
            if stored is None:
                raise ValueError(f"{path} stores no schedule: pass schedule=")
            schedule = NoiseSchedule.from_betas(stored["betas"])
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a ddpm_fast.NoiseSchedule, got {type(schedule).__name__}")
        stored = self.metadata.get("schedule")
        if self.graph != "model" and stored is not None and not torch.equal(
                schedule.betas, torch.tensor(stored["betas"], dtype=torch.float64)):
            raise ValueError(f"{path} is a {self.graph} graph with its schedule baked in; schedule= must be that "
                             "schedule (export again to sample another)")
        self.schedule = schedule
        self.provider = self.session.get_providers()[0]
        self.uses_cuda = self.provider == CUDA
        self.fallbacks: tuple[str, ...] = ()
        if not self.uses_cuda:  # ONNX Runtime fell back to the CPU (a CUDA provider that failed to load)
            self.stream = None
            if cuda_options is not None:  # asked for, and silently dropped by ONNX Runtime: say so, as FastSampler does
                reason = (f"ONNX Runtime could not start the {CUDA} (its log above says why: CUDA or cuDNN "
                          f"libraries, usually) and runs {path.name} on the {self.provider}: sampling runs on the CPU")
                self.fallbacks = (reason,)
                warnings.warn(reason, OnnxProviderFallbackWarning, stacklevel=2)
        # Without this, the CUDA provider synchronises the host with its stream after every run (every step).
        self._run_options = ort.RunOptions()
        if self.uses_cuda:
            self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        self.device = torch.device("cuda", device_id) if self.uses_cuda else torch.device("cpu")
        self.cuda_graph = bool(cuda_graph) and self.uses_cuda
        self.inputs = {node.name: node for node in self.session.get_inputs()}
        self.outputs = [node.name for node in self.session.get_outputs()]
        # Class conditioning as the file stores it: a class_labels input, and the null class guidance uses.
        setup = self.metadata.get("setup") or {}
        self.num_class_embeds = setup.get("num_class_embeds") if "class_labels" in self.inputs else None
        self.null_class_label = setup.get("null_class_label") if "class_labels" in self.inputs else None
        # the names of the classes, where the file stores them: class_labels may give names
        self.class_names = tuple(setup["class_names"]) if setup.get("class_names") else None
        if null_class_label is not None:
            if self.null_class_label is not None and null_class_label != self.null_class_label:
                raise ValueError(f"null_class_label={null_class_label} contradicts the {self.null_class_label} "
                                 f"stored in {path}")
            check_null_class_label(null_class_label, self.num_class_embeds)
            self.null_class_label = null_class_label
        self._buffers: dict[int, dict[str, torch.Tensor]] = {}

    @staticmethod
    def _with_options(provider: str, options: dict, cuda_graph: bool, device_id: int, stream):
        if provider != CUDA:
            return (provider, options) if options else provider
        options = {**options, "device_id": str(device_id)}
        if stream is not None:
            options["user_compute_stream"] = str(stream.cuda_stream)
        if cuda_graph:
            options["enable_cuda_graph"] = "1"
        return (CUDA, options)

    # ------------------------------------------------------------------------------------------------- running

    def run(self, **inputs: torch.Tensor) -> Union[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One call of the graph on torch tensors (checked against the graph's inputs), returning its output, or its
        outputs as a tuple in the file's order where it has several (a dpm_solver_step graph: prev_sample,
        pred_original_sample, the next step's prev_pred_original_sample)."""
        result: list = []
        with self._on_stream(result):
            result.append(self._run_once(inputs))
        return result[0]

    def _run_once(self, inputs: dict) -> torch.Tensor:
        self._check_inputs(inputs)
        batch, *spatial = inputs["sample"].shape[0], *inputs["sample"].shape[2:]
        buffers = self._bind(batch, tuple(spatial))
        for name, value in inputs.items():
            buffers[name].copy_(value)
        self._run(buffers)
        outputs = tuple(buffers[name].clone() for name in self.outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def _check_inputs(self, inputs: dict) -> None:
        missing, unknown = set(self.inputs) - set(inputs), set(inputs) - set(self.inputs)
        if missing or unknown:
            raise ValueError(f"{self.graph} graph inputs are {', '.join(self.inputs)}; missing "
                             f"{sorted(missing) or 'none'}, unknown {sorted(unknown) or 'none'}")
        batch = inputs["sample"].shape[0] if isinstance(inputs["sample"], torch.Tensor) else None
        for name, node in self.inputs.items():
            value = inputs[name]
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
            if value.dtype != _TORCH[node.type]:
                raise TypeError(f"{name} must have dtype {_TORCH[node.type]}, got {value.dtype}")
            if name in _UNBATCHED:
                if value.shape != _UNBATCHED[name]:
                    raise ValueError(f"{name} must have shape {_UNBATCHED[name]}, got {tuple(value.shape)}")
                continue
            if value.dim() != len(node.shape) or value.shape[0] != batch:
                raise ValueError(f"{name} must have {len(node.shape)} dimensions and the batch size {batch} of "
                                 f"sample, got shape {tuple(value.shape)}")
            for axis, (size, expected) in enumerate(zip(value.shape, node.shape)):
                if isinstance(expected, int) and size != expected:
                    raise ValueError(f"{name} must have size {expected} in dimension {axis}, got {tuple(value.shape)}")
        self._check_spatial(tuple(inputs["sample"].shape[2:]))
        # values too (one host sync, at this one-call boundary; sample()'s loop never comes here)
        total, t = self.schedule.num_timesteps, inputs["timestep"]
        low, high = (int(v) for v in t.aminmax())
        if low < 0 or high >= total:
            raise ValueError(f"timestep must lie in [0, {total}), got values in [{low}, {high}]")
        if "prev_timestep" in inputs and bool(((inputs["prev_timestep"] < -1) | (inputs["prev_timestep"] >= t)).any()):
            raise ValueError("prev_timestep must lie in [-1, timestep) for every sample (-1 ends the chain)")
        if "class_labels" in inputs and self.num_class_embeds is not None:
            low, high = (int(v) for v in inputs["class_labels"].aminmax())
            if low < 0 or high >= self.num_class_embeds:
                raise ValueError(f"class_labels must lie in [0, {self.num_class_embeds}), got values in [{low}, {high}]")

    def _check_spatial(self, spatial: tuple[int, int]) -> None:
        factor = self.metadata.get("spatial_factor") or 1
        if not self.metadata.get("dynamic_spatial") and spatial != self.sample_shape[1:]:
            raise ValueError(f"this file takes {self.sample_shape[1]}x{self.sample_shape[2]} images, got "
                             f"{spatial[0]}x{spatial[1]}")
        if spatial[0] % factor or spatial[1] % factor:
            raise ValueError(f"image height and width must be multiples of {factor}, got {spatial[0]}x{spatial[1]}")

    def _bind(self, batch: int, spatial: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Fixed torch buffers for every input and output at this batch size, bound once (ORT's CUDA graph needs
        the same addresses on every run)."""
        key = (batch, spatial)
        buffers = self._buffers.get(key)
        if buffers is not None:
            return buffers
        if self.cuda_graph and self._buffers:
            raise ValueError("cuda_graph=True captures one shape: make another OnnxSampler for another batch size")
        channels = self.sample_shape[0]
        buffers = {}
        for node in self.session.get_inputs():
            shape = (batch,) if node.type == "tensor(int64)" else (batch, channels, *spatial)
            if node.name in _UNBATCHED:
                shape = _UNBATCHED[node.name]
            buffers[node.name] = torch.zeros(shape, dtype=_TORCH[node.type], device=self.device)
        for node in self.session.get_outputs():
            out_channels = node.shape[1] if isinstance(node.shape[1], int) else channels
            buffers[node.name] = torch.zeros((batch, out_channels, *spatial), dtype=_TORCH[node.type],
                                             device=self.device)
        binding = self.session.io_binding()
        device_type = "cuda" if self.uses_cuda else "cpu"
        index = self.device.index or 0
        for node in self.session.get_inputs():
            tensor = buffers[node.name]
            binding.bind_input(node.name, device_type, index, _NUMPY[node.type], tuple(tensor.shape), tensor.data_ptr())
        for node in self.session.get_outputs():
            tensor = buffers[node.name]
            binding.bind_output(node.name, device_type, index, _NUMPY[node.type], tuple(tensor.shape),
                                tensor.data_ptr())
        buffers["_binding"] = binding  # type: ignore[assignment]
        self._buffers[key] = buffers
        return buffers

    def _run(self, buffers: dict) -> None:
        self.session.run_with_iobinding(buffers["_binding"], self._run_options)

    # ------------------------------------------------------------------------------------------------ sampling

    @contextlib.contextmanager
    def _on_stream(self, result: list):
        """Run torch's side of the loop on the stream ONNX Runtime uses, after what the caller already queued; then
        make the caller's stream wait for the result (result[0], set inside the block)."""
        if self.stream is None:
            yield
            return
        caller = torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            yield
        caller.wait_stream(self.stream)
        if result:
            result[0].record_stream(caller)  # the allocator must not reuse it while the caller's work is queued

    @torch.no_grad()
    def timesteps(self, num_inference_steps: Optional[int] = None, method: Optional[str] = None) -> list[int]:
        """The timesteps a chain of `num_inference_steps` (None: all T) visits, in sampling order, planned with the
        file's timestep_spacing and steps_offset as FastSampler.timesteps plans them. method: as sample() takes it
        (None: what sample() runs by default for this file: a step graph's own method, else "ddpm")."""
        if method is None:
            method = _STEP_GRAPH_METHODS.get(self.graph, ("ddpm",))[0]
        return planned_timesteps(self.schedule, method, num_inference_steps, self.timestep_spacing,
                                 self.steps_offset, self.solver_options)

    def sample(self, batch_size: int, seed: Union[int, torch.Tensor, None] = None,
               generator: Optional[torch.Generator] = None, num_inference_steps: Optional[int] = None,
               method: Optional[str] = None, eta: Optional[float] = None, sample_offset: int = 0,
               progress: bool = False, class_labels=None, guidance_scale: Optional[float] = None,
               latents: Optional[torch.Tensor] = None, timesteps: Optional[Sequence[int]] = None,
               use_clipped_model_output: bool = False) -> torch.Tensor:
        """`batch_size` images, float32 [B, C, H, W] in [-1, 1] on the sampler's device; the noise as FastSampler's
        (seed= Philox per sample, generator= torch.randn in order, neither a key from torch's generator).

        method: "ddpm", "ddim", "dpm_solver++", "sde_dpm_solver++" or "unipc" (as FastSampler's); a step graph
        fixes it (a DDPM step graph runs the full chain only; a DDIM one any num_inference_steps with its baked eta; a
        dpm_solver_step one either DPM-Solver++ method, "dpm_solver++" by default, any num_inference_steps; a
        unipc_step one "unipc", any num_inference_steps). A model
        graph runs any of them, with the fused update in torch.
        class_labels, guidance_scale: as FastSampler.sample's, for a file of a class-conditional model (its graphs
        take class_labels; names where its setup stores class_names, the `class_names` attribute; guidance needs the
        null class its setup stores). A model graph then runs on 2B samples
        (the labels, then the null class) with the guidance fused into the update, as FastSampler does; a step
        graph runs its own 2B model call and combination, and w = 1 (guidance_scale None) is the conditional model.
        latents: x_T to start from instead of drawing it, as FastSampler.sample takes it: float32 [batch_size,
        *sample_shape] on the sampler's device, finite; copied, never modified; seed= / generator= still give the
        per-step noise (a generator's first draw is then the first step's z).
        timesteps, use_clipped_model_output: as FastSampler.sample's (a custom chain instead of num_inference_steps;
        DDIM with clip_sample re-deriving ε from the clipped x0), checked by the same rules. A DDPM step graph bakes
        the full chain, so it takes no custom chain; a DDIM step graph bakes ε as the model predicts it, so
        use_clipped_model_output with the file's clip_sample needs a model graph.
        """
        result: list = []
        with self._on_stream(result):
            result.append(self._sample(batch_size, seed, generator, num_inference_steps, method, eta, sample_offset,
                                       progress, class_labels, guidance_scale, latents, timesteps,
                                       use_clipped_model_output))
        return result[0]

    def _sample(self, batch_size, seed, generator, num_inference_steps, method, eta, sample_offset, progress,
                class_labels=None, guidance_scale=None, latents=None, timesteps=None, use_clipped_model_output=False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if seed is not None and generator is not None:
            raise ValueError("pass seed= or generator=, not both")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if eta is not None:
            eta = check_positive_float("eta", eta, allow_zero=True)
        sample_offset = check_sample_range(sample_offset, batch_size)
        if latents is not None:
            latents = check_latents(latents, (batch_size, *self.sample_shape), self.device)
        class_labels = named_labels(class_labels, self._stored_setup)
        conditioning = conditioning_for(class_labels, guidance_scale, self.num_class_embeds, self.null_class_label,
                                        "class_labels" not in self.inputs)
        labels = (checked_labels(class_labels, batch_size, self.num_class_embeds, self.device,
                                 self.null_class_label)
                  if conditioning != "none" else None)
        if conditioning == "guided" and self.graph != "model" and "guidance_scale" not in self.inputs:
            raise ValueError(f"this {self.graph} graph was exported without the model's null class, so it cannot "
                             "guide: export it with null_class_label= (--null-class-label), or export a model graph")
        method, eta = self._method(method, eta, num_inference_steps, timesteps)
        check_step_choices(method, eta, use_clipped_model_output, self.solver_options.thresholding)
        if self.solver_options.thresholding and self.graph in ("dpm_solver_step", "unipc_step"):
            raise ValueError(f"this {self.graph} graph computes the update from the model's own x0, and the "
                             "file's thresholding=True thresholds it: export a model graph (graph='model') to "
                             "sample it")
        clipped_output = use_clipped_model_output and bool(self.metadata["clip_sample"])  # as FastSampler: else a no-op
        if clipped_output and self.graph == "ddim_step":
            raise ValueError("this ddim_step graph computes DDIM from the model's own ε: use_clipped_model_output "
                             "with its clip_sample needs a model graph (export graph='model')")
        if self.graph == "dpm_solver_step" and self.solver_options.solver_order == 3:
            raise ValueError("this dpm_solver_step graph carries one previous x0 estimate, and the file's "
                             "solver_order=3 needs two: export a model graph (graph='model') to sample it")
        plan = build_plan(self.schedule, method, num_inference_steps, self.timestep_spacing, self.steps_offset,
                          self.set_alpha_to_one, timesteps, self.solver_options)
        shape = (batch_size, *self.sample_shape)
        key = None if generator is not None else seed_tensor(seed, self.device)
        guided_model = self.graph == "model" and conditioning == "guided"  # the model graph runs 2B samples
        buffers = self._bind(2 * batch_size if guided_model else batch_size, self.sample_shape[1:])
        guidance = None
        if labels is not None:
            if guided_model:
                buffers["class_labels"].copy_(torch.cat([labels, torch.full_like(labels, self.null_class_label)]))
                guidance = torch.tensor([guidance_scale], dtype=torch.float32, device=self.device)
            else:
                buffers["class_labels"].copy_(labels)
            if "guidance_scale" in buffers:  # a step graph's own combination (w = 1: the conditional model)
                buffers["guidance_scale"].fill_(1.0 if guidance_scale is None else guidance_scale)
        x = torch.empty(shape, device=self.device)  # stepped in place: the caller's latents are copied
        x.copy_(initial_sample(shape, self.device, key, generator, sample_offset, latents))
        steps = plan.num_steps
        model_t = plan.model_timesteps[:steps].to(self.device)
        kernel_t = plan.kernel_steps[:steps].to(self.device)
        prev_t = plan.prev_timesteps[:steps].to(self.device)
        table = plan.table.to(self.device)
        # the multistep solvers: their per-step scalars, and the history their steps carry (StepState's buffers)
        solver_table = plan.solver_table.to(self.device) if method in MULTISTEP_METHODS else None
        history = StepState.allocate(shape, self.device, False, "none", multistep=method in MULTISTEP_METHODS,
                                     x0_history=x0_history(method, self.solver_options.solver_order),
                                     last_sample=method == "unipc")
        alphas = self.schedule.alphas_cumprod.to(self.device)
        noise_t = noise_timesteps(method, model_t, kernel_t)  # what FastSampler's steps key their z by
        options = StepOptions(method=method, prediction_type=self.metadata["prediction_type"],
                              variance_type=self.metadata["variance_type"], clip_sample=self.metadata["clip_sample"],
                              clip_sample_range=self.metadata["clip_sample_range"], eta=eta, noise="given",
                              sample_offset=0,  # z comes drawn for the global samples: the op adds no offset
                              use_clipped_model_output=clipped_output,
                              x0_history=x0_history(method, self.solver_options.solver_order),
                              thresholding=(self.solver_options.dynamic_thresholding_ratio,
                                            self.solver_options.sample_max_value)
                              if self.solver_options.thresholding and method in MULTISTEP_METHODS else None)
        bar = progress_bar(progress, steps, "onnx steps")
        for i in range(steps):
            t = model_t[i].expand(batch_size)
            if is_noiseless(method, eta):  # DDIM at η = 0, the DPM-Solver++ ODE, UniPC: no z
                z = None
            elif key is not None:
                z = step_noise(shape, key, noise_t[i].expand(batch_size), sample_offset)
            elif draws_noise_on(method, i, steps):
                z = torch_noise(shape, generator, self.device)
            else:  # the last step adds no noise
                z = torch.zeros(shape, device=self.device)
            if self.graph == "model":
                x = self._model_step(buffers, options, x, t, kernel_t[i].expand(batch_size),
                                     prev_t[i].expand(batch_size), z, table, alphas, guidance, solver_table,
                                     history)
            else:
                buffers["sample"].copy_(x)
                buffers["timestep"].copy_(t)
                if "noise" in buffers:  # (a unipc_step graph takes none)
                    if z is None:
                        buffers["noise"].zero_()
                    else:
                        buffers["noise"].copy_(z)
                if self.graph == "ddim_step":
                    buffers["prev_timestep"].copy_(prev_t[i].expand(batch_size))
                if self.graph == "dpm_solver_step":  # this step's column of the chain's table, and the last x0
                    buffers["solver_coefficients"].copy_(solver_table[:STEP_GRAPH_SOLVER_ROWS, i])
                    buffers["prev_pred_original_sample"].copy_(history.x0_prev)
                elif self.graph == "unipc_step":  # its column, the last corrected sample and the x0 history
                    buffers["unipc_coefficients"].copy_(solver_table[:len(UNIPC_ROWS), i])
                    buffers["last_sample"].copy_(history.last_sample)
                    for name, earlier in zip(_X0_HISTORY_INPUTS, (history.x0_prev, history.x0_prev2,
                                                                  history.x0_prev3)):
                        if earlier is None:
                            buffers[name].zero_()
                        else:
                            buffers[name].copy_(earlier)
                self._run(buffers)
                x.copy_(buffers["prev_sample"])
                if self.graph == "dpm_solver_step":
                    history.x0_prev.copy_(buffers["pred_original_sample"])
                elif self.graph == "unipc_step":
                    store_step_result(history, (buffers["prev_sample"], buffers["corrected_sample"],
                                                buffers["pred_original_sample"]))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return x.clamp(-1.0, 1.0)

    def _stored_setup(self) -> Optional[DiffusionSetup]:
        """The setup record the file stores (None for a file written without one)."""
        stored = self.metadata.get("setup")
        return DiffusionSetup.from_dict(stored, f"{self.path} (setup)") if stored else None

    def _method(self, method: Optional[str], eta: Optional[float], num_inference_steps: Optional[int],
                timesteps: Optional[Sequence[int]] = None):
        methods = _STEP_GRAPH_METHODS.get(self.graph)
        if methods is not None:
            if method is not None and method not in methods:
                raise ValueError(f"this file is a {self.graph} graph: method={method!r} is not available (it runs "
                                 f"{', '.join(methods)})")
            fixed = method or methods[0]
            if eta is not None and fixed == "ddim" and eta != self.metadata["eta"]:
                raise ValueError(f"this DDIM step graph bakes eta={self.metadata['eta']}; export again for eta={eta}")
            if fixed == "ddpm" and (num_inference_steps not in (None, self.schedule.num_timesteps)
                                    or timesteps is not None):
                raise ValueError("a DDPM step graph bakes the full chain's coefficients: num_inference_steps and "
                                 "timesteps must be None (export a model graph to sample respaced chains)")
            method = fixed
        method = method or "ddpm"
        eta = float(self.metadata["eta"] if self.graph == "ddim_step" else (eta or 0.0))
        return method, eta  # the rules every sampler shares are check_step_choices

    def _model_step(self, buffers, options: StepOptions, x, t, kernel_t, prev_t, z, table, alphas,
                    guidance: Optional[torch.Tensor] = None, solver_table: Optional[torch.Tensor] = None,
                    history: Optional[StepState] = None) -> torch.Tensor:
        """The model graph on x (on [x, x] when guided: buffers of 2B, labels then the null class), then the fused
        update in torch (the multistep solvers: their table, and `history`'s buffers, advanced in place)."""
        x_model, t_model = guided_model_input(x, t, guidance is not None)
        buffers["sample"].copy_(x_model)
        buffers["timestep"].copy_(t_model)
        self._run(buffers)
        result = fused_step(options, buffers["model_output"], x, t.contiguous(), kernel_t.contiguous(),
                            prev_t.contiguous(), table=table, alphas_cumprod=alphas, solver_table=solver_table,
                            x0_prev=history.x0_prev, x0_prev2=history.x0_prev2, x0_prev3=history.x0_prev3,
                            last_sample=history.last_sample, noise=z, guidance=guidance)
        return store_step_result(history, result)


def _uses_contrib_ops(path: pathlib.Path) -> bool:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 — not ONNX at all: the caller's message says so
        return False
    raw = {prop.key: prop.value for prop in proto.metadata_props}.get(METADATA_KEY)
    return bool(raw) and bool(json.loads(raw).get("contrib_ops"))
