"""The dummy model of diffusers' scheduler tests and what the solver-chain tests share around it: diffusers' linear
schedule, a deterministic x_T inside [-1, 1], and the x a chain ended at before FastSampler's clamp."""

import math

import torch
from torch import nn

import ddpm_fast as df

LINEAR = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
SHAPE = (3, 8, 8)
BATCH = 2


def dummy_model(sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """diffusers' SchedulerCommonTest.dummy_model, t an int64 [B] tensor or a scalar."""
    t = torch.as_tensor(t).reshape(-1, *(1,) * (sample.dim() - 1)).to(sample.dtype)
    return sample * t / (t + 1)


class DummyModule(nn.Module):
    """The dummy model as a module (for export_onnx, or a device): it exports in about a second."""

    def forward(self, sample, t):
        return dummy_model(sample, t)


def latents() -> torch.Tensor:
    """A deterministic x_T [BATCH, *SHAPE] inside [-1, 1] (so FastSampler's clamp of the images changes nothing)."""
    count = BATCH * math.prod(SHAPE)
    return torch.linspace(-0.9, 0.9, count).reshape(*SHAPE, BATCH).permute(3, 0, 1, 2).contiguous()


def last_x(sampler: df.FastSampler) -> torch.Tensor:
    """x after the last chain `sampler` ran, before its images were clamped to [-1, 1]: the static buffer of the
    runner it used last."""
    return next(reversed(sampler.fast_path.runners.values())).state.x
