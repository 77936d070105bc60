"""The demo on a shared CPU: quiet against busy, for each thread setting. A script, not a timed test.

On a 2-core machine torch's two CPU threads wait on each other when another process holds one of the cores: each
parallel region ends at a barrier that the thread sharing its core with the other process reaches late. This script
runs `ddpm-fast demo` in a reduced mode (a short training run and short sampling chains, in a fresh run folder each
time) as a subprocess, first on a quiet machine and then beside one busy process (a Python spin loop), for each
setting below, and writes the wall times and their ratio:

  default       what `ddpm-fast demo` does by itself: one torch thread per core other processes leave free
                (ddpm_fast/cli/threads.py)
  all-cores     torch on every core, OpenMP's default wait policy (the behaviour before the demo chose)
  one-thread    OMP_NUM_THREADS=1
  passive       every core, OMP_WAIT_POLICY=PASSIVE (waiting threads sleep instead of spinning)

Measured on the 2-core CPU machine (benchmarks/results/cpu-2-core-2026-11-30-busy): busy / quiet was 2.68x for
all-cores (14.4 s -> 38.5 s), 1.15x for the default (15.5 s -> 17.7 s, one thread while the other core was busy),
0.99x for one-thread (but 18.8 s quiet) and 1.19x for passive (20.6 s quiet: sleeping threads cost every op).

Usage (from the repository root; about 10 minutes on 2 cores, longer when the busy runs are slow):
    python benchmarks/busy_machine.py --out benchmarks/results/<machine>-<date>-busy
    python benchmarks/busy_machine.py --settings default all-cores --repeats 1     # a subset
It writes busy_machine.json and busy_machine.md into --out. Run it on an otherwise idle machine: its "quiet" figures
are only quiet when nothing else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

# The demo's reduced mode: 100 training steps at 16x16, then both samplers over 50-step chains.
DEMO_ARGUMENTS = ["--steps", "100", "--batch-size", "32", "--timesteps", "50", "--num-samples", "16", "--no-progress"]
SETTINGS = {
    "default": {},
    "all-cores": {"DDPM_FAST_THREADS": "all"},
    "one-thread": {"OMP_NUM_THREADS": "1"},
    "passive": {"DDPM_FAST_THREADS": "all", "OMP_WAIT_POLICY": "PASSIVE"},
}
BUSY_LOOP = "while True:\n    pass\n"


def run_demo(environment: dict[str, str]) -> dict:
    """One reduced demo in a fresh run folder: its wall seconds and the training seconds it printed."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "DDPM_FAST_THREADS", "TRITON_INTERPRET")}
    env.update(environment)
    env["TQDM_DISABLE"] = "1"
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "ddpm_fast", "demo", "--run-dir", folder, *DEMO_ARGUMENTS],
                                capture_output=True, text=True, env=env, timeout=3600)
        seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"the demo failed ({result.returncode}): {result.stderr[-2000:]}")
    train = next((float(line.split(" steps in ")[1].split(" s")[0]) for line in result.stdout.splitlines()
                  if "trained " in line and " steps in " in line), None)
    threads = next((line.strip() for line in result.stdout.splitlines() if "thread" in line), "")
    return {"seconds": seconds, "train_seconds": train, "threads_line": threads}


def measure(settings: list[str], repeats: int) -> dict:
    results = {}
    for name in settings:
        quiet = [run_demo(SETTINGS[name]) for _ in range(repeats)]
        busy_process = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        try:
            time.sleep(1.0)  # let the spinner take its core
            busy = [run_demo(SETTINGS[name]) for _ in range(repeats)]
        finally:
            busy_process.kill()
            busy_process.wait()
        quiet_s = statistics.median(run["seconds"] for run in quiet)
        busy_s = statistics.median(run["seconds"] for run in busy)
        results[name] = {"environment": SETTINGS[name], "quiet": quiet, "busy": busy, "quiet_seconds": quiet_s,
                         "busy_seconds": busy_s, "busy_over_quiet": busy_s / quiet_s}
        print(f"{name:11s} quiet {quiet_s:7.1f} s   busy {busy_s:7.1f} s   busy/quiet {busy_s / quiet_s:5.2f}x   "
              f"{quiet[0]['threads_line']}", flush=True)
    return results


def write(out: pathlib.Path, results: dict, repeats: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    record = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
              "demo_arguments": DEMO_ARGUMENTS, "repeats": repeats, "load_average_at_end": os.getloadavg(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results}
    (out / "busy_machine.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["# The reduced demo, quiet vs beside one busy process", "",
             f"{os.cpu_count()} CPUs; `ddpm-fast demo {' '.join(DEMO_ARGUMENTS)}`; median of {repeats} run(s) each; "
             "wall seconds of the whole command (start-up, training, both samplers, quality figures).", "",
             "| setting | environment | quiet (s) | busy (s) | busy / quiet | train quiet / busy (s) |",
             "|---|---|---|---|---|---|"]
    for name, result in results.items():
        train = [statistics.median(run["train_seconds"] or 0.0 for run in result[kind]) for kind in ("quiet", "busy")]
        env = ", ".join(f"{k}={v}" for k, v in result["environment"].items()) or "(none)"
        lines.append(f"| {name} | {env} | {result['quiet_seconds']:.1f} | {result['busy_seconds']:.1f} | "
                     f"{result['busy_over_quiet']:.2f}x | {train[0]:.1f} / {train[1]:.1f} |")
    (out / "busy_machine.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True, metavar="DIR")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    results = measure(args.settings, args.repeats)
    write(args.out, results, args.repeats)
    print(f"wrote {args.out / 'busy_machine.md'} and busy_machine.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
