"""`ddpm-fast bench`: run the benchmark suite (benchmarks/, pytest-benchmark) and write its report.

    ddpm-fast bench --quick                              # every group, small sizes: minutes on 2 CPU cores
    ddpm-fast bench --suite kernels unet --out DIR       # full sizes, on whatever device is present
    ddpm-fast bench --merge part1/ part2/ --out DIR      # one result set from several runs (split device calls)

Into --out (default: a new runs/bench-<device>-<date>[-quick] folder under the current one) go results.json
(pytest-benchmark's JSON plus device, versions, commit, mode and command), results.md (tables of ratios),
speedup_vs_batch.png and fraction_of_ceiling.png (with matplotlib; skipped with a message without it) and
pytest.log. The suite runs in a pytest subprocess so that its compiles and caches leave this process alone; it
prints a line as each case starts and ends, and a run stopped by Ctrl-C or a kill still writes the cases that
finished (exit status 130 / 143).

The suite lives in the source repository (benchmarks/ beside this package), not in the wheel: run from a checkout
(an editable install finds it) or pass --benchmarks DIR. It needs pytest and pytest-benchmark: the [bench] extra.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import re
import signal
import subprocess
import sys
import threading
import time

from . import arguments

# Suite name -> its files in benchmarks/, in the order a run takes them (cheap ones first).
SUITES = {
    "kernels": ("test_elementwise_kernels.py", "test_group_norm_kernel.py"),
    "unet": ("test_unet_forward.py",),
    "training": ("test_training_step.py",),
    "sampling": ("test_sampling.py",),
    "guidance": ("test_guidance.py",),
    "quality": ("test_quality.py",),
    "onnx": ("test_onnx_runtime.py",),
    "cold_start": ("test_cold_start.py",),
}
QUICK_ENV = "DDPM_FAST_BENCH_QUICK"  # read by benchmarks/timing.py: real timings, fewer sizes and rounds
THREADS_ENV = "DDPM_FAST_BENCH_THREADS"  # read by benchmarks/conftest.py: torch's (and ONNX Runtime's) CPU threads
RAW_JSON = ".pytest-benchmark.json"  # pytest-benchmark's own file, folded into results.json
# (version key, distributions that provide it): recorded in every results file.
VERSIONED = (("ddpm_fast", ("ddpm-fast",)), ("torch", ("torch",)), ("triton", ("triton",)),
             ("onnxruntime", ("onnxruntime-gpu", "onnxruntime")), ("onnx", ("onnx",)),
             ("diffusers", ("diffusers",)), ("numpy", ("numpy",)), ("pytest_benchmark", ("pytest-benchmark",)))


class BenchError(Exception):
    """A problem with the request or the environment, reported as one line (exit status 2)."""


# ------------------------------------------------------------------------------------------------ environment


def package_versions() -> dict:
    """{"python": ..., "torch": ..., ...}: the installed version of each package a figure depends on (None: absent)."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for key, distributions in VERSIONED:
        versions[key] = None
        for distribution in distributions:
            try:
                versions[key] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def git_commit(folder: pathlib.Path | None = None) -> str:
    """HEAD of the repository holding `folder` (default: this package's), or "unknown" outside a git checkout."""
    folder = folder or pathlib.Path(__file__).resolve().parent
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def find_benchmarks(explicit: pathlib.Path | None = None) -> pathlib.Path:
    """The benchmarks/ folder: `explicit`, else the one beside this package (a checkout), else ./benchmarks."""
    candidates = [explicit] if explicit is not None else [
        pathlib.Path(__file__).resolve().parents[1] / "benchmarks", pathlib.Path.cwd() / "benchmarks"]
    for folder in candidates:
        if (folder / "conftest.py").is_file() and (folder / "report.py").is_file():
            return folder.resolve()
    if explicit is not None:
        raise BenchError(f"--benchmarks {explicit}: not a benchmark suite folder (no conftest.py and report.py)")
    raise BenchError("the benchmark suite (benchmarks/) ships with the source repository, not the installed package: "
                     "run from a checkout (pip install -e '.[bench]') or pass --benchmarks DIR")


def load_suite_module(benchmarks: pathlib.Path, name: str):
    """benchmarks/<name>.py as a module (report, plots): the suite folder is not a package, and its modules import
    each other by their plain names, as under pytest, so the folder goes on sys.path."""
    if str(benchmarks) not in sys.path:
        sys.path.append(str(benchmarks))
    spec = importlib.util.spec_from_file_location(f"ddpm_fast_benchmarks_{name}", benchmarks / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # registered before it runs, as an import would (dataclasses look it up)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def device_name() -> tuple[str, str]:
    """(this machine's device as results files name it, "cuda" or "cpu"): the GPU's name, else
    "CPU: <model name>, <torch threads> threads"."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(), "cuda"
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    except OSError:
        pass
    return f"CPU: {model}, {torch.get_num_threads()} threads", "cpu"


def device_slug() -> str:
    """This machine's device as a folder name: "nvidia-h100-80gb-hbm3" or "cpu-2-core"."""
    name, kind = device_name()
    if kind == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"cpu-{os.cpu_count()}-core"


# ------------------------------------------------------------------------------------------------ the run


def select(benchmarks: pathlib.Path, suites: list[str]) -> tuple[list[str], dict]:
    """(the suite files to run, relative to the repository root; {suite: why it is skipped})."""
    files, missing = [], {}
    for suite in SUITES:
        if suite not in suites:
            continue
        present = [name for name in SUITES[suite] if (benchmarks / name).is_file()]
        absent = [name for name in SUITES[suite] if name not in present]
        if absent:
            missing[suite] = f"not in this checkout: {', '.join(absent)}"
        files += [f"{benchmarks.name}/{name}" for name in present]
    return files, missing


PROGRESS_PLUGIN = "ddpm_fast.cli.bench_progress"  # a line per case, and the results so far after each (see there)


def pytest_command(files: list[str], raw_json: pathlib.Path, keyword: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "pytest", *files, "-p", "no:cacheprovider", "-p", PROGRESS_PLUGIN, "-q",
               "-rfEs", f"--benchmark-json={raw_json}", "--benchmark-columns=min,median,max,rounds",
               "--durations=0"]
    if keyword:
        command += ["-k", keyword]
    return command


class _Stopped(Exception):
    """Ctrl-C or a kill reached `ddpm-fast bench` while its suite ran."""


def _raise_stopped(signum, frame):
    raise _Stopped(signal.Signals(signum).name)


def run_pytest(command: list[str], cwd: pathlib.Path, quick: bool, log: pathlib.Path,
               threads: int | None = None) -> tuple[int, str | None]:
    """Run the suite, its output both on the console and in `log`: (pytest's exit status, None, or the signal that
    stopped the run: "SIGINT" or "SIGTERM").

    Stopped (Ctrl-C, or a kill), the suite is asked to stop once (SIGINT: pytest ends the session and writes the
    cases that finished) and its output is followed to its end; a second Ctrl-C or kill ends it at once, leaving the
    results of the last finished case (the progress plugin saves them after each case). The suite runs in a session
    of its own, so a terminal's Ctrl-C reaches it once, through here."""
    env = dict(os.environ, **{QUICK_ENV: "1" if quick else "0"})
    env.pop(THREADS_ENV, None)
    if threads:
        env[THREADS_ENV] = str(threads)
    stopped = None
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1, start_new_session=True)
        previous = {}
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            previous = {number: signal.signal(number, _raise_stopped) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                _follow(process, handle)
            except _Stopped as stop:
                stopped = str(stop)
                print(f"\nddpm-fast bench: {stopped}: stopping the suite; the cases that finished are being written "
                      "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
                process.send_signal(signal.SIGINT)
                try:
                    _follow(process, handle)
                except _Stopped:
                    process.kill()
            status = process.wait()
            # pytest exits 0 only when its session ran to the end: a stop that came after the last case is no stop
            return status, None if status == 0 else stopped
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            if process.poll() is None:
                process.kill()
                process.wait()


def _follow(process: subprocess.Popen, handle) -> None:
    for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        handle.write(line)


def augment(raw: dict, **facts) -> dict:
    """pytest-benchmark's JSON with the facts a results file must carry at its top level: device, device_type,
    versions, commit and mode (from the suite's conftest, else from machine_info or this machine), plus `facts`
    (command, suites, exit status, wall time...)."""
    results = dict(raw)
    machine = results.get("machine_info", {})
    if "device" not in results:  # a suite without our conftest: the run was on this machine
        device, kind = (machine["device"], machine.get("device_type")) if machine.get("device") else device_name()
        results["device"] = device
        results.setdefault("device_type", kind or ("cpu" if device.startswith("CPU") else "cuda"))
    results.setdefault("versions", package_versions())
    results.setdefault("commit", machine.get("commit") or (results.get("commit_info") or {}).get("id") or "unknown")
    results.setdefault("mode", machine.get("mode") or "full")
    results.update(facts)
    return results


def merge(folders: list[pathlib.Path]) -> dict:
    """One result set from several results.json of the same device (e.g. a GPU run split over device calls)."""
    parts = []
    for folder in folders:
        path = folder / "results.json" if folder.is_dir() else folder
        if not path.is_file():
            raise BenchError(f"--merge {folder}: no results.json there")
        with open(path, encoding="utf-8") as handle:
            parts.append((folder, json.load(handle)))
    devices = {part.get("device") or part.get("machine_info", {}).get("device") for _, part in parts}
    if len(devices) > 1:
        raise BenchError(f"--merge: the runs come from different devices ({', '.join(map(str, sorted(devices)))}); "
                         "a result set holds one device")
    first = parts[0][1]
    merged = dict(first)
    merged["benchmarks"] = [bench for _, part in parts for bench in part.get("benchmarks", [])]
    merged["datetime"] = max(part.get("datetime", "") for _, part in parts)
    modes = {part.get("mode") or part.get("machine_info", {}).get("mode", "full") for _, part in parts}
    merged["mode"] = modes.pop() if len(modes) == 1 else "mixed"
    merged["merged_from"] = [{"folder": str(folder), "command": part.get("command"), "datetime": part.get("datetime"),
                              "commit": part.get("commit"), "mode": part.get("mode"),
                              "pytest_exit_code": part.get("pytest_exit_code")} for folder, part in parts]
    for key in ("suites_missing", "pytest_command", "wall_seconds", "plots", "plots_skipped"):
        merged.pop(key, None)
    merged["suites"] = sorted({suite for _, part in parts for suite in part.get("suites", [])},
                              key=list(SUITES).index)
    return augment(merged)


def write_report(results: dict, out: pathlib.Path, benchmarks: pathlib.Path) -> list[pathlib.Path]:
    """results.json, results.md and the plots into `out`; the paths written."""
    from ..files import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    plots = load_suite_module(benchmarks, "plots")
    results.pop("plots_skipped", None)
    try:
        images = plots.write_plots(results, out)
    except ImportError as error:
        images = []
        results["plots_skipped"] = f"no plots: {error} (pip install matplotlib)"
        print(f"ddpm-fast bench: {results['plots_skipped']}", file=sys.stderr)
    results["plots"] = [path.name for path in images]
    # Not sorted: each case's methods keep the order the suite measured them in (naive first, ours last).
    atomic_write_bytes(out / "results.json", (json.dumps(results, indent=2) + "\n").encode("utf-8"))
    markdown = load_suite_module(benchmarks, "report").render(results)
    atomic_write_bytes(out / "results.md", markdown.encode("utf-8"))
    return [out / "results.json", out / "results.md", *images]


def default_out(quick: bool, threads: int | None = None, under: pathlib.Path | None = None) -> pathlib.Path:
    """runs/bench-<device>[-<threads>-thread]-<date>[-quick][-N]/ under `under` (default the current folder): a new
    folder every run, beside a user's training runs and outside the package (a result set meant for the repository
    goes to benchmarks/results/ by --out)."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    device = device_slug() + (f"-{threads}-thread" if threads else "")
    base = (under or pathlib.Path.cwd()) / "runs" / f"bench-{device}-{date}{'-quick' if quick else ''}"
    out, number = base, 1
    while out.exists():
        number += 1
        out = base.with_name(f"{base.name}-{number}")
    return out


def command_line(args: argparse.Namespace) -> str:
    """The command as a user would type it (recorded in results.json)."""
    parts = ["ddpm-fast", "bench"]
    if args.merge:
        parts += ["--merge", *map(str, args.merge)]
    if args.suites:
        parts += ["--suite", *args.suites]
    if args.quick:
        parts.append("--quick")
    if getattr(args, "threads", None):
        parts += ["--threads", str(args.threads)]
    if args.keyword:
        parts += ["-k", repr(args.keyword)]
    if args.benchmarks:
        parts += ["--benchmarks", str(args.benchmarks)]
    if getattr(args, "out_given", True):
        parts += ["--out", str(args.out)]
    return " ".join(parts)


def run_bench(args: argparse.Namespace) -> int:
    """`ddpm-fast bench`: 0 when every case passed, 1 when some failed (the results of the rest are still written),
    2 when nothing could run, 130 / 143 when Ctrl-C / a kill stopped it (the cases that finished are written)."""
    try:
        return _run_bench(args)
    except BenchError as error:
        print(f"ddpm-fast bench: error: {error}", file=sys.stderr)
        return 2


def _run_bench(args: argparse.Namespace) -> int:
    benchmarks = find_benchmarks(args.benchmarks)
    args.out_given = args.out is not None
    if args.out is None:
        args.out = default_out(args.quick, args.threads)
    out = args.out
    if args.merge:
        results = merge(args.merge)
        results["command"] = command_line(args)
        return _finish(write_report(results, out, benchmarks), 0)

    for module in ("pytest", "pytest_benchmark"):
        if importlib.util.find_spec(module) is None:
            raise BenchError(f"{module} is not installed: pip install 'ddpm-fast[bench]' (or the [dev] extra)")
    suites = args.suites or list(SUITES)
    files, missing = select(benchmarks, suites)
    for suite, reason in missing.items():
        print(f"ddpm-fast bench: suite {suite!r}: {reason}, skipped", file=sys.stderr)
    if not files:
        raise BenchError(f"none of the suites {', '.join(suites)} is in {benchmarks}")
    out.mkdir(parents=True, exist_ok=True)
    raw = (out / RAW_JSON).resolve()
    raw.unlink(missing_ok=True)
    command = pytest_command(files, raw, args.keyword)
    start = time.perf_counter()
    status, stopped = run_pytest(command, benchmarks.parent, args.quick, out / "pytest.log", args.threads)
    wall = time.perf_counter() - start
    if not raw.is_file():
        if stopped:
            print(f"ddpm-fast bench: {stopped}: stopped before any case finished; nothing to report (see "
                  f"{out / 'pytest.log'})", file=sys.stderr)
            return STOPPED_STATUS[stopped]
        print(f"ddpm-fast bench: error: pytest (exit status {status}) recorded no benchmark; see {out / 'pytest.log'}",
              file=sys.stderr)
        return 1 if status in (0, 1) else 2
    with open(raw, encoding="utf-8") as handle:
        results = augment(json.load(handle), command=command_line(args), pytest_command=" ".join(command[1:]),
                          suites=[suite for suite in SUITES if suite in suites and any(
                              f"{benchmarks.name}/{name}" in files for name in SUITES[suite])],
                          suites_missing=missing, pytest_exit_code=status,
                          wall_seconds=round(wall, 1))
    if stopped:
        results["stopped"] = stopped
    written = write_report(results, out, benchmarks)
    raw.unlink()
    if stopped:
        print(f"ddpm-fast bench: {stopped}: stopped after {len(results.get('benchmarks', []))} measured case(s); "
              "they are in the report", file=sys.stderr)
        return _finish(written, STOPPED_STATUS[stopped])
    if status != 0:
        print(f"ddpm-fast bench: some cases failed (pytest exit status {status}); the others are in the report",
              file=sys.stderr)
    return _finish(written, 0 if status == 0 else 1)


STOPPED_STATUS = {"SIGINT": 130, "SIGTERM": 143}  # the shell's 128 + signal number


def _finish(written: list[pathlib.Path], status: int) -> int:
    for path in written:
        print(f"wrote {path}")
    return status


# ------------------------------------------------------------------------------------------------ the command


def _suite_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SUITES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown suite {', '.join(map(repr, unknown)) or repr(text)}; "
                                         f"choose from {', '.join(SUITES)}")
    return names


class _ExtendSuites(argparse.Action):
    """--suite kernels unet, --suite kernels,unet and --suite kernels --suite unet all select both."""

    def __call__(self, parser, namespace, values, option_string=None):
        chosen = list(getattr(namespace, self.dest) or [])
        for names in values:
            chosen += [name for name in names if name not in chosen]
        setattr(namespace, self.dest, chosen)


def add_bench_parser(commands) -> argparse.ArgumentParser:
    bench = commands.add_parser(
        "bench", help="run the benchmark suite and write results.json, results.md and plots",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--suite", dest="suites", nargs="+", type=_suite_names, action=_ExtendSuites, default=None,
                       metavar="NAME", help=f"the groups to run: {', '.join(SUITES)} (several allowed; default all)")
    bench.add_argument("--quick", action="store_true",
                       help="real timings at the smallest meaningful sizes, fewer rounds (minutes on 2 CPU cores)")
    bench.add_argument("--out", type=pathlib.Path, default=None, metavar="DIR",
                       help="where results.json, results.md and the plots go (default: a new "
                            "runs/bench-<device>-<date>[-quick] folder under the current one)")
    bench.add_argument("--threads", type=arguments.positive_int, default=None, metavar="N",
                       help="CPU threads for torch and ONNX Runtime (default: theirs). On a CPU shared with other "
                            "jobs, 1 keeps torch's threads from waiting on each other")
    bench.add_argument("-k", "--keyword", default=None, metavar="EXPR",
                       help="pytest -k expression to select cases (e.g. a batch size), for runs split over calls")
    bench.add_argument("--benchmarks", type=pathlib.Path, default=None, metavar="DIR",
                       help="the suite folder (default: benchmarks/ of this checkout)")
    bench.add_argument("--merge", type=pathlib.Path, nargs="+", default=None, metavar="DIR",
                       help="render one result set from these runs' results.json instead of running the suite")
    return bench


def check_bench_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.merge and (args.suites or args.quick or args.keyword or args.threads):
        parser.error("--merge renders existing results; --suite, --quick, --threads and -k apply to a run")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: is a file; expected a folder")


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The `bench` branch of ddpm-fast's main(): check the arguments (parser.error on bad ones), then run."""
    check_bench_arguments(parser, args)
    return run_bench(args)


def main(argv: list[str] | None = None) -> int:
    """`python -m ddpm_fast.cli.bench ...`: the same as `ddpm-fast bench ...`."""
    parser = arguments.ArgumentParser(prog="ddpm-fast")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return run_command(parser, parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
