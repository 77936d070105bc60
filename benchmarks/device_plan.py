"""The GPU verification plan: what one call on the lent GPU machine runs, within its deadline, and what it brings back.

A lent GPU gives a session 15 minutes of device time in all (start included), one command at most 10 minutes, and at
most 8 files of $OUT (2 folders deep, 16 MiB each) come back. So the plan is a few calls, each one command that
finishes in about 9 minutes whatever happens, the first one carrying the verdict and the headline:

  call 1 (run it first):  preflight (~20 s: versions, the GPU, a C compiler and Python.h for Triton, the test plugins)
                          -> the gpu-marked tests in parallel (pytest -n 8; a FastPathFallbackWarning fails a test,
                          tests/conftest.py) under a hard deadline -> in the time left, the headline: sampling at
                          batch 1 and 16 (naive fp32 loop, diffusers fp16 + compile if it was carried, FastSampler),
                          then the kernels group (both `ddpm-fast bench --quick`).
  call 2:                 sampling at batch 128 and 512 (full mode), then quality against time (quick mode).
  call 3:                 the unet and training groups.
  call 4:                 the guidance group (batch 16 and 128), then the onnx group (the machine's onnxruntime has
                          no CUDA provider: those cases are reported
                          unavailable, and the CUDA-provider tests skip).
  call 5:                 cold start: fresh processes to their first images, a bf16 CUDA pt2 package beside the
                          defaults, compile=True (cold and warm inductor cache) and diffusers.

Usage, from the repository root (the device tool's command):
    python3 benchmarks/device_plan.py --call 1 --commit <sha> [--deadline SECONDS]
    python3 benchmarks/device_plan.py --call 1 --dry-run        # on a CPU: the stages, deadlines and files only
Back on this machine, the calls' result folders become one set:
    ddpm-fast bench --merge call1/sampling call1/kernels call2/sampling ... --out benchmarks/results/<gpu>-<date>/

Files under $OUT (at most 6): plan.txt (preflight, every stage's command, deadline, time and status, the tail of
each log), gpu-tests.log, and per benchmark stage <name>/results.json and <name>/results.md (plots and pytest.log are
folded into plan.txt and removed: `--merge` draws the plots again from results.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from typing import Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DEADLINE = 530  # seconds for the whole call: the device tool's 10-minute limit, less start-up and transfer
MAX_FILES = 8  # what the device tool brings back from $OUT
MAX_DEPTH = 2  # folders below $OUT
STAGE_SLACK = 25.0  # seconds kept per later stage beyond its min_seconds: stopping a stage and starting the next
INTERRUPT_GRACE = 15.0  # seconds an interrupted stage gets to write its summary before it is killed
TAIL_LINES = 25


@dataclass
class Stage:
    """One step of a call. budget: the most seconds it may take; min_seconds: below this much time left it is
    skipped rather than started (it could not finish); keeps: files it leaves under $OUT."""

    name: str
    command: list[str]
    budget: float
    min_seconds: float
    env: dict = field(default_factory=dict)
    log: Optional[str] = None
    keeps: tuple[str, ...] = ()
    status: str = "not run"
    seconds: float = 0.0


def gpu_tests_stage(workers: int) -> Stage:
    parallel = ["-n", str(workers)] if workers > 1 else []
    # TRITON_INTERPRET=0: compiled kernels even where tests/conftest.py finds no nvidia-smi on PATH.
    return Stage("gpu-tests", [sys.executable, "-m", "pytest", "tests", "-m", "gpu", *parallel, "-q", "-rfEs",
                               "-p", "no:cacheprovider"], env={"TRITON_INTERPRET": "0"},
                 budget=210, min_seconds=60, log="gpu-tests.log", keeps=("gpu-tests.log",))


def bench_stage(name: str, suites: list[str], budget: float, min_seconds: float, quick: bool = False,
                env: Optional[dict] = None, commit: str = "unknown") -> Stage:
    command = [sys.executable, "-m", "ddpm_fast", "bench", "--suite", *suites, "--out", f"{{out}}/{name}"]
    if quick:
        command.append("--quick")
    return Stage(name, command, budget=budget, min_seconds=min_seconds,
                 env={"DDPM_FAST_COMMIT": commit, "TRITON_INTERPRET": "0", **(env or {})},
                 keeps=(f"{name}/results.json", f"{name}/results.md"))


CALLS = (1, 2, 3, 4, 5)


def call_stages(call: int, workers: int, commit: str) -> list[Stage]:
    """The stages of one device call, in the order they run."""
    if call == 1:
        return [gpu_tests_stage(workers),
                bench_stage("sampling", ["sampling"], budget=240, min_seconds=120, quick=True, commit=commit,
                            env={"DDPM_FAST_SAMPLING_BATCHES": "1,16"}),
                bench_stage("kernels", ["kernels"], budget=120, min_seconds=45, quick=True, commit=commit)]
    if call == 2:
        return [bench_stage("sampling", ["sampling"], budget=330, min_seconds=240, commit=commit,
                            env={"DDPM_FAST_SAMPLING_BATCHES": "128,512"}),
                bench_stage("quality", ["quality"], budget=190, min_seconds=150, quick=True, commit=commit)]
    if call == 3:
        return [bench_stage("unet", ["unet"], budget=260, min_seconds=120, commit=commit),
                bench_stage("training", ["training"], budget=260, min_seconds=120, commit=commit)]
    if call == 4:
        return [bench_stage("guidance", ["guidance"], budget=220, min_seconds=120, commit=commit),
                bench_stage("onnx", ["onnx"], budget=300, min_seconds=180, commit=commit)]
    if call == 5:
        return [bench_stage("cold_start", ["cold_start"], budget=500, min_seconds=240, commit=commit)]
    raise ValueError(f"call must be one of {', '.join(map(str, CALLS))}, got {call!r}")


def planned_files(stages: list[Stage]) -> list[str]:
    """Every file a call leaves under $OUT, relative to it."""
    return ["plan.txt", *(path for stage in stages for path in stage.keeps)]


def check_layout(files: list[str]) -> None:
    """The device tool brings back at most MAX_FILES files, at most MAX_DEPTH folders below $OUT."""
    if len(files) > MAX_FILES:
        raise ValueError(f"the plan leaves {len(files)} files under $OUT; at most {MAX_FILES} come back")
    deep = [path for path in files if len(pathlib.PurePosixPath(path).parts) - 1 > MAX_DEPTH]
    if deep:
        raise ValueError(f"too deep for the device tool: {', '.join(deep)}")


# ---------------------------------------------------------------------------------------------------- preflight


def preflight() -> tuple[list[str], list[str], dict]:
    """(report lines, problems that stop a GPU run, facts). Imports torch/triton here, never in the stages' process."""
    lines, problems, facts = [f"python {sys.version.split()[0]} ({sys.executable})"], [], {}
    try:
        import torch
        import triton

        lines.append(f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}")
        facts["cuda"] = torch.cuda.is_available()
        if facts["cuda"]:
            properties = torch.cuda.get_device_properties(0)
            lines.append(f"GPU: {properties.name}, {properties.total_memory / 2**30:.0f} GiB, "
                         f"sm_{properties.major}{properties.minor}, {torch.cuda.device_count()} device(s)")
        else:
            problems.append("no CUDA device (torch.cuda.is_available() is False)")
    except ImportError as error:
        problems.append(f"cannot import torch/triton: {error}")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    header = pathlib.Path(sysconfig.get_paths()["include"]) / "Python.h"
    lines.append(f"C compiler for Triton's launcher: {compiler or 'MISSING'}; Python.h: "
                 f"{'present' if header.is_file() else 'MISSING'} ({header})")
    if compiler is None:
        problems.append("no C compiler: Triton cannot build its launcher")
    if not header.is_file():
        problems.append(f"no {header}: Triton cannot build its launcher")
    for module, purpose in (("pytest", "the tests"), ("xdist", "parallel gpu tests (-n)"),
                            ("pytest_benchmark", "ddpm-fast bench"), ("diffusers", "the diffusers peers"),
                            ("denoising_diffusion_pytorch", "the lucidrains sampling peer"),
                            ("onnxruntime", "the onnx group")):
        found = importlib.util.find_spec(module) is not None
        facts[module] = found
        lines.append(f"{module}: {'present' if found else 'absent'} ({purpose})")
    if not facts["pytest"] or not facts["pytest_benchmark"]:
        problems.append("pytest and pytest-benchmark are needed")
    if facts["onnxruntime"]:
        import onnxruntime

        lines.append(f"onnxruntime {onnxruntime.__version__}: {', '.join(onnxruntime.get_available_providers())}")
    return lines, problems, facts


# ---------------------------------------------------------------------------------------------------------- run


def _stage_process_setup() -> None:
    """In the stage's child, before exec: its own process group, and SIGINT restored to its default. A plan started
    in the background by a non-interactive shell inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler: the interrupt at the deadline would be lost and the stage killed after the grace."""
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop(process: subprocess.Popen) -> None:
    """Interrupt a stage's process group (pytest then writes its summary), and kill it if it lingers."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=INTERRUPT_GRACE)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def run_stage(stage: Stage, out: pathlib.Path, seconds: float) -> list[str]:
    """Run one stage within `seconds`; returns its log's tail. The stage runs in its own process group (not its own
    session: the device tool kills a command's processes when the command ends, except those of a new session), which
    is interrupted at the deadline, or when the plan itself is terminated."""
    command = [part.replace("{out}", str(out)) for part in stage.command]
    env = {**os.environ, **stage.env, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log_path = out / (stage.log or f"{stage.name}.log")
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=_stage_process_setup)
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: (_stop(process), sys.exit(143)))
        try:
            code = process.wait(timeout=seconds)
            stage.status = f"exit {code}"
        except subprocess.TimeoutExpired:
            _stop(process)
            stage.status = f"DEADLINE: stopped after {seconds:.0f} s"
        finally:
            signal.signal(signal.SIGTERM, previous)
    stage.seconds = time.monotonic() - start
    tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-TAIL_LINES:]
    if stage.log is None:  # benchmark stages: bench.log and pytest.log go into plan.txt, the plots are drawn later
        log_path.unlink()
        folder = out / stage.name
        pytest_log = folder / "pytest.log"
        if pytest_log.is_file():
            tail += ["--- pytest.log:"] + pytest_log.read_text(encoding="utf-8", errors="replace").splitlines()[
                -TAIL_LINES:]
        for extra in folder.glob("*") if folder.is_dir() else ():
            if extra.name not in ("results.json", "results.md"):
                shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    return tail


def run_stages(stages: list[Stage], out: pathlib.Path, deadline: float, started: float, report: list[str]) -> bool:
    """Run the stages in order within `deadline` seconds of `started` (time.monotonic()), appending to report and
    rewriting plan.txt after each, so a call cut short still brings back what it did. Each stage gets its budget
    but never the time the later stages need to start (their min_seconds); a stage that cannot get its own
    min_seconds is skipped. Returns True when any stage did not exit 0."""
    failed = False
    for index, stage in enumerate(stages):
        left = deadline - (time.monotonic() - started)
        reserve = sum(later.min_seconds + STAGE_SLACK for later in stages[index + 1:])
        seconds = min(stage.budget, left - reserve)
        if seconds < stage.min_seconds:
            stage.status = f"SKIPPED: {left:.0f} s left ({reserve:.0f} kept for later stages), needs " \
                           f"{stage.min_seconds:.0f}"
            tail = []
        else:
            tail = run_stage(stage, out, seconds)
        failed |= not stage.status.startswith("exit 0")
        report += [f"## {stage.name}: {stage.status} after {stage.seconds:.0f} s", *tail, ""]
        write_plan(out, report)
    return failed


def write_plan(out: pathlib.Path, report: list[str]) -> None:
    """plan.txt: the report so far (rewritten after each step, so a call cut short still says what it did)."""
    (out / "plan.txt").write_text("\n".join(report) + "\n", encoding="utf-8")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--call", type=int, choices=CALLS, default=1, help="which call of the plan (default 1)")
    parser.add_argument("--commit", default=os.environ.get("DDPM_FAST_COMMIT", "unknown"),
                        help="git commit of the work tree, recorded in the results")
    parser.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE,
                        help=f"seconds the whole call may take (default {DEFAULT_DEADLINE})")
    parser.add_argument("--workers", type=int, default=8, help="pytest-xdist workers for the gpu tests (default 8)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(os.environ.get("OUT", "/tmp/ddpm_fast_out")),
                        help="where the files go (default $OUT)")
    parser.add_argument("--dry-run", action="store_true",
                        help="run the preflight and write the plan (stages, deadlines, files) without running them")
    args = parser.parse_args(argv)
    if args.deadline <= 0:
        parser.error(f"--deadline must be positive, got {args.deadline}")
    started = time.monotonic()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    lines, problems, facts = preflight()
    workers = args.workers if facts.get("xdist") else 1
    stages = call_stages(args.call, workers, args.commit)
    files = planned_files(stages)
    check_layout(files)
    report = [f"ddpm_fast device plan, call {args.call}, commit {args.commit}, deadline {args.deadline:.0f} s",
              "", "## preflight", *lines, *(f"PROBLEM: {problem}" for problem in problems), "", "## stages"]
    report += [f"- {stage.name}: budget {stage.budget:.0f} s (skipped with under {stage.min_seconds:.0f} s left): "
               f"{' '.join(stage.command)}" + (f"  [env {stage.env}]" if stage.env else "") for stage in stages]
    report += ["", f"## files under $OUT: {', '.join(files)}", ""]
    write_plan(out, report)
    if args.dry_run:
        print("\n".join(report))
        print("dry run: nothing started")
        return 0
    if problems:
        report.append("ABORTED: preflight problems")
        write_plan(out, report)
        print("\n".join(report))
        return 2

    failed = run_stages(stages, out, args.deadline, started, report)
    summary = [f"{stage.name:10s} {stage.status:40s} {stage.seconds:6.0f} s" for stage in stages]
    report += ["## summary", *summary, f"total {time.monotonic() - started:.0f} s"]
    write_plan(out, report)
    print("\n".join(summary))
    for stage in stages:  # the headline last, where the device tool's output tail shows it
        results = out / stage.name / "results.md"
        if results.is_file():
            print(f"--- {stage.name}:", *results.read_text(encoding="utf-8").splitlines()[:20], sep="\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
