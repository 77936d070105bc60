"""CUDA graphs of a chain's steps: k consecutive steps and one step captured on the same static buffers, replayed to
run any number of steps with no host work beyond the replay calls (model, fused update and in-kernel noise inside;
loop.py holds the step itself)."""

from __future__ import annotations

import time
from typing import Callable, Optional

import torch

from .loop import StepState


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
