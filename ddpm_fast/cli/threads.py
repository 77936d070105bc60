"""How many CPU threads a command gives torch: as many as there are cores that other processes leave free.

torch's CPU ops split work over OpenMP threads that meet at a barrier after each op. When another process holds one
of two cores, the thread sharing that core arrives late at every barrier, and the thread on the free core spins
there waiting: on the 2-core CPU machine the demo's training went from ~0.15 s to 7-13 s per step. One thread per
free core avoids the wait (measured by benchmarks/busy_machine.py). Linux-only measurement (/proc/stat); elsewhere,
and when the user set OMP_NUM_THREADS or DDPM_FAST_THREADS, the choice is theirs.
"""

from __future__ import annotations

import os
import time
from typing import Optional

ENVIRONMENT = "DDPM_FAST_THREADS"  # "all": every core (torch's default); N: N threads; unset: the free cores
SAMPLE_SECONDS = 0.25  # how long the other processes' load is watched
HELP_NOTE = (" On a CPU, torch gets one thread per core that other processes leave free (DDPM_FAST_THREADS=all or =N, "
             "or OMP_NUM_THREADS, choose instead).")


def _own_cpus() -> Optional[set[int]]:
    """The CPUs this process may run on (its affinity mask: a container's share, not the host's), or None."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def available_cores() -> int:
    cpus = _own_cpus()
    return len(cpus) if cpus else (os.cpu_count() or 1)


def busy_cores(seconds: float = SAMPLE_SECONDS) -> Optional[float]:
    """How many of this process's cores other processes kept busy over the next `seconds` (this one sleeps
    meanwhile), from the per-CPU counters of /proc/stat; None where there is no /proc/stat."""
    cpus = _own_cpus()

    def counters() -> Optional[dict[int, tuple[int, int]]]:
        found = {}
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                for line in handle:
                    name, *values = line.split()
                    if not name.startswith("cpu") or name == "cpu":
                        continue
                    if not name[3:].isdigit():
                        break
                    fields = [int(value) for value in values]
                    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
                    found[int(name[3:])] = (sum(fields[:8]), idle)
        except (OSError, ValueError, IndexError):
            return None
        return found or None

    before = counters()
    if before is None:
        return None
    time.sleep(seconds)
    after = counters()
    if after is None:
        return None
    busy = 0.0
    for cpu in (cpus if cpus else set(after)) & set(before) & set(after):
        total = after[cpu][0] - before[cpu][0]
        if total > 0:
            busy += 1.0 - (after[cpu][1] - before[cpu][1]) / total
    return busy


def check_thread_environment() -> None:
    """The ValueError choose_threads() would raise for a bad DDPM_FAST_THREADS / OMP_NUM_THREADS, without measuring
    the load: for the command line to report it before its slow imports."""
    chosen = os.environ.get(ENVIRONMENT, "").strip()
    if chosen and chosen != "all":
        cores = available_cores()
        if not chosen.isdigit() or not 1 <= int(chosen) <= cores:
            raise ValueError(f"environment variable {ENVIRONMENT} must be 'all' or an int in [1, {cores}] (this "
                             f"process's cores), got {chosen!r}")
    elif not chosen:
        omp = os.environ.get("OMP_NUM_THREADS", "").strip()
        if omp and (not omp.isdigit() or int(omp) < 1):  # OpenMP would only warn and carry on with its default
            raise ValueError(f"environment variable OMP_NUM_THREADS must be a positive int, got {omp!r}")


def choose_threads() -> tuple[Optional[int], str]:
    """(threads for torch.set_num_threads or None to leave torch's default, why). Reads DDPM_FAST_THREADS first."""
    check_thread_environment()
    chosen = os.environ.get(ENVIRONMENT, "").strip()
    if chosen == "all":
        return None, f"{ENVIRONMENT}=all: torch's default"
    cores = available_cores()
    if chosen:
        return int(chosen), f"{ENVIRONMENT}={chosen}"
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp:
        return None, f"OMP_NUM_THREADS={omp}"
    busy = busy_cores()
    if busy is None:
        return None, "torch's default (no /proc/stat to see other processes' load)"
    threads = max(1, min(cores, round(cores - busy)))
    return threads, f"one per free core (other processes kept {busy:.1f} of {cores} cores busy)"


def configure_torch_threads() -> str:
    """Apply choose_threads() to torch (imports it); returns a line saying what was chosen and why."""
    threads, why = choose_threads()
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return f"CPU threads: {torch.get_num_threads()} — {why}"
