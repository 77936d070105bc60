"""The pytest plugin `ddpm-fast bench` loads into its suite's process (`-p ddpm_fast.cli.bench_progress`).

It prints one line as each case starts and one as it ends, "[3/11] sampling: test_sampling[1x3x32x32] ..." then
"[3/11] sampling: test_sampling[1x3x32x32] passed in 12.3 s (1 min 40 s so far)", so a long run says which group
runs and how far it is. After every case it writes the results so far to the --benchmark-json file (atomically), so
a run that is stopped keeps the cases that finished: a SIGTERM ends the session as Ctrl-C does (pytest-benchmark
then writes its file as usual), and a harder kill leaves the file of the last finished case.
"""

from __future__ import annotations

import json
import pathlib
import signal
import time

import pytest

from ..files import atomic_write_bytes
from . import bench

SUITE_OF_FILE = {}  # "test_sampling.py" -> "sampling", filled from bench.SUITES at configure time


def _group(nodeid: str) -> str:
    file = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return SUITE_OF_FILE.get(file, file.removesuffix(".py"))


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class BenchProgress:
    """Progress lines and partial results for one pytest session (see the module docstring)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.total = 0
        self.index = 0
        self.started = time.perf_counter()
        self.case_started = self.started
        self.outcome = "passed"
        self.machine_info = None  # gathered once, at the first partial write (pytest-benchmark spawns a probe)

    def _write(self, text: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(text, flush=True)
        else:
            print(text, flush=True)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.total = len(session.items)
        groups = list(dict.fromkeys(_group(item.nodeid) for item in session.items))
        self._write(f"ddpm-fast bench: {self.total} cases in {', '.join(groups) or 'no group'}")

    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        self.index += 1
        self.case_started = time.perf_counter()
        self.outcome = "passed"
        self._write(f"[{self.index}/{self.total}] {_group(nodeid)}: {nodeid.split('::', 1)[-1]} ...")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.outcome = "failed"
        elif report.skipped and self.outcome == "passed":
            self.outcome = "skipped"

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config):
        # The progress lines say it; pytest's own "." would land at the start of the next one.
        if report.when == "call" and report.passed:
            return "passed", "", "PASSED"
        return None

    def pytest_runtest_logfinish(self, nodeid: str, location) -> None:
        now = time.perf_counter()
        self._write(f"[{self.index}/{self.total}] {_group(nodeid)}: {nodeid.split('::', 1)[-1]} {self.outcome} in "
                    f"{now - self.case_started:.1f} s ({_clock(now - self.started)} so far)")
        self._save_so_far()

    def _save_so_far(self) -> None:
        """pytest-benchmark's JSON of the cases measured so far, as its session would write it at the end."""
        session = getattr(self.config, "_benchmarksession", None)
        if session is None or not session.json or not session.benchmarks:
            return
        hook = self.config.hook
        if self.machine_info is None:
            self.machine_info = session.get_machine_info()
        commit_info = hook.pytest_benchmark_generate_commit_info(config=self.config)
        output = hook.pytest_benchmark_generate_json(config=self.config, benchmarks=session.benchmarks,
                                                     include_data=True, machine_info=self.machine_info,
                                                     commit_info=commit_info)
        hook.pytest_benchmark_update_json(config=self.config, benchmarks=session.benchmarks, output_json=output)
        output["cases_finished"], output["cases_collected"] = self.index, self.total
        atomic_write_bytes(pathlib.Path(session.json), json.dumps(output, indent=2, default=str).encode("utf-8"))


def _stop_as_interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    for suite, names in bench.SUITES.items():
        for name in names:
            SUITE_OF_FILE[name] = suite
    # A kill (SIGTERM) ends the run as Ctrl-C does: pytest finishes the session, pytest-benchmark writes its file.
    signal.signal(signal.SIGTERM, _stop_as_interrupted)
    # `ddpm-fast bench` stops the suite with SIGINT; a shell that starts a command in the background (`cmd &`,
    # nohup) has it ignore SIGINT, and the suite inherits that: take Python's Ctrl-C handler back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    config.pluginmanager.register(BenchProgress(config), "ddpm-fast-bench-progress")
