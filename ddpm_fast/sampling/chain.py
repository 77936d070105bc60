"""The rules of a sampling chain, written once. FastSampler, OnnxSampler and the seed's fast twins all run them, so
"same noise, same images" holds between them by construction.

- x_T: the given latents, else Philox noise keyed by (seed, sample index, STREAM_INITIAL) with seed=, else one
  torch.randn draw from the generator (torch's global one when none is given).
- z of a step: with seed=, Philox keyed by (seed, sample index, the step's noise timestep, STREAM_REVERSE_STEP) —
  drawn in-kernel, or by PhiloxPrefetch for eager CPU steps, or by step_noise for ONNX Runtime's steps; with a
  generator, torch.randn drawn before every step but the last (which adds none), and before the last too for the SDE
  solver (diffusers' SDE DPM-Solver++ draws it, scaled by σ = 0), as a reference loop draws it.
- no z at all for DDIM at η = 0, the DPM-Solver++ ODE and UniPC.
- one step: the model on x_t (on [x_t, x_t] with the labels, then the null class, when guided: Ho & Salimans 2022)
  and the fused op of the method — p_step (Ho et al. 2020), ddim_step (Song et al. 2020), dpm_solver_step
  (Lu et al. 2022) or unipc_step (Zhao et al. 2023) — which combines guidance's halves as it reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch

from ..kernels import ops as _ops  # noqa: F401 — registers torch.ops.ddpm_fast.*
from ..kernels.philox import philox_normal_reference
from ..kernels.reverse_step import column_rows, solver_data_prediction
from ..vocabulary import (DPM_METHODS, MULTISTEP_METHODS, PREDICTION_TYPES, SOLVER_ROW_INDEX, SOLVER_ROWS,
                          STREAM_INITIAL, STREAM_REVERSE_STEP, UNIPC_ROWS, VARIANCE_TYPES)


@dataclass(frozen=True)
class StepOptions:
    """What a step computes; everything here is baked into a captured graph (part of its cache key)."""

    method: str  # one of METHODS: "ddpm" | "ddim" | "dpm_solver++" | "sde_dpm_solver++" | "unipc"
    prediction_type: str
    variance_type: str
    clip_sample: bool
    clip_sample_range: float
    eta: float  # DDIM only
    noise: str  # "philox" (in-kernel, keyed by seed) | "given" (drawn by torch into a buffer between steps)
    sample_offset: int  # global index of sample 0, for the Philox keys of a shard
    conditioning: str = "none"  # "none" | "labels" (class labels to the model) | "guided" (classifier-free guidance)
    use_clipped_model_output: bool = False  # DDIM with clip_sample: ε re-derived from the clipped x0
    x0_history: int = 1  # the multistep solvers: how many previous x0 estimates a step reads (x0_history())
    thresholding: Optional[tuple[float, float]] = None  # multistep: (quantile, sample_max_value) of its x0


def x0_history(method: str, solver_order: int) -> int:
    """How many earlier x0 estimates a step of `method` reads: DPM-Solver++ one (two at solver_order 3), UniPC
    solver_order (its corrector looks one call further back than its predictor); 1 for the one-step methods, which
    read none."""
    if method == "unipc":
        return solver_order
    return 2 if method in DPM_METHODS and solver_order == 3 else 1


# --------------------------------------------------------------------------------------------------------- noise


def is_noiseless(method: str, eta: float = 0.0) -> bool:
    """Whether a chain's steps add no noise at all: DDIM with eta = 0 (σ·z = 0; a CPU step would spend ~130 integer
    ops drawing z), the DPM-Solver++ ODE and UniPC."""
    return (method == "ddim" and eta == 0.0) or method in ("dpm_solver++", "unipc")


def draws_noise_on(method: str, step_index: int, num_steps: int) -> bool:
    """Whether a generator-drawn chain draws z before step `step_index` of `num_steps`: every step but the last, which
    adds none — and the last too for the SDE solver, whose reference draws it (scaled by σ = 0 there), so the
    generator's stream stays where the reference's is."""
    return step_index < num_steps - 1 or method == "sde_dpm_solver++"


def torch_noise(shape: tuple[int, ...], generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """torch.randn drawn on the generator's own device (the stream a reference loop with that generator would see),
    or from the global generator of `device`; returned on `device`."""
    return torch.randn(shape, generator=generator,
                       device=generator.device if generator is not None else device).to(device)


def check_latents(latents: object, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The caller's x_T, checked at the public boundary: a float32 tensor of `shape` on `device`, all finite (one
    host sync, before any step runs). TypeError for a non-tensor, ValueError naming what was expected otherwise."""
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents must be a torch.Tensor (x_T, float32 {list(shape)}), got {type(latents).__name__}")
    if latents.dtype != torch.float32:
        raise ValueError(f"latents must be float32 (x_T stays float32 between steps), got "
                         f"{str(latents.dtype).replace('torch.', '')}")
    if tuple(latents.shape) != tuple(shape):
        raise ValueError(f"latents must have shape {list(shape)} ([batch_size, *sample_shape]), got "
                         f"{list(latents.shape)}")
    if latents.device != device:
        raise ValueError(f"latents is on {latents.device} but the sampler samples on {device}")
    if not bool(torch.isfinite(latents).all()):
        raise ValueError("latents contains NaN or infinite values")
    return latents


def initial_sample(shape: tuple[int, ...], device: torch.device, key: Optional[torch.Tensor],
                   generator: Optional[torch.Generator], sample_offset: int = 0,
                   latents: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x_T of a chain of `shape` (float32, on `device`): `latents` when given (checked by check_latents; returned
    as is, so the caller copies it into its own buffer), else Philox noise of `key` for samples sample_offset + i,
    else torch.randn from `generator` (the rules in the module docstring)."""
    if latents is not None:
        return latents
    if key is not None:
        starts = torch.zeros(shape[0], dtype=torch.int64, device=device)
        return torch.ops.ddpm_fast.philox_normal(key, starts, list(shape), sample_offset, STREAM_INITIAL, False)
    return torch_noise(shape, generator, device)


def noise_timesteps(method: str, model_timesteps: torch.Tensor, kernel_steps: torch.Tensor) -> torch.Tensor:
    """The timestep each step keys its Philox z by (as the fused kernels key it): DDPM's column of the chain's
    coefficient table, the other methods' model timestep."""
    return kernel_steps if method == "ddpm" else model_timesteps


def step_noise(shape: tuple[int, ...], key: torch.Tensor, timestep: torch.Tensor, sample_offset: int) -> torch.Tensor:
    """The z a fused step draws in-kernel for this key and noise timestep (int64 [B]), drawn outside the step: for a
    runtime (ONNX Runtime) that takes the noise as an input."""
    return torch.ops.ddpm_fast.philox_normal(key, timestep.contiguous(), list(shape), sample_offset,
                                             STREAM_REVERSE_STEP, False)


class PhiloxPrefetch:
    """The seeded z of an eager CPU chain, drawn `chunk` steps at a time into a noise buffer.

    A step's Philox noise is ~130 small integer ops, which at small batches costs a CPU step as much as several model
    layers; drawn for many steps in one call, it costs little. The values are the kernels' own: Philox keyed by
    (seed, sample_offset + i, the step's noise timestep, STREAM_REVERSE_STEP), the same z the step would draw itself.

    seed: int64 [1]; noise: float32 [B, C, H, W], filled in place; model_timesteps, kernel_steps: the chain's
    columns (int64 [T] buffers); last_timestep, last_column: the largest valid index of each (the kernels clamp to it).
    """

    def __init__(self, options: StepOptions, seed: torch.Tensor, noise: torch.Tensor, model_timesteps: torch.Tensor,
                 kernel_steps: torch.Tensor, last_timestep: int, last_column: int, chunk: int = 16):
        self.method, self.seed, self.noise, self.chunk = options.method, seed, noise, chunk
        self.steps = noise_timesteps(options.method, model_timesteps, kernel_steps)
        self.last = last_column if options.method == "ddpm" else last_timestep
        self.sample_index = torch.arange(noise.shape[0], device=noise.device) + options.sample_offset
        self._block: Optional[torch.Tensor] = None

    def fill(self, step_index: int, num_steps: int) -> None:
        """Put step `step_index`'s z into the noise buffer (drawing the next chunk first when it starts one)."""
        position = step_index % self.chunk
        if position == 0:
            count = min(self.chunk, num_steps - step_index)
            steps = self.steps[step_index:step_index + count].clamp(0, self.last)
            batch, shape = self.sample_index.shape[0], tuple(self.noise.shape)
            self._block = philox_normal_reference(
                self.seed, self.sample_index.repeat(count), steps.repeat_interleave(batch), STREAM_REVERSE_STEP,
                (count * batch, *shape[1:])).view(count, *shape)
        self.noise.copy_(self._block[position])


# ---------------------------------------------------------------------------------------------------------- step


def guided_model_input(x: torch.Tensor, t: torch.Tensor, guided: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """What the model is called on: (x_t, t), or with classifier-free guidance the conditional and the unconditional
    pass as one call of 2B, ([x_t, x_t], [t, t]) (the class labels then the null class go beside them)."""
    return (torch.cat([x, x]), torch.cat([t, t])) if guided else (x, t)


def fused_step(options: StepOptions, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
               kernel_t: torch.Tensor, prev_t: torch.Tensor, *, table: Optional[torch.Tensor] = None,
               alphas_cumprod: Optional[torch.Tensor] = None, solver_table: Optional[torch.Tensor] = None,
               x0_prev: Optional[torch.Tensor] = None, x0_prev2: Optional[torch.Tensor] = None,
               x0_prev3: Optional[torch.Tensor] = None, last_sample: Optional[torch.Tensor] = None,
               noise: Optional[torch.Tensor] = None, seed: Optional[torch.Tensor] = None,
               guidance: Optional[torch.Tensor] = None) -> Union[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One reverse step of `options.method` as one fused op: x_{t-1} (float32, x's layout); for DPM-Solver++ also
    this step's x0 estimate (the next step's x0_prev), for UniPC (x_next, this point's corrected sample, x0).

    model_output: [B, C', H, W] ([2B, ...] when guidance, a float32 [1] w, is given). t: int64 [B] model timesteps;
    kernel_t: DDPM's column of `table` (float32 [rows, T]) / DPM-Solver++'s column of `solver_table`; prev_t: DDIM's
    next timestep (-1 ends the chain), read with alphas_cumprod (float64 [T]). x0_prev, x0_prev2, x0_prev3: the
    multistep solvers' previous x0 estimates (read up to options.x0_history of them); UniPC's solver_table column is
    kernel_t too, and last_sample its previous corrected sample. noise: z float32 [B, C, H, W], or
    seed: the Philox key (int64 [1]) to draw it in-kernel, or neither (no noise).
    """
    prediction = PREDICTION_TYPES[options.prediction_type]
    if options.method == "ddpm":
        return torch.ops.ddpm_fast.p_step(
            model_output, kernel_t, x, table, noise, seed, options.sample_offset, prediction,
            VARIANCE_TYPES[options.variance_type], options.clip_sample, options.clip_sample_range, guidance)
    if options.method in MULTISTEP_METHODS:
        if options.thresholding is not None:  # the thresholded x0 goes to the fused step as an x0-model's output
            model_output = thresholded_x0(model_output, x, kernel_t, solver_table, prediction, guidance,
                                          *options.thresholding)
            prediction, guidance = PREDICTION_TYPES["sample"], None
        if options.method == "unipc":  # the table's leading rows are UniPC's
            return torch.ops.ddpm_fast.unipc_step(
                model_output, kernel_t, x, last_sample, x0_prev, x0_prev2 if options.x0_history >= 2 else None,
                x0_prev3 if options.x0_history == 3 else None, solver_table[:len(UNIPC_ROWS)], prediction,
                options.clip_sample, options.clip_sample_range, guidance)
        return torch.ops.ddpm_fast.dpm_solver_step(
            model_output, t, kernel_t, x, x0_prev, solver_table[:len(SOLVER_ROWS)], noise, seed,
            options.sample_offset, prediction, options.clip_sample, options.clip_sample_range, guidance,
            x0_prev2 if options.x0_history == 2 else None)
    return torch.ops.ddpm_fast.ddim_step(
        model_output, t, prev_t, x, alphas_cumprod, noise, seed, options.sample_offset, prediction, options.eta,
        options.clip_sample, options.clip_sample_range, guidance, options.use_clipped_model_output)


def thresholded_x0(model_output: torch.Tensor, x: torch.Tensor, column: torch.Tensor, solver_table: torch.Tensor,
                   prediction: int, guidance: Optional[torch.Tensor], ratio: float,
                   sample_max_value: float) -> torch.Tensor:
    """Dynamic thresholding (Saharia et al. 2022, "Photorealistic Text-to-Image Diffusion Models with Deep Language
    Understanding", §2.3), as diffusers' _threshold_sample: the data prediction x0 of a multistep solver's step (at
    the column's α_s, σ_s, the first two rows of either solver's table; guidance's halves combined first), then per
    sample s = the `ratio` quantile of |x0| over all its elements (linear interpolation, torch.quantile's), clamped to
    [1, sample_max_value] as torch.clamp does, and x0 ← clamp(x0, −s, s) / s. float32 [B, C, H, W] in x's shape.

    On the device, with no host sync: the quantile is read from torch.topk of the largest |x0| (positions fixed by
    the shape alone), so the step stays capturable in a CUDA graph."""
    batch = x.shape[0]
    x0 = solver_data_prediction(model_output, x, column_rows(solver_table, column, SOLVER_ROW_INDEX, x), prediction,
                                guidance_scale=guidance)
    shape = (-1,) + (1,) * (x.dim() - 1)
    flat = x0.reshape(batch, -1).abs()
    count = flat.shape[1]
    position = ratio * (count - 1)
    low = min(int(position), count - 1)
    fraction = position - low
    largest = torch.topk(flat, count - low, dim=1).values  # descending: [:, -1] is sorted[low], [:, -2] sorted[low + 1]
    threshold = largest[:, -1]
    if fraction > 0:
        threshold = threshold + fraction * (largest[:, -2] - threshold)
    threshold = torch.clamp(threshold, min=1.0, max=sample_max_value).view(shape)
    return torch.minimum(torch.maximum(x0, -threshold), threshold) / threshold
