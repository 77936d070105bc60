"""A sampling run's chain as data: which timestep each step visits and which coefficients it reads.

The loop copies a plan into fixed-size device buffers once per run and then indexes them with a device-side step
counter, so one captured CUDA graph serves every chain of the same method, whatever its length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..checks import ParameterError, ParameterTypeError
from ..schedule import NoiseSchedule
from ..vocabulary import METHODS, MULTISTEP_METHODS, SOLVER_TABLE_ROWS
from .dpm_solver import SolverOptions, dpm_solver_chain, solver_table, step_orders
from .timesteps import respaced_coefficient_table, spaced_timesteps
from .unipc import unipc_orders, unipc_table



@dataclass(frozen=True)
class SamplingPlan:
    """The n steps of one run (host tensors; every vector is padded to the schedule's T entries).

    model_timesteps[i]: the t the model sees at step i (descending). kernel_steps[i]: the index the step kernel
    reads: DDPM, the coefficient-table column (index 0 is the chain's last step, which adds no noise); DDIM, t itself;
    DPM-Solver++ and UniPC, the step's column of solver_table (i). prev_timesteps[i]: DDIM's target timestep (after the
    last step, -1: the chain ends at ᾱ = 1; or 0, at ᾱ_0, for set_alpha_to_one=False).
    """

    method: str
    num_steps: int
    model_timesteps: torch.Tensor  # int64 [T]
    kernel_steps: torch.Tensor  # int64 [T]
    prev_timesteps: torch.Tensor  # int64 [T]
    table: torch.Tensor  # float32 [rows, T], the DDPM step coefficients
    # float32 [SOLVER_TABLE_ROWS, T]: a multistep solver's per-step scalars in its leading rows (SOLVER_ROWS for
    # DPM-Solver++, UNIPC_ROWS for UniPC; zeros otherwise)
    solver_table: torch.Tensor

    @property
    def timesteps(self) -> list[int]:
        """The visited timesteps, in sampling order."""
        return self.model_timesteps[: self.num_steps].tolist()


def build_plan(schedule: NoiseSchedule, method: str = "ddpm", num_inference_steps: int | None = None,
               timestep_spacing: str = "linspace", steps_offset: int = 0,
               set_alpha_to_one: bool = True, timesteps: Sequence[int] | None = None,
               solver_options: SolverOptions | None = None) -> SamplingPlan:
    """Every timestep T-1..0 (num_inference_steps None or T), or `num_inference_steps` of them spaced as asked.

    A respaced DDPM chain steps from each kept timestep to the next kept one with the posterior re-derived from ᾱ
    (Nichol & Dhariwal 2021); DDIM goes from each kept timestep to the next, then to ᾱ = 1, or to ᾱ_0 with
    set_alpha_to_one=False (diffusers' DDIMScheduler option of that name: its final_alpha_cumprod). DPM-Solver++
    ("dpm_solver++", "sde_dpm_solver++") needs num_inference_steps and spaces it as diffusers'
    DPMSolverMultistepScheduler does (sampling/dpm_solver.py), with its options `solver_options` (order, the final step,
    a σ spacing; default: order 2 ending at σ = 0); UniPC ("unipc", sampling/unipc.py) likewise, as diffusers'
    UniPCMultistepScheduler (also its B(h) and disable_corrector). timesteps: a custom chain instead
    (check_custom_timesteps), as diffusers' set_timesteps(timesteps=...); not with a σ spacing.
    """
    total = schedule.num_timesteps
    if timesteps is not None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        custom = check_custom_timesteps(timesteps, total, num_inference_steps)
    table = schedule.coefficient_table("cpu")
    solver = torch.zeros(SOLVER_TABLE_ROWS, total)
    if method in MULTISTEP_METHODS:
        chain_np, alpha, sigma = _dpm_chain(schedule, method, num_inference_steps, timestep_spacing,
                                            steps_offset, solver_options, custom if timesteps is not None else None)
        if method == "sde_dpm_solver++" and len(np.unique(chain_np)) < len(chain_np):
            # Its z is keyed by (seed, sample, timestep), as every method's: a repeated timestep would repeat z.
            repeated = sorted({int(t) for t in chain_np if (chain_np == t).sum() > 1})
            raise ParameterError("num_inference_steps", lambda name: (
                f"method='sde_dpm_solver++' with {name('num_inference_steps')}={num_inference_steps} on this σ "
                f"spacing calls the model at timestep {', '.join(map(str, repeated))} more than once, and its noise "
                "is keyed by timestep: use fewer steps, or method='dpm_solver++'"))
        chain = torch.from_numpy(chain_np)
        steps = chain.numel()
        if method == "unipc":
            options = solver_options or SolverOptions()
            orders = unipc_orders(steps, options.solver_order, options.lower_order_final, sigma[-1] == 0.0)
            rows = unipc_table(alpha, sigma, orders, options.solver_type, options.disable_corrector)
        else:
            rows = solver_table(alpha, sigma, method == "sde_dpm_solver++", step_orders(steps, solver_options))
        solver[:rows.shape[0], :steps] = rows
        kernel_steps = torch.arange(steps, dtype=torch.int64)
    else:
        chain = torch.from_numpy(custom if timesteps is not None else
                                 _method_chain(schedule, method, num_inference_steps, timestep_spacing, steps_offset))
        steps = chain.numel()
        kernel_steps = chain
    if method == "ddpm" and (steps < total or timesteps is not None):
        table = torch.zeros_like(table)
        table[:, :steps] = respaced_coefficient_table(schedule.alphas_cumprod, chain.flip(0).tolist())
        kernel_steps = torch.arange(steps - 1, -1, -1, dtype=torch.int64)
    prev = torch.cat([chain[1:], torch.tensor([-1 if set_alpha_to_one else 0], dtype=torch.int64)])
    return SamplingPlan(method, steps, _padded(chain, total), _padded(kernel_steps, total), _padded(prev, total),
                        table, solver)


def check_step_choices(method: str, eta: float, use_clipped_model_output: object, thresholding: bool = False) -> None:
    """The per-call step options every sampler's `sample` checks the same way (FastSampler, OnnxSampler): eta and
    use_clipped_model_output apply to method="ddim" only, the sampler's thresholding to the multistep solvers
    (DPM-Solver++, UniPC) only. ValueError / TypeError naming the argument."""
    if thresholding and method not in MULTISTEP_METHODS:
        raise ValueError(f"thresholding=True applies to the multistep solvers only; method={method!r} does not "
                         "threshold its x0 (use method='dpm_solver++', 'sde_dpm_solver++' or 'unipc')")
    if method != "ddim" and eta != 0.0:
        raise ValueError("eta applies to method='ddim' only")
    if not isinstance(use_clipped_model_output, bool):
        raise TypeError(f"use_clipped_model_output must be True or False, got {use_clipped_model_output!r}")
    if use_clipped_model_output and method != "ddim":
        raise ValueError("use_clipped_model_output applies to method='ddim' only")


def check_custom_timesteps(timesteps: object, total: int, num_inference_steps: object = None) -> np.ndarray:
    """A custom chain as descending int64: a non-empty 1-D sequence (list, tuple, numpy array or tensor) of
    distinct ints in [0, total), strictly descending, given instead of num_inference_steps. TypeError / ValueError
    naming `timesteps`."""
    if num_inference_steps is not None:
        raise ParameterError("num_inference_steps", lambda name: f"pass {name('num_inference_steps')} or "
                             f"{name('timesteps')}, not both")
    if isinstance(timesteps, torch.Tensor):
        timesteps = timesteps.detach().cpu().numpy()
    if isinstance(timesteps, (str, bytes)) or not isinstance(timesteps, (list, tuple, np.ndarray)):
        raise TypeError(f"timesteps must be a sequence of ints, got {type(timesteps).__name__}")
    chain = np.asarray(timesteps)
    if chain.ndim != 1 or chain.size == 0 or not np.issubdtype(chain.dtype, np.integer):
        raise TypeError(f"timesteps must be a non-empty 1-D sequence of ints, got {timesteps!r}")
    chain = chain.astype(np.int64)
    if chain.min() < 0 or chain.max() >= total or (chain[1:] >= chain[:-1]).any():
        raise ValueError(f"timesteps must be strictly descending ints in [0, {total}), got {chain.tolist()}")
    return chain


def planned_timesteps(schedule: NoiseSchedule, method: str = "ddpm", num_inference_steps: int | None = None,
                      timestep_spacing: str = "linspace", steps_offset: int = 0,
                      solver_options: SolverOptions | None = None) -> list[int]:
    """The timesteps build_plan's chain visits, in sampling order, without building its coefficient table (what
    FastSampler.timesteps and OnnxSampler.timesteps answer)."""
    return _method_chain(schedule, method, num_inference_steps, timestep_spacing, steps_offset, solver_options).tolist()


def _method_chain(schedule: NoiseSchedule, method: str, num_inference_steps: int | None, timestep_spacing: str,
                  steps_offset: int, solver_options: SolverOptions | None = None) -> np.ndarray:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method in MULTISTEP_METHODS:
        return _dpm_chain(schedule, method, num_inference_steps, timestep_spacing, steps_offset, solver_options)[0]
    return chain_timesteps(schedule.num_timesteps, num_inference_steps, timestep_spacing, steps_offset)


def _dpm_chain(schedule: NoiseSchedule, method: str, num_inference_steps: int | None, timestep_spacing: str,
               steps_offset: int, solver_options: SolverOptions | None, timesteps: np.ndarray | None = None):
    """dpm_solver_chain of a plan: (model timesteps, α, σ)."""
    if timesteps is None and num_inference_steps is None:
        raise ParameterError("num_inference_steps", lambda name: f"method={method!r} needs "
                             f"{name('num_inference_steps')} (the multistep solvers are made for 5-25 steps)")
    return dpm_solver_chain(schedule.alphas_cumprod, num_inference_steps, timestep_spacing, steps_offset,
                            solver_options, timesteps)


def chain_timesteps(total: int, num_inference_steps: int | None = None, timestep_spacing: str = "linspace",
                    steps_offset: int = 0) -> np.ndarray:
    """The descending int64 timesteps of a chain of `num_inference_steps` (None or T: all of them) out of `total`:
    the one function FastSampler, OnnxSampler and FastDDPMScheduler plan with. TypeError / ValueError naming
    num_inference_steps, or timestep_spacing / steps_offset when they put a timestep outside [0, total)."""
    if num_inference_steps is None:
        num_inference_steps = total
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
        raise ParameterTypeError("num_inference_steps", lambda name: f"{name('num_inference_steps')} must be an int "
                                 f"or None, got {type(num_inference_steps).__name__}")
    if not 1 <= num_inference_steps <= total:
        raise ParameterError("num_inference_steps", lambda name: f"{name('num_inference_steps')} must lie in "
                             f"[1, {total}], got {num_inference_steps}")
    if num_inference_steps == total:
        return np.arange(total - 1, -1, -1, dtype=np.int64)
    chain = spaced_timesteps(total, int(num_inference_steps), timestep_spacing, steps_offset)
    if chain[0] >= total or chain[-1] < 0 or (chain[1:] >= chain[:-1]).any():
        raise ValueError(f"timestep_spacing={timestep_spacing!r} with steps_offset={steps_offset} gives timesteps "
                         f"outside [0, {total}) or repeated ones: {chain.tolist()}")
    return chain


def _padded(vector: torch.Tensor, length: int) -> torch.Tensor:
    # Entries past the chain are never read; 0 keeps them inside every table should a kernel look.
    return torch.cat([vector, torch.zeros(length - vector.numel(), dtype=vector.dtype)])
