"""The T-step loop: one reverse step on static buffers, run eagerly or captured in CUDA graphs and replayed.

Every tensor a step touches lives in a fixed buffer — x_t, the noise key, the step counter, the chain — so a step
is position independent: it reads "which step am I" from the device-side counter, runs the model and the fused
update, writes x_{t-1} back over x_t and bumps the counter. Replaying one captured step (or k of them) n times
therefore runs an n-step chain with no host work beyond the replay calls, and no host sync at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from ..kernels import ops as _ops  # noqa: F401 — registers torch.ops.ddpm_fast.*
from ..vocabulary import DPM_METHODS, PREDICTION_TYPES, STREAM_REVERSE_STEP, VARIANCE_TYPES
from ..kernels.philox import philox_normal_reference
from .plan import SamplingPlan

Denoiser = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]  # (x_t, t, class_labels)


@dataclass(frozen=True)
class StepOptions:
    """What a step computes; everything here is baked into a captured graph (part of its cache key)."""

    method: str  # "ddpm" | "ddim" | "dpm_solver++" | "sde_dpm_solver++"
    prediction_type: str
    variance_type: str
    clip_sample: bool
    clip_sample_range: float
    eta: float  # DDIM only
    noise: str  # "philox" (in-kernel, keyed by seed) | "given" (drawn by torch into a buffer between steps)
    sample_offset: int  # global index of sample 0, for the Philox keys of a shard
    conditioning: str = "none"  # "none" | "labels" (class labels to the model) | "guided" (classifier-free guidance)
    use_clipped_model_output: bool = False  # DDIM with clip_sample: ε re-derived from the clipped x0



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
    x0_prev: Optional[torch.Tensor] = None  # float32 [B, C, H, W], DPM-Solver++'s previous x0 estimate

    @classmethod
    def allocate(cls, shape: tuple[int, ...], device: torch.device, channels_last: bool, noise: str,
                 noise_buffer: bool = False, conditioning: str = "none", multistep: bool = False) -> "StepState":
        """Buffers for `noise` ("philox": a key; "given": a noise tensor); noise_buffer adds the tensor to a key;
        `conditioning` adds the class labels (and the guidance scale); multistep the previous x0 (DPM-Solver++)."""
        layout = torch.channels_last if channels_last else torch.contiguous_format
        labels = {"none": 0, "labels": shape[0], "guided": 2 * shape[0]}[conditioning]
        return cls(
            x=torch.zeros(shape, device=device, dtype=torch.float32).contiguous(memory_format=layout),
            seed=torch.zeros(1, device=device, dtype=torch.int64) if noise == "philox" else None,
            # NCHW whatever the model's layout: torch.randn fills it in the order a reference loop's randn does.
            noise=torch.zeros(shape, device=device, dtype=torch.float32) if noise == "given" or noise_buffer
            else None,
            step_index=torch.zeros(1, device=device, dtype=torch.int64),
            class_labels=torch.zeros(labels, device=device, dtype=torch.int64) if labels else None,
            guidance=torch.ones(1, device=device, dtype=torch.float32) if conditioning == "guided" else None,
            x0_prev=torch.zeros(shape, device=device, dtype=torch.float32).contiguous(memory_format=layout)
            if multistep else None,
        )


def torch_noise(shape: tuple[int, ...], generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """torch.randn drawn on the generator's own device (the stream a reference loop with that generator would see),
    or from the global generator of `device`; returned on `device`."""
    return torch.randn(shape, generator=generator,
                       device=generator.device if generator is not None else device).to(device)


def progress_bar(enabled: bool, total: int, description: str):
    """A tqdm bar of the steps launched, or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="step")


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


StepCore = Callable[..., torch.Tensor]


def make_step_core(denoise: Denoiser, options: StepOptions) -> StepCore:
    """The pure part of a step — x_t, the step counter and the chain in, x_{t-1} out — as one function, so
    torch.compile sees the model and the update together (on a CPU it then fuses the update's Philox noise too)."""
    learned_variance = options.variance_type == "learned_range"
    prediction = PREDICTION_TYPES[options.prediction_type]
    variance = VARIANCE_TYPES[options.variance_type]
    given = options.noise == "given"
    noiseless = is_noiseless(options)
    guided = options.conditioning == "guided"

    def step_core(x, step_index, model_timesteps, kernel_steps, prev_timesteps, table, alphas_cumprod, noise, seed,
                  class_labels=None, guidance=None, solver_table=None, x0_prev=None):
        # The state may hold both a key and a noise buffer (a CPU runner that prefetches its Philox noise): use the
        # one these options name.
        noise, seed = (noise, None) if given else (None, seed)
        if noiseless:
            noise = seed = None
        index = step_index.expand(x.shape[0])
        t = model_timesteps.index_select(0, index)
        if guided:
            # Classifier-free guidance: the conditional and the unconditional pass as one model call of 2B; the
            # fused step combines the halves (u + w·(c − u)) as it reads them.
            model_x = torch.cat([x, x])
            output = check_model_output(denoise(model_x, torch.cat([t, t]), class_labels), model_x, learned_variance)
        else:
            output = check_model_output(denoise(x, t, class_labels), x, learned_variance)
            guidance = None
        if options.method == "ddpm":
            return torch.ops.ddpm_fast.p_step(
                output, kernel_steps.index_select(0, index), x, table, noise, seed, options.sample_offset,
                prediction, variance, options.clip_sample, options.clip_sample_range, guidance)
        if options.method in DPM_METHODS:  # (x_{t_next}, this step's x0 estimate)
            return torch.ops.ddpm_fast.dpm_solver_step(
                output, t, kernel_steps.index_select(0, index), x, x0_prev, solver_table, noise, seed,
                options.sample_offset, prediction, options.clip_sample, options.clip_sample_range, guidance)
        return torch.ops.ddpm_fast.ddim_step(
            output, t, prev_timesteps.index_select(0, index), x, alphas_cumprod, noise, seed, options.sample_offset,
            prediction, options.eta, options.clip_sample, options.clip_sample_range, guidance,
            options.use_clipped_model_output)

    return step_core


class PhiloxPrefetch:
    """The seeded z of an eager CPU chain, drawn `chunk` steps at a time into the state's noise buffer.

    A step's Philox noise is ~130 small integer ops, which at small batches costs a CPU step as much as several model
    layers; drawn for many steps in one call, it costs little. The values are the kernels' own: Philox keyed by
    (seed, sample_offset + i, the step's timestep, STREAM_REVERSE_STEP), the same z the step would draw itself.
    """

    def __init__(self, options: StepOptions, state: StepState, chain: ChainBuffers, chunk: int = 16):
        self.options, self.state, self.chain, self.chunk = options, state, chain, chunk
        batch = state.x.shape[0]
        self.sample_index = torch.arange(batch, device=state.x.device) + options.sample_offset
        self._block: Optional[torch.Tensor] = None

    def fill(self, step_index: int, num_steps: int) -> None:
        """Put step `step_index`'s z into state.noise (drawing the next chunk first when it starts one)."""
        position = step_index % self.chunk
        if position == 0:
            count = min(self.chunk, num_steps - step_index)
            # The timestep each step's kernel keys its noise by (clamped as the kernels clamp it): DDPM's column of
            # the chain's table, DDIM's model timestep.
            if self.options.method == "ddpm":
                steps, last = self.chain.kernel_steps, self.chain.table.shape[1] - 1
            else:
                steps, last = self.chain.model_timesteps, self.chain.alphas_cumprod.numel() - 1
            steps = steps[step_index:step_index + count].clamp(0, last)
            batch, shape = self.sample_index.shape[0], tuple(self.state.noise.shape)
            self._block = philox_normal_reference(
                self.state.seed, self.sample_index.repeat(count), steps.repeat_interleave(batch), STREAM_REVERSE_STEP,
                (count * batch, *shape[1:])).view(count, *shape)
        self.state.noise.copy_(self._block[position])


def is_noiseless(options: StepOptions) -> bool:
    """Whether a step adds no noise at all: DDIM with eta = 0 (σ·z = 0; a CPU step would spend ~130 integer ops
    drawing z) and the DPM-Solver++ ODE."""
    return (options.method == "ddim" and options.eta == 0.0) or options.method == "dpm_solver++"


def run_step(core: StepCore, chain: ChainBuffers, state: StepState) -> None:
    """One reverse step in place: x ← core(x, ...) (and DPM-Solver++'s x0_prev ← its x0), then step_index += 1.
    No host sync."""
    x_prev = core(state.x, state.step_index, chain.model_timesteps, chain.kernel_steps, chain.prev_timesteps,
                  chain.table, chain.alphas_cumprod, state.noise, state.seed, state.class_labels, state.guidance,
                  chain.solver_table, state.x0_prev)
    if isinstance(x_prev, tuple):
        x_prev, x0 = x_prev
        state.x0_prev.copy_(x0)
    state.x.copy_(x_prev)
    state.step_index.add_(1)


# A capture in torch's default "global" mode fails when another thread makes an unsafe CUDA call meanwhile (the
# Trainer's DataLoader pin-memory thread copies batches while the periodic sample grids are captured), and that
# thread's call fails too. "thread_local" checks only the capturing thread's calls: other threads keep working,
# and nothing of theirs enters the graph (they use their own streams).
CAPTURE_ERROR_MODE = "thread_local"


class GraphedSteps:
    """CUDA graphs of k consecutive steps and of one step on the same static buffers, sharing one memory pool.

    Replaying them runs any number of steps: n // k replays of the k-step graph, then n % k of the one-step graph.
    """

    def __init__(self, step: Callable[[], None], state: StepState, steps_per_graph: int):
        self.step = step
        self.state = state
        self.steps_per_graph = steps_per_graph
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.warm_up_seconds = 0.0
        self.capture_seconds = 0.0
        self._warm_up()

    def _warm_up(self) -> None:
        """Run the step eagerly on a side stream first: compilation, autotuning and lazy initialisation must not
        happen inside a capture (torch's documented recipe)."""
        start = time.perf_counter()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.state.step_index.zero_()  # stay on step 0: a short chain has no step 2
                self.step()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self.warm_up_seconds = time.perf_counter() - start

    def _graph(self, steps: int) -> torch.cuda.CUDAGraph:
        graph = self.graphs.get(steps)
        if graph is None:
            start = time.perf_counter()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode=CAPTURE_ERROR_MODE):
                for _ in range(steps):
                    self.step()
            torch.cuda.synchronize()
            self.capture_seconds += time.perf_counter() - start
            self.graphs[steps] = graph
        return graph

    def prepare(self, num_steps: int) -> None:
        """Capture the graphs a chain of num_steps replays (before timing starts)."""
        if num_steps >= self.steps_per_graph:
            self._graph(self.steps_per_graph)
        if num_steps % self.steps_per_graph:
            self._graph(1)

    def replay(self, num_steps: int, before_replay: Optional[Callable[[int], None]] = None,
               progress: Optional[Callable[[int], None]] = None) -> int:
        """num_steps steps from the state's current step. before_replay(i) runs before the replay that starts at
        step i (torch-drawn noise needs one step per graph); progress(n) hears of every n steps launched. Returns
        the number of replays."""
        done = replays = 0
        while done < num_steps:
            steps = self.steps_per_graph if num_steps - done >= self.steps_per_graph else 1
            if before_replay is not None:
                before_replay(done)
            self._graph(steps).replay()
            done += steps
            replays += 1
            if progress is not None:
                progress(steps)
        return replays
