"""What gets exported, as plain-torch modules: the ε-model alone, or one whole reverse step with the schedule baked in.

Only standard ops may reach the ONNX graph, so these call the kernels' torch references (the same math the Triton
kernels are tested against), never the custom ops. The U-Net's fused GroupNorm custom op is replaced by its reference
when the exporter decomposes the graph (see onnx_export.py).
"""

from __future__ import annotations

from typing import Optional

import torch
from ddpm_fast.kernels import (PREDICTION_TYPES, VARIANCE_TYPES, ddim_step_reference, dpm_solver_step_reference,
                               p_step_reference, unipc_step_reference)
from torch import nn

from ddpm_fast.models.output import unwrap_model_output
from ddpm_fast.schedule import NoiseSchedule


def _model_output(model: nn.Module, sample: torch.Tensor, timestep: torch.Tensor,
                  class_labels: Optional[torch.Tensor]) -> torch.Tensor:
    if class_labels is None:
        return unwrap_model_output(model(sample, timestep))
    return unwrap_model_output(model(sample, timestep, class_labels=class_labels))


class _Conditioning:
    """How a step graph calls a class-conditional model: with the class_labels input, and, where the model has a
    null class, twice as one batch of 2B (the labels, then the null class) for classifier-free guidance, whose scale
    w is the guidance_scale input ([1] float32; the fused combination is the kernels' reference)."""

    def __init__(self, model: nn.Module, null_class_label: Optional[int]):
        self.model, self.null_class_label = model, null_class_label

    def output(self, sample, timestep, class_labels, dtype):
        if class_labels is None or self.null_class_label is None:
            return _model_output(self.model, sample.to(dtype), timestep, class_labels)
        null = torch.full_like(class_labels, self.null_class_label)
        return _model_output(self.model, torch.cat([sample, sample]).to(dtype), torch.cat([timestep, timestep]),
                             torch.cat([class_labels, null]))


class ModelGraph(nn.Module):
    """(sample [B, C, H, W], timestep [B] int64[, class_labels [B] int64]) → model_output, in the model's dtype."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _model_output(self.model, sample, timestep, class_labels)


class DDPMStepGraph(nn.Module):
    """(sample = x_t float32, timestep [B] int64, noise float32[, class_labels [B] int64[, guidance_scale [1]
    float32]]) → x_{t-1} float32: the U-Net and the ancestral update in one graph. The coefficient table is a
    constant; no noise is added where t == 0."""

    def __init__(self, model: nn.Module, schedule: NoiseSchedule, dtype: torch.dtype, prediction_type: str,
                 variance_type: str, clip_sample: bool, clip_sample_range: float,
                 null_class_label: Optional[int] = None):
        super().__init__()
        self.model, self.dtype = model, dtype
        self.conditioning = _Conditioning(model, null_class_label)
        self.register_buffer("table", schedule.coefficient_table("cpu").clone())
        self.prediction = PREDICTION_TYPES[prediction_type]
        self.variance = VARIANCE_TYPES[variance_type]
        self.clip, self.clip_range = bool(clip_sample), float(clip_sample_range)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, noise: torch.Tensor,
                class_labels: Optional[torch.Tensor] = None,
                guidance_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        output = self.conditioning.output(sample, timestep, class_labels, self.dtype)
        return p_step_reference(output, timestep, sample, self.table, noise, None, 0, self.prediction, self.variance,
                                self.clip, self.clip_range, guidance_scale)


class DDIMStepGraph(nn.Module):
    """(sample = x_t float32, timestep, prev_timestep [B] int64 (-1 ends the chain), noise float32[, class_labels
    [, guidance_scale]]) → x_{prev} float32. ᾱ is a float64 constant: the step's per-sample scalars cancel badly in
    float32 (see the kernel)."""

    def __init__(self, model: nn.Module, schedule: NoiseSchedule, dtype: torch.dtype, prediction_type: str,
                 eta: float, clip_sample: bool, clip_sample_range: float, null_class_label: Optional[int] = None):
        super().__init__()
        self.model, self.dtype = model, dtype
        self.conditioning = _Conditioning(model, null_class_label)
        self.register_buffer("alphas_cumprod", schedule.alphas_cumprod.clone())
        self.prediction = PREDICTION_TYPES[prediction_type]
        self.eta = float(eta)
        self.clip, self.clip_range = bool(clip_sample), float(clip_sample_range)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, prev_timestep: torch.Tensor,
                noise: torch.Tensor, class_labels: Optional[torch.Tensor] = None,
                guidance_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        output = self.conditioning.output(sample, timestep, class_labels, self.dtype)
        return ddim_step_reference(output, timestep, prev_timestep, sample, self.alphas_cumprod, noise, None, 0,
                                   self.prediction, self.eta, self.clip, self.clip_range, guidance_scale)


class _SolverStepGraph(nn.Module):
    """A multistep solver's step graph: the model (guided when the setup names a null class) and the step's update,
    whose per-step scalars come in as an input column."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, prediction_type: str, clip_sample: bool,
                 clip_sample_range: float, null_class_label: Optional[int] = None):
        super().__init__()
        self.model, self.dtype = model, dtype
        self.conditioning = _Conditioning(model, null_class_label)
        self.prediction = PREDICTION_TYPES[prediction_type]
        self.clip, self.clip_range = bool(clip_sample), float(clip_sample_range)


class DPMSolverStepGraph(_SolverStepGraph):
    """(sample = x_t float32, timestep [B] int64, solver_coefficients [6] float32 (the first STEP_GRAPH_SOLVER_ROWS
    of a column: orders 1 and 2), the previous
    step's x0 estimate (prev_pred_original_sample, float32; zeros on the first step), noise float32[, class_labels
    [, guidance_scale]]) → (prev_sample, pred_original_sample): one DPM-Solver++ step (Lu et al. 2022), ODE or SDE.

    The step's scalars depend on the whole chain (its λ differences and order), so they are an input — one column of
    the plan's solver table, which OnnxSampler computes in float64 for any chain length — rather than constants.
    """

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, solver_coefficients: torch.Tensor,
                prev_pred_original_sample: torch.Tensor, noise: torch.Tensor,
                class_labels: Optional[torch.Tensor] = None,
                guidance_scale: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.conditioning.output(sample, timestep, class_labels, self.dtype)
        column = torch.zeros_like(timestep)  # every sample reads the one column given
        return dpm_solver_step_reference(output, timestep, column, sample, prev_pred_original_sample,
                                         solver_coefficients.view(-1, 1), noise, None, 0, self.prediction, self.clip,
                                         self.clip_range, guidance_scale)


class UniPCStepGraph(_SolverStepGraph):
    """(sample = x_t float32, timestep [B] int64, unipc_coefficients [len(UNIPC_ROWS)] float32 (the step's column of
    the chain's UniPC table), last_sample (the previous point's corrected sample), prev_pred_original_sample,
    prev_pred_original_sample_2, prev_pred_original_sample_3 (the x0 estimates of the last three model calls,
    newest first; float32, zeros where the chain has none yet)[, class_labels[, guidance_scale]]) →
    (prev_sample, corrected_sample, pred_original_sample): one UniPC step (Zhao et al. 2023), the UniC corrector at
    this point and the UniP predictor to the next from one model call, any order 1-3 and B(h) (they live in the
    column; an earlier x0 whose coefficients are 0 adds nothing)."""

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, unipc_coefficients: torch.Tensor,
                last_sample: torch.Tensor, prev_pred_original_sample: torch.Tensor,
                prev_pred_original_sample_2: torch.Tensor, prev_pred_original_sample_3: torch.Tensor,
                class_labels: Optional[torch.Tensor] = None,
                guidance_scale: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        output = self.conditioning.output(sample, timestep, class_labels, self.dtype)
        column = torch.zeros_like(timestep)  # every sample reads the one column given
        history = (prev_pred_original_sample, prev_pred_original_sample_2, prev_pred_original_sample_3)
        return unipc_step_reference(output, column, sample, last_sample, history, unipc_coefficients.view(-1, 1),
                                    self.prediction, self.clip, self.clip_range, guidance_scale)
