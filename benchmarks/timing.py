"""Median timings and the device's copy-rate ceiling, measured the same way for every method."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def median_seconds(fn: Callable[[], object], device: torch.device, smoke: bool = False) -> float:
    """Median wall time of fn() after warm-up: CUDA events via triton.testing.do_bench on a GPU."""
    if smoke:
        fn()
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    if device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=200, return_mode="median") / 1e3
    for _ in range(3):
        fn()
    samples = []
    deadline = time.perf_counter() + 1.0
    while len(samples) < 5 or (time.perf_counter() < deadline and len(samples) < 200):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def copy_gbps(num_bytes: int, device: torch.device, smoke: bool = False) -> float:
    """Device-to-device copy rate (read + write bytes per second / 1e9) for a buffer of num_bytes."""
    src = torch.empty(max(num_bytes // 4, 1), dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), device, smoke)
    return 2 * src.numel() * 4 / seconds / 1e9


class Rotating:
    """Cycles through several copies of the inputs so small cases are not timed out of a warm cache."""

    def __init__(self, make: Callable[[], tuple], bytes_per_set: int, budget_bytes: int = 256 << 20, cap: int = 16):
        count = max(1, min(cap, budget_bytes // max(bytes_per_set, 1)))
        self.sets = [make() for _ in range(count)]
        self.index = 0

    def next(self) -> tuple:
        self.index = (self.index + 1) % len(self.sets)
        return self.sets[self.index]
