"""Median timings and the device's ceilings (copy rate, bf16 matmul rate), measured the same way for every method.

Modes: smoke (--benchmark-disable, CI: each call once), quick (DDPM_FAST_BENCH_QUICK=1, `ddpm-fast bench --quick`:
real medians over a shorter budget, fewer sizes) and full (the default).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import torch

from ddpm_fast.cli.bench import QUICK_ENV
CPU_BUDGET_SECONDS = {"full": 1.0, "quick": 0.25}  # how long a CPU median keeps sampling
CPU_MIN_SAMPLES = {"full": 5, "quick": 3}  # ... taking at least this many samples, after as many warm-up calls
GPU_REP_MS = {"full": 200, "quick": 50}  # do_bench's measuring time


def quick_mode() -> bool:
    """True under `ddpm-fast bench --quick` (it sets DDPM_FAST_BENCH_QUICK=1 for the pytest run)."""
    return os.environ.get(QUICK_ENV, "").strip() not in ("", "0")


def _mode() -> str:
    return "quick" if quick_mode() else "full"


def median_seconds(fn: Callable[[], object], device: torch.device, smoke: bool = False) -> float:
    """Median wall time of fn() after warm-up: CUDA events via triton.testing.do_bench on a GPU."""
    if smoke:
        fn()
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    mode = _mode()
    if device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=GPU_REP_MS[mode], return_mode="median") / 1e3
    for _ in range(CPU_MIN_SAMPLES[mode]):
        fn()
    samples = []
    deadline = time.perf_counter() + CPU_BUDGET_SECONDS[mode]
    while len(samples) < CPU_MIN_SAMPLES[mode] or (time.perf_counter() < deadline and len(samples) < 200):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def compare_seconds(fns: dict[str, Callable[[], object]], device: torch.device, smoke: bool = False) -> dict:
    """{name: median seconds of fn()} for several methods. On a CPU the calls go round-robin after a warm-up of each,
    one call of every method per round, so a slow patch of a shared machine hits every method alike; on a GPU each
    method is timed by do_bench in turn (CUDA events; the host's load does not reach them)."""
    if smoke or device.type == "cuda":
        return {name: median_seconds(fn, device, smoke) for name, fn in fns.items()}
    mode = _mode()
    for fn in fns.values():
        for _ in range(CPU_MIN_SAMPLES[mode]):
            fn()
    samples: dict[str, list] = {name: [] for name in fns}
    deadline = time.perf_counter() + CPU_BUDGET_SECONDS[mode] * len(fns)
    rounds = 0
    while rounds < CPU_MIN_SAMPLES[mode] or (time.perf_counter() < deadline and rounds < 200):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
        rounds += 1
    return {name: statistics.median(values) for name, values in samples.items()}


def copy_call(num_bytes: int, device: torch.device) -> tuple[Callable[[], object], int]:
    """(a device-to-device copy of a buffer of num_bytes, the bytes it moves: read + write)."""
    src = torch.empty(max(num_bytes // 4, 1), dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2 * src.numel() * 4


def kernel_times(methods: dict[str, Callable[[], object]], num_bytes: int, device: torch.device,
                 smoke: bool = False) -> tuple[dict, float]:
    """({method: median seconds}, copy GB/s): a memory-bound case's methods and the copy of a buffer of num_bytes,
    timed together (round-robin on a CPU), so the fraction of the copy rate compares like with like."""
    copy, moved = copy_call(num_bytes, device)
    times = compare_seconds({**methods, "copy": copy}, device, smoke)
    return times, moved / times.pop("copy") / 1e9


def matmul_tflops(device: torch.device, smoke: bool = False) -> float:
    """The device's dense bf16 matmul rate in TFLOP/s, measured now: the ceiling the U-Net's convolutions aim at."""
    size = 8192 if device.type == "cuda" else (256 if smoke else 1024)
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    return 2 * size ** 3 / median_seconds(lambda: a @ b, device, smoke) / 1e12


def kernel_figures(shape, dtype: str, bytes_per_call: int, times: dict, copy_rate: float) -> dict:
    """The extra_info of a memory-bound case: GB/s and fraction of the copy rate for every method, and the ratios of
    ours ("ddpm_fast") to the naive eager ops and to torch.compile of the same math (report.py renders it)."""
    gbps = {name: bytes_per_call / seconds / 1e9 for name, seconds in times.items()}
    fraction = {name: value / copy_rate for name, value in gbps.items()}
    return {
        "kind": "kernel", "shape": list(shape), "dtype": dtype, "bytes_per_call": bytes_per_call,
        "seconds": times, "gbps": gbps, "copy_gbps": copy_rate,
        "fraction_of_copy": fraction, "fraction_of_copy_rate": fraction["ddpm_fast"],
        "speedup_vs_naive": times["naive_eager"] / times["ddpm_fast"],
        "speedup_vs_compile": times["torch_compile"] / times["ddpm_fast"],
    }


class Rotating:
    """Cycles through several copies of the inputs so small cases are not timed out of a warm cache."""

    def __init__(self, make: Callable[[], tuple], bytes_per_set: int, budget_bytes: int = 256 << 20, cap: int = 16):
        count = max(1, min(cap, budget_bytes // max(bytes_per_set, 1)))
        self.sets = [make() for _ in range(count)]
        self.index = 0

    def next(self) -> tuple:
        self.index = (self.index + 1) % len(self.sets)
        return self.sets[self.index]
