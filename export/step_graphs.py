"""What gets exported, as plain-torch modules: the ε-model alone, or one whole reverse step with the schedule baked in.

Only standard ops may reach the ONNX graph, so these call the kernels' torch references (the same math the Triton
kernels are tested against), never the custom ops. The U-Net's fused GroupNorm custom op is replaced by its reference
when the exporter decomposes the graph (see onnx_export.py).
"""

from __future__ import annotations

import torch
from ddpm_fast.kernels import PREDICTION_TYPES, VARIANCE_TYPES, ddim_step_reference, p_step_reference
from torch import nn

from ddpm_fast.sampling.loop import unwrap_model_output
from ddpm_fast.schedule import NoiseSchedule


class ModelGraph(nn.Module):
    """(sample [B, C, H, W], timestep [B] int64) → model_output, in the model's dtype."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return unwrap_model_output(self.model(sample, timestep))


class DDPMStepGraph(nn.Module):
    """(sample = x_t float32, timestep [B] int64, noise float32) → x_{t-1} float32: the U-Net and the ancestral
    update in one graph. The coefficient table is a constant; no noise is added where t == 0."""

    def __init__(self, model: nn.Module, schedule: NoiseSchedule, dtype: torch.dtype, prediction_type: str,
                 variance_type: str, clip_sample: bool, clip_sample_range: float):
        super().__init__()
        self.model, self.dtype = model, dtype
        self.register_buffer("table", schedule.coefficient_table("cpu").clone())
        self.prediction = PREDICTION_TYPES[prediction_type]
        self.variance = VARIANCE_TYPES[variance_type]
        self.clip, self.clip_range = bool(clip_sample), float(clip_sample_range)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        output = unwrap_model_output(self.model(sample.to(self.dtype), timestep))
        return p_step_reference(output, timestep, sample, self.table, noise, None, 0, self.prediction, self.variance,
                                self.clip, self.clip_range)


class DDIMStepGraph(nn.Module):
    """(sample = x_t float32, timestep, prev_timestep [B] int64 (-1 ends the chain), noise float32) → x_{prev}
    float32. ᾱ is a float64 constant: the step's per-sample scalars cancel badly in float32 (see the kernel)."""

    def __init__(self, model: nn.Module, schedule: NoiseSchedule, dtype: torch.dtype, prediction_type: str,
                 eta: float, clip_sample: bool, clip_sample_range: float):
        super().__init__()
        self.model, self.dtype = model, dtype
        self.register_buffer("alphas_cumprod", schedule.alphas_cumprod.clone())
        self.prediction = PREDICTION_TYPES[prediction_type]
        self.eta = float(eta)
        self.clip, self.clip_range = bool(clip_sample), float(clip_sample_range)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, prev_timestep: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
        output = unwrap_model_output(self.model(sample.to(self.dtype), timestep))
        return ddim_step_reference(output, timestep, prev_timestep, sample, self.alphas_cumprod, noise, None, 0,
                                   self.prediction, self.eta, self.clip, self.clip_range)
