"""One reverse step on static buffers: the unit the T-step loop runs eagerly, or captures in CUDA graphs (graphs.py).

Every tensor a step touches lives in a fixed buffer — x_t, the noise key, the step counter, the chain — so a step
is position independent: it reads "which step am I" from the device-side counter, runs the model and the fused
update, writes x_{t-1} back over x_t and bumps the counter. Replaying one captured step (or k of them) n times
therefore runs an n-step chain with no host work beyond the replay calls, and no host sync at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .chain import StepOptions, fused_step, guided_model_input, is_noiseless
from .plan import SamplingPlan

Denoiser = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]  # (x_t, t, class_labels)


class ChainBuffers:
    """The plan on the device, in buffers of fixed size [T] (a plan is copied in before each run)."""

    def __init__(self, plan_like: SamplingPlan, alphas_cumprod: torch.Tensor, device: torch.device):
        self.model_timesteps = torch.empty_like(plan_like.model_timesteps, device=device)
        self.kernel_steps = torch.empty_like(plan_like.kernel_steps, device=device)
        self.prev_timesteps = torch.empty_like(plan_like.prev_timesteps, device=device)
        self.table = torch.empty_like(plan_like.table, device=device)
        self.solver_table = torch.empty_like(plan_like.solver_table, device=device)
        self.alphas_cumprod = alphas_cumprod.to(device=device, dtype=torch.float64)  # DDIM's scalars need float64
        self.load(plan_like)

    def load(self, plan: SamplingPlan) -> None:
        # Host-to-device copies, before the loop starts (stream-ordered after any run still in flight).
        self.model_timesteps.copy_(plan.model_timesteps)
        self.kernel_steps.copy_(plan.kernel_steps)
        self.prev_timesteps.copy_(plan.prev_timesteps)
        self.table.copy_(plan.table)
        self.solver_table.copy_(plan.solver_table)


@dataclass
class StepState:
    """Per-batch-size buffers: x_t (float32), the noise source and the device-side step counter."""

    x: torch.Tensor  # float32 [B, C, H, W] in the model's memory format
    seed: Optional[torch.Tensor]  # int64 [1] Philox key ("philox" noise)
    noise: Optional[torch.Tensor]  # float32 [B, C, H, W] contiguous ("given" noise)
    step_index: torch.Tensor = field(default=None)  # int64 [1]
    # int64 [B] class labels ("labels"), or [2B]: the labels then the null class ("guided"); else None
    class_labels: Optional[torch.Tensor] = None
    guidance: Optional[torch.Tensor] = None  # float32 [1] guidance scale w ("guided"), read by the fused step
    # float32 [B, C, H, W] each, in x's layout: the multistep solvers' previous x0 estimates, newest first (as many as
    # the step reads: StepOptions.x0_history), and UniPC's previous corrected sample
    x0_prev: Optional[torch.Tensor] = None
    x0_prev2: Optional[torch.Tensor] = None
    x0_prev3: Optional[torch.Tensor] = None
    last_sample: Optional[torch.Tensor] = None

    @classmethod
    def allocate(cls, shape: tuple[int, ...], device: torch.device, channels_last: bool, noise: str,
                 noise_buffer: bool = False, conditioning: str = "none", multistep: bool = False,
                 x0_history: int = 1, last_sample: bool = False) -> "StepState":
        """Buffers for `noise` ("philox": a key; "given": a noise tensor); noise_buffer adds the tensor to a key;
        `conditioning` adds the class labels (and the guidance scale); multistep the previous x0_history x0
        estimates (DPM-Solver++, UniPC); last_sample UniPC's corrected sample."""
        layout = torch.channels_last if channels_last else torch.contiguous_format
        labels = {"none": 0, "labels": shape[0], "guided": 2 * shape[0]}[conditioning]

        def sample_buffer(wanted: bool) -> Optional[torch.Tensor]:
            return (torch.zeros(shape, device=device, dtype=torch.float32).contiguous(memory_format=layout)
                    if wanted else None)

        return cls(
            x=torch.zeros(shape, device=device, dtype=torch.float32).contiguous(memory_format=layout),
            seed=torch.zeros(1, device=device, dtype=torch.int64) if noise == "philox" else None,
            # NCHW whatever the model's layout: torch.randn fills it in the order a reference loop's randn does.
            noise=torch.zeros(shape, device=device, dtype=torch.float32) if noise == "given" or noise_buffer
            else None,
            step_index=torch.zeros(1, device=device, dtype=torch.int64),
            class_labels=torch.zeros(labels, device=device, dtype=torch.int64) if labels else None,
            guidance=torch.ones(1, device=device, dtype=torch.float32) if conditioning == "guided" else None,
            x0_prev=sample_buffer(multistep),
            x0_prev2=sample_buffer(multistep and x0_history >= 2),
            x0_prev3=sample_buffer(multistep and x0_history == 3),
            last_sample=sample_buffer(last_sample),
        )


def check_model_output(output: object, x: torch.Tensor, learned_variance: bool) -> torch.Tensor:
    """The model's output must be a float tensor shaped like x_t (exactly 2C channels with a learned variance)."""
    channels = x.shape[1]
    expected = 2 * channels if learned_variance else channels
    if (not isinstance(output, torch.Tensor) or not output.is_floating_point() or output.dim() != x.dim()
            or output.shape[0] != x.shape[0] or output.shape[2:] != x.shape[2:] or output.shape[1] != expected):
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        why = (" (variance_type='learned_range' needs a model that also predicts the variance: 2C channels)"
               if learned_variance else "")
        raise ValueError(f"the model returned {got}; expected a float tensor of shape "
                         f"[{x.shape[0]}, {expected}, {', '.join(map(str, x.shape[2:]))}]{why}")
    return output


def store_step_result(state: "StepState", result) -> torch.Tensor:
    """x_next of a fused step's result (fused_step's), with the multistep solvers' history advanced in `state`:
    x0_prev3 ← x0_prev2 ← x0_prev ← this call's x0, and UniPC's last_sample ← this point's corrected sample."""
    if not isinstance(result, tuple):
        return result
    x_next, *rest = result
    if len(rest) == 2:  # UniPC
        corrected, x0 = rest
        state.last_sample.copy_(corrected)
    else:
        (x0,) = rest
    if state.x0_prev3 is not None:
        state.x0_prev3.copy_(state.x0_prev2)
    if state.x0_prev2 is not None:
        state.x0_prev2.copy_(state.x0_prev)
    state.x0_prev.copy_(x0)
    return x_next


StepCore = Callable[..., torch.Tensor]


def make_step_core(denoise: Denoiser, options: StepOptions) -> StepCore:
    """The pure part of a step — x_t, the step counter and the chain in, x_{t-1} out — as one function, so
    torch.compile sees the model and the update together (on a CPU it then fuses the update's Philox noise too)."""
    learned_variance = options.variance_type == "learned_range"
    given = options.noise == "given"
    noiseless = is_noiseless(options.method, options.eta)
    guided = options.conditioning == "guided"

    def step_core(x, step_index, model_timesteps, kernel_steps, prev_timesteps, table, alphas_cumprod, noise, seed,
                  class_labels=None, guidance=None, solver_table=None, x0_prev=None, x0_prev2=None, x0_prev3=None,
                  last_sample=None):
        # The state may hold both a key and a noise buffer (a CPU runner that prefetches its Philox noise): use the
        # one these options name.
        noise, seed = (noise, None) if given else (None, seed)
        if noiseless:
            noise = seed = None
        index = step_index.expand(x.shape[0])
        t = model_timesteps.index_select(0, index)
        model_x, model_t = guided_model_input(x, t, guided)
        output = check_model_output(denoise(model_x, model_t, class_labels), model_x, learned_variance)
        return fused_step(options, output, x, t, kernel_steps.index_select(0, index),
                          prev_timesteps.index_select(0, index), table=table, alphas_cumprod=alphas_cumprod,
                          solver_table=solver_table, x0_prev=x0_prev, x0_prev2=x0_prev2, x0_prev3=x0_prev3,
                          last_sample=last_sample, noise=noise, seed=seed,
                          guidance=guidance if guided else None)

    return step_core


def run_step(core: StepCore, chain: ChainBuffers, state: StepState) -> None:
    """One reverse step in place: x ← core(x, ...) (and the multistep solvers' history: x0_prev3 ← x0_prev2 ←
    x0_prev ← this step's x0; UniPC's last_sample ← this point's corrected sample), then step_index += 1. No host
    sync."""
    x_prev = core(state.x, state.step_index, chain.model_timesteps, chain.kernel_steps, chain.prev_timesteps,
                  chain.table, chain.alphas_cumprod, state.noise, state.seed, state.class_labels, state.guidance,
                  chain.solver_table, state.x0_prev, state.x0_prev2, state.x0_prev3, state.last_sample)
    x_prev = store_step_result(state, x_prev)
    state.x.copy_(x_prev)
    state.step_index.add_(1)
