"""How a FastSampler's steps run, decided per (batch size, step options) and cached: the model's memory layout on a
CPU, torch.compile (always on CUDA; on a CPU only for a chain long enough to pay for it), CUDA-graph capture, and
each fallback from them with its reason. The step itself is loop.py's; the chain's rules are chain.py's.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import time
import types
import warnings
from dataclasses import replace
from typing import Any, Callable, Optional

import torch

from ..vocabulary import MULTISTEP_METHODS
from .chain import PhiloxPrefetch, StepOptions, draws_noise_on, is_noiseless, torch_noise
from .graphs import GraphedSteps
from .loop import ChainBuffers, Denoiser, StepState, make_step_core, run_step
from .options import SamplerOptions
from .plan import SamplingPlan

_RUNNER_IDS = itertools.count()
_LOG = logging.getLogger(__name__)  # under "ddpm_fast", where the command line shows these notes

# On a CPU torch.compile pays only for long jobs. Measured on the 2-core CPU machine (tiny U-Net, 16 samples of
# 3x32x32, fp32): compiling the step took 23 s and made each step 1.7x faster (56 ms -> 34 ms), so it breaks even
# at about 57 s of eager work; a busy machine compiled the same step in 274 s. Left to default (compile=None), a
# CPU sampler therefore times two eager steps of each new (batch size, method) and compiles only when the chain
# asked for would take at least this long eagerly. compile=True always compiles; compile=False never does.
CPU_COMPILE_MIN_EAGER_SECONDS = 60.0
# That break-even holds on a quiet machine. On a busy one the eager timing is inflated by the load, and the compile is
# slowed by it at least as much (the busy compile above took 12x the quiet one, a step 2.7x), so a timing taken under
# load must not tip the choice towards compiling: the threshold is scaled by the load factor, the machine's 1-minute
# load average per CPU (at least 1), which both the timing and the compile see.


def cpu_load_factor() -> float:
    """How many times busier than its cores this machine is now: the 1-minute load average over the CPU count, at
    least 1 (1 where the platform has no load average)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return 1.0
    return max(1.0, load / (os.cpu_count() or 1))


def cpu_compile_decision(eager_step_seconds: float, num_steps: int, load_factor: float) -> tuple[bool, str]:
    """(compile?, why) for a CPU chain of num_steps left to the default: compile when the chain's eager estimate
    (eager_step_seconds x num_steps, timed now) reaches CPU_COMPILE_MIN_EAGER_SECONDS x load_factor, what the
    compile itself costs this machine now in eager seconds saved."""
    estimate = eager_step_seconds * num_steps
    threshold = CPU_COMPILE_MIN_EAGER_SECONDS * load_factor
    needed = f"the {threshold:.0f} s a CPU compile needs to pay off"
    if load_factor > 1.0:  # say why the bar is higher than the quiet machine's
        needed += (f" on this machine now ({CPU_COMPILE_MIN_EAGER_SECONDS:.0f} s quiet x load factor "
                   f"{load_factor:.1f}: the compile slows down with the load as the steps do)")
    if estimate < threshold:
        return False, f"{num_steps} steps take about {estimate:.1f} s eagerly, below {needed}"
    return True, f"{num_steps} steps take about {estimate:.0f} s eagerly, at least {needed}"
# The CPU layout choice (channels_last=None): timed calls per layout, and how much faster NHWC must be to be chosen.
LAYOUT_ROUNDS = 4
LAYOUT_MARGIN = 0.05
# The timing costs 2 x (1 + LAYOUT_ROUNDS) = 10 model calls, and the faster layout saved at most ~10 % of a call per
# step (the tiny U-Net's eager forward, batch 16: 98 ms NHWC against 107 NCHW; ddpm-cifar10 at batch 16 spent 7 s of
# a 15 s 20-step chain on it): it pays only for a chain of about this many steps. A shorter first chain keeps NCHW,
# the model's own layout, untimed.
LAYOUT_MIN_STEPS = 100


class FastPathFallbackWarning(RuntimeWarning):
    """A fast path left to its default (torch.compile, CUDA graphs) failed, and FastSampler ran without it.

    Raised as a warning, once per failure; the sampler's `fallbacks` and each SamplingReport say the same after the
    fact. Turn it into an error with `warnings.simplefilter("error", ddpm_fast.FastPathFallbackWarning)`.
    """


class FastPath:
    """The runners of one FastSampler (an LRU cache of at most options.max_cached_graphs, keyed by batch size and
    StepOptions) and the policy that builds them.

    model, denoise: the sampler's prepared model and its call (x_t, t, class_labels) -> prediction. sample_shape:
    (C, H, W). options: the sampler's checked options. chain: the device buffers every runner's steps read. device:
    where the steps run. channels_last: the model's layout now; layout_pending: time both layouts on the first
    runner and keep the faster (a CPU module left to default). ahead_of_time: what says the model is compiled code
    already (a pt2 package), in which case nothing is torch.compiled: the model runs its package's code, the update
    eagerly.
    """

    def __init__(self, model: Any, denoise: Denoiser, sample_shape: tuple[int, int, int], options: SamplerOptions,
                 chain: ChainBuffers, device: torch.device, channels_last: bool, layout_pending: bool,
                 ahead_of_time: Optional[str] = None):
        self.model, self.denoise, self.sample_shape = model, denoise, sample_shape
        self.ahead_of_time = ahead_of_time
        self.options, self.chain, self.device = options, chain, device
        self.channels_last = channels_last
        self.layout_pending = layout_pending  # timed at the first runner
        self.cuda_graphs = options.cuda_graphs if options.cuda_graphs is not None else device.type == "cuda"
        self.may_compile = (options.compile if options.compile is not None else True) and ahead_of_time is None
        self.runners: collections.OrderedDict[tuple, Runner] = collections.OrderedDict()
        self.fallbacks: list[str] = []  # each fast path given up, with why

    def runner(self, batch_size: int, options: StepOptions, plan: SamplingPlan) -> "Runner":
        key = (batch_size, options)
        runner = self.runners.get(key)
        if runner is None:
            self.chain.load(plan)
            runner = self._new_runner(batch_size, options, plan.num_steps)
            self.runners[key] = runner
            while len(self.runners) > self.options.max_cached_graphs:
                self.runners.popitem(last=False)
        else:
            self.runners.move_to_end(key)
        self.settle_compile(runner, batch_size, options, plan.num_steps)
        if runner.graphs is not None:
            self.capture(runner, plan.num_steps)
        return runner

    def _new_runner(self, batch_size: int, options: StepOptions, num_steps: int) -> "Runner":
        if self.layout_pending:  # timed on the calls the steps make: 2B when guided, with labels when conditional
            self.settle_layout(2 * batch_size if options.conditioning == "guided" else batch_size,
                               options.conditioning != "none", num_steps)
        # Eager CPU steps of a seeded chain read prefetched Philox noise (PhiloxPrefetch); compiled ones draw it
        # in-kernel, where inductor fuses it.
        prefetch = (self.device.type == "cpu" and options.noise == "philox"
                    and not is_noiseless(options.method, options.eta))
        state = StepState.allocate((batch_size, *self.sample_shape), self.device, self.channels_last, options.noise,
                                   noise_buffer=prefetch, conditioning=options.conditioning,
                                   multistep=options.method in MULTISTEP_METHODS, x0_history=options.x0_history,
                                   last_sample=options.method == "unipc")
        eager_core = make_step_core(self.denoise, replace(options, noise="given") if prefetch else options)
        # Eager until settle_compile decides; what the sampler already gave up, this batch size runs without too.
        runner = Runner(state, eager_core, self.chain, fallbacks=self.fallbacks,
                        prefetch=PhiloxPrefetch(options, state.seed, state.noise, self.chain.model_timesteps,
                                                self.chain.kernel_steps, self.chain.alphas_cumprod.numel() - 1,
                                                self.chain.table.shape[1] - 1) if prefetch else None,
                        compile_source=make_step_core(self.denoise, options), method=options.method)
        if self.cuda_graphs:  # torch-drawn noise goes in between steps: one step per graph then
            per_graph = self.options.steps_per_graph if options.noise == "philox" else 1
            runner.graphs = GraphedSteps(runner.step, state, per_graph)  # captured later, with the settled core
        return runner

    def settle_layout(self, batch_size: int, class_conditional: bool = False, num_steps: Optional[int] = None) -> None:
        """Keep the faster memory layout for this model on a CPU: after one warm-up call in each, the fastest of
        LAYOUT_ROUNDS calls in each, interleaved (so a machine growing busier favours neither). NHWC must win by
        LAYOUT_MARGIN: NCHW is what the model's own loop runs, and a near tie is noise.

        The timing is eager; a chain that will run compiled (compile=True, or the CPU policy's verdict on a chain of
        num_steps at the eager time just measured) keeps NCHW instead: inductor's CPU code for the tiny U-Net ran
        NCHW as fast or faster (Intel Xeon, 2 threads: 63 against 70 ms a step at batch 16, a tie at batch 1) where
        the eager model was faster NHWC. A chain of fewer than LAYOUT_MIN_STEPS steps keeps NCHW untimed: the timing
        would cost more than the faster layout could save."""
        self.layout_pending = False
        if (self.options.compile and self.may_compile) or (num_steps is not None and num_steps < LAYOUT_MIN_STEPS):
            self.channels_last = False
            self.model.to(memory_format=torch.contiguous_format)
            return
        x = torch.zeros(batch_size, *self.sample_shape, device=self.device)
        t = torch.zeros(batch_size, dtype=torch.int64, device=self.device)
        labels = t if class_conditional else None  # class 0
        seconds: dict[bool, list[float]] = {True: [], False: []}
        for round_index in range(1 + LAYOUT_ROUNDS):
            for channels_last in (True, False):
                layout = torch.channels_last if channels_last else torch.contiguous_format
                self.model.to(memory_format=layout)
                x_layout = x.contiguous(memory_format=layout)
                start = time.perf_counter()
                self.denoise(x_layout, t, labels)
                if round_index:  # round 0 warms up (oneDNN primitives, allocations)
                    seconds[channels_last].append(time.perf_counter() - start)
        self.channels_last = min(seconds[True]) < (1.0 - LAYOUT_MARGIN) * min(seconds[False])
        if self.channels_last and self.options.compile is None and self.may_compile and num_steps is not None:
            self.channels_last = not cpu_compile_decision(min(seconds[True]), num_steps, cpu_load_factor())[0]
        self.model.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def settle_compile(self, runner: "Runner", batch_size: int, options: StepOptions, num_steps: int) -> None:
        """Decide whether this runner's steps run compiled, before its first chain (and again for a longer chain
        while the CPU policy kept it eager); run one step either way, so a model that fails shows it here."""
        if runner.compiled or (runner.checked and not runner.by_policy):
            return
        if not self.may_compile:  # compile=False, a compile failure the sampler fell back from, or a pt2 package
            if self.ahead_of_time is not None:
                runner.compile_decision = f"{self.ahead_of_time}; the update eager"
            elif self.fallbacks and self.options.compile is None:
                runner.compile_decision = "eager: torch.compile failed earlier (see fallbacks)"
            else:
                runner.compile_decision = "eager (compile=False)"
            runner.compile_hint = None
            runner.check()
            return
        if self.options.compile is None and self.device.type == "cpu":
            if runner.eager_step_seconds is None:
                runner.eager_step_seconds = runner.time_eager_step()
            compile_now, reason = cpu_compile_decision(runner.eager_step_seconds, num_steps, cpu_load_factor())
            if not compile_now:
                runner.by_policy = True
                runner.compile_decision = f"eager: {reason}"
                runner.compile_hint = "compile=True"
                _LOG.debug("running the %s step for batch %d eagerly: %s", options.method, batch_size, reason)
                return
        else:
            reason = "compile=True" if self.options.compile else f"the default on {self.device.type}"
        _LOG.info("compiling the %s step for batch %d with torch.compile (%s); this takes a while once (%s) and is "
                  "cached for later calls", options.method, batch_size, reason,
                  "on a CPU from about 20 s to a few minutes" if self.device.type == "cpu" else "tens of seconds")
        start = time.perf_counter()
        eager_core = runner.core
        runner.core, runner.compiled, runner.by_policy = self.compile_step(runner.compile_source), True, False
        runner.compile_hint = None
        self.check_compiles(runner, eager_core)
        if runner.compiled:
            seconds = time.perf_counter() - start
            runner.compile_decision = f"compiled ({reason}; compiling took {seconds:.1f} s)"
            _LOG.info("compiled the %s step for batch %d in %.1f s", options.method, batch_size, seconds)

    def capture(self, runner: "Runner", num_steps: int) -> None:
        """Capture the graphs a chain of num_steps replays. Left to default, a step that cannot be captured (a model
        that syncs with the host, say) runs without graphs, with a warning; cuda_graphs=True raises."""
        try:
            runner.graphs.prepare(num_steps)
        except Exception as error:  # noqa: BLE001 — any capture failure
            if self.options.cuda_graphs is not None:
                raise
            affected = {id(cached): cached for cached in (runner, *self.runners.values())}.values()
            self.fall_back(f"CUDA-graph capture failed ({type(error).__name__}: {error}); FastSampler runs the "
                           "steps without graphs", affected)
            torch.cuda.synchronize(self.device)
            self.cuda_graphs = False
            for cached in affected:
                cached.graphs = None

    def compile_step(self, core: Callable) -> Callable:
        # dynamo keeps its compiled entries on the code object, at most 8 per object; every runner's core shares one,
        # so several batch sizes would exhaust it. A copy of the code object per runner gives each its own cache.
        code = core.__code__.replace(co_name=f"{core.__code__.co_name}_{next(_RUNNER_IDS)}")
        own = types.FunctionType(code, core.__globals__, code.co_name, core.__defaults__, core.__closure__)
        return torch.compile(own, fullgraph=True, dynamic=False, mode=self.options.compile_mode)

    def check_compiles(self, runner: "Runner", eager_core: Callable) -> None:
        """Run the compiled step once now: left to default, compile falls back to eager when torch.compile cannot
        handle the model; compile=True raises."""
        try:
            runner.check()
        except Exception as error:  # noqa: BLE001 — any compile failure; retried eagerly below
            if self.options.compile is not None:
                raise
            self.fall_back(f"torch.compile failed for this model ({type(error).__name__}: {error}); "
                           "FastSampler runs it eagerly", [runner])
            self.may_compile = False
            runner.core, runner.compiled = eager_core, False
            runner.compile_decision = "eager: torch.compile failed (see fallbacks)"
            runner.check()

    def fall_back(self, reason: str, runners) -> None:
        """Record a fast path given up: on the sampler (later batch sizes run without it too) and on the runners
        whose steps now run without it; warn once."""
        self.fallbacks.append(reason)
        for runner in runners:
            runner.fallbacks.append(reason)
        warnings.warn(reason, FastPathFallbackWarning, stacklevel=5)


class Runner:
    """The buffers of one (batch size, options) key and how its steps run: eagerly or compiled, one by one or
    replayed from CUDA graphs."""

    def __init__(self, state: StepState, core: Callable, chain: ChainBuffers, fallbacks: list[str],
                 prefetch: Optional[PhiloxPrefetch] = None, compile_source: Optional[Callable] = None,
                 method: str = "ddpm"):
        self.state, self.core, self.chain = state, core, chain
        self.method = method  # which steps draw generator= noise (chain.draws_noise_on)
        self.prefetch = prefetch  # fills state.noise for eager steps; compiled steps draw their noise in-kernel
        self.compile_source = compile_source if compile_source is not None else core  # what torch.compile gets
        self.compiled = False
        self.checked = False  # one step ran with the current core
        self.by_policy = False  # eager because the CPU policy judged the chain too short to pay for a compile
        self.eager_step_seconds: Optional[float] = None
        self.compile_decision = ""
        self.compile_hint: Optional[str] = None  # the option that would compile these eager steps
        self.graphs: Optional[GraphedSteps] = None
        self.fallbacks = list(fallbacks)  # the fast paths these steps run without, with why

    def step(self) -> None:
        run_step(self.core, self.chain, self.state)

    def check(self) -> None:
        """Run step 0 on the zero-filled buffers (a model or compile that fails shows it here, not mid-run)."""
        self.step()
        self.state.step_index.zero_()
        self.checked = True

    def time_eager_step(self) -> float:
        """Seconds of one eager step: the faster of two, so one-time costs (allocation, oneDNN set-up) drop out."""
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            self.check()
            seconds.append(time.perf_counter() - start)
        return min(seconds)

    def run(self, num_steps: int, generator: Optional[torch.Generator], device: torch.device,
            progress: Optional[Callable[[int], None]]) -> int:
        """Run num_steps steps; returns how many CUDA-graph replays that took (0: the steps ran one by one)."""
        noise = self.state.noise

        def draw(step_index: int) -> None:
            # drawn before the step as a reference loop would draw it after the model call: the same stream, unless
            # the model itself draws random numbers
            if draws_noise_on(self.method, step_index, num_steps):
                noise.copy_(torch_noise(tuple(noise.shape), generator, device))

        if self.graphs is not None:
            return self.graphs.replay(num_steps, draw if noise is not None else None, progress)
        prefetch = self.prefetch if not self.compiled else None
        for i in range(num_steps):
            if prefetch is not None:
                prefetch.fill(i, num_steps)
            elif noise is not None and self.state.seed is None:
                draw(i)
            self.step()
            if progress is not None:
                progress(1)
        return 0
