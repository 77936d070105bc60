"""benchmarks/device_plan.py, the GPU verification plan: its dry run on this CPU (stages, deadlines, file layout),
its deadline and skip rules with stand-in commands, and that its commands are ones pytest and ddpm-fast accept."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import pytest

from ddpm_fast.cli import bench
from ddpm_fast.cli.main import build_parser

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): the GPU machine's plan of
# commands: no kernel runs.
pytestmark = pytest.mark.torch_references

ROOT = pathlib.Path(__file__).resolve().parents[1]
plan = bench.load_suite_module(ROOT / "benchmarks", "device_plan")


@pytest.mark.parametrize("call", plan.CALLS)
def test_every_call_leaves_files_the_device_tool_brings_back(call):
    stages = plan.call_stages(call, workers=8, commit="abc")
    files = plan.planned_files(stages)
    plan.check_layout(files)
    assert files[0] == "plan.txt" and len(files) <= plan.MAX_FILES
    benches = [stage for stage in stages if stage.command[2:4] == ["ddpm_fast", "bench"]]
    assert len(benches) == len(stages) - (call == 1)  # call 1 starts with the gpu tests
    for stage in benches:  # a command ddpm-fast's own parser accepts
        args = build_parser().parse_args([part.replace("{out}", "/tmp/x") for part in stage.command[3:]])
        assert args.command == "bench" and str(args.out) == f"/tmp/x/{stage.name}"
        assert stage.env["DDPM_FAST_COMMIT"] == "abc" and stage.env["TRITON_INTERPRET"] == "0"
    with pytest.raises(ValueError, match="at most 8"):
        plan.check_layout([f"f{i}" for i in range(9)])
    with pytest.raises(ValueError, match="too deep"):
        plan.check_layout(["a/b/c/d.json"])


def test_call_one_runs_the_tests_then_the_headline():
    stages = plan.call_stages(1, workers=8, commit="abc")
    assert [stage.name for stage in stages] == ["gpu-tests", "sampling", "kernels"]
    tests = stages[0].command[stages[0].command.index("tests"):]
    assert tests[tests.index("-m") + 1] == "gpu" and tests[tests.index("-n") + 1] == "8"
    assert "-n" not in plan.call_stages(1, workers=1, commit="abc")[0].command  # no pytest-xdist: one process
    assert stages[1].env["DDPM_FAST_SAMPLING_BATCHES"] == "1,16" and "--quick" in stages[1].command
    with pytest.raises(ValueError, match="call must be"):
        plan.call_stages(len(plan.CALLS) + 1, workers=8, commit="abc")


def test_the_gpu_test_selection_collects_gpu_tests():
    command = [part for part in plan.gpu_tests_stage(1).command if part not in ("-q", "-rfEs")]
    result = subprocess.run([*command, "--collect-only", "-q", "tests/test_sampler.py"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "test_compiled_bf16_unet_with_graphs_is_close_to_fp32" in result.stdout


def test_dry_run_writes_the_plan_and_starts_nothing(tmp_path, capsys):
    assert plan.main(["--dry-run", "--call", "1", "--commit", "abc", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "plan.txt").read_text()
    assert "## preflight" in text and "torch " in text and "Python.h" in text and "xdist" in text
    for name in ("gpu-tests: budget 210 s", "sampling: budget 240 s", "kernels: budget 120 s"):
        assert name in text
    assert "files under $OUT: plan.txt, gpu-tests.log, sampling/results.json" in text
    assert [path.name for path in tmp_path.iterdir()] == ["plan.txt"]
    assert "dry run: nothing started" in capsys.readouterr().out


def test_a_failed_preflight_aborts_the_call(tmp_path, monkeypatch):
    monkeypatch.setattr(plan, "preflight", lambda: (["torch 2.11"], ["no CUDA device"], {}))  # as on this CPU
    assert plan.main(["--call", "2", "--out", str(tmp_path)]) == 2
    assert "ABORTED: preflight problems" in (tmp_path / "plan.txt").read_text()


def test_deadline_kills_the_stage_and_later_stages_keep_their_time(tmp_path):
    python = sys.executable
    writes = ("import pathlib, sys; folder = pathlib.Path(sys.argv[1]); folder.mkdir(); "
              "[(folder / name).write_text('x') for name in ('results.json', 'results.md', 'plot.png')]; "
              "(folder / 'pytest.log').write_text('5 passed'); print('done')")
    stages = [plan.Stage("slow", [python, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                         budget=100, min_seconds=1, log="slow.log", keeps=("slow.log",)),
              plan.Stage("bench", [python, "-c", writes, "{out}/bench"], budget=30, min_seconds=2,
                         keeps=("bench/results.json", "bench/results.md")),
              plan.Stage("late", [python, "-c", "print('never')"], budget=30, min_seconds=50)]
    report: list[str] = []
    start = time.monotonic()
    failed = plan.run_stages(stages, tmp_path, deadline=5, started=start, report=report)
    assert failed and time.monotonic() - start < 20
    slow, bench_stage, late = stages
    # the slow stage may use the deadline less what the later stages need to start (2 + 50 + slack > 5: none)
    assert slow.status.startswith("SKIPPED")
    assert bench_stage.status.startswith("SKIPPED") and late.status.startswith("SKIPPED")

    stages[0].min_seconds = 1
    stages[2].min_seconds = 0.1
    report = []
    failed = plan.run_stages(stages, tmp_path, deadline=60, started=time.monotonic(), report=report)
    # the slow stage gets 60 s less what the later two need to start (2 + 0.1 + 2 x 25 s of slack)
    assert slow.status.startswith("DEADLINE") and 7 < slow.seconds < 12
    assert "started" in (tmp_path / "slow.log").read_text()
    assert bench_stage.status == "exit 0" and late.status == "exit 0"
    assert sorted(path.name for path in (tmp_path / "bench").iterdir()) == ["results.json", "results.md"]
    text = (tmp_path / "plan.txt").read_text()
    assert "## slow: DEADLINE" in text and "--- pytest.log:" in text and "5 passed" in text
    assert not (tmp_path / "bench.log").exists()  # folded into plan.txt


def test_a_stage_is_interrupted_even_when_the_plan_runs_with_sigint_ignored(tmp_path):
    # A plan started in the background by a non-interactive shell inherits SIGINT ignored; its stages must still get
    # the interrupt at the deadline (pytest writes its summary then), not wait out the grace and be killed.
    import signal

    code = ("import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('interrupted', flush=True)")
    stage = plan.Stage("slow", [sys.executable, "-c", code], budget=100, min_seconds=1, log="slow.log",
                       keeps=("slow.log",))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        plan.run_stage(stage, tmp_path, 3.0)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stage.status.startswith("DEADLINE") and stage.seconds < 3.0 + plan.INTERRUPT_GRACE / 2
    assert "interrupted" in (tmp_path / "slow.log").read_text()
