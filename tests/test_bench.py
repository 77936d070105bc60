"""`ddpm-fast bench`: arguments, the pytest selection per suite, results.json's fields, the report of every kind, the
plots, result-set merging and the README's generated Benchmarks section. Synthetic results; no benchmark is timed."""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

import ddpm_fast as df
from ddpm_fast.cli import bench
from ddpm_fast.kernels import cpu_reference
from ddpm_fast.cli.main import build_parser, main
from subprocess_env import subprocess_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
report = bench.load_suite_module(BENCHMARKS, "report")
plots = bench.load_suite_module(BENCHMARKS, "plots")
timing = bench.load_suite_module(BENCHMARKS, "timing")


@pytest.fixture(autouse=True)
def _suite_subprocess_outside_xdist(monkeypatch):
    """`ddpm-fast bench` runs its suite in a pytest subprocess that inherits this environment: a pytest-xdist worker's
    marker there would make pytest-benchmark disable every benchmark of that run."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------------------ synthetic results


def kernel_info(naive=2e-4, compiled=1e-4, ours=5e-5, copy=4e-5, shape=(16, 3, 32, 32)):
    numel = shape[0] * shape[1] * shape[2] * shape[3]
    moved = 3 * numel * 4
    times = {"naive_eager": naive, "torch_compile": compiled, "ddpm_fast": ours}
    return timing.kernel_figures(shape, "float32", moved, times, moved / copy / 1e9)


def unet_info(batch):
    seconds = {"fp32_eager": 0.1 * batch, "bf16_cl_eager": 0.06 * batch, "bf16_cl_compiled": 0.03 * batch,
               "diffusers_fp32_eager": 0.09 * batch, "diffusers_fp32_compile": 0.05 * batch}
    tflops = {name: 0.5 * batch / value / 1e3 for name, value in seconds.items()}
    return {"kind": "unet_forward", "preset": "tiny", "shape": [batch, 3, 32, 32], "batch": batch, "seconds": seconds,
            "roles": {"fp32_eager": "naive", "bf16_cl_eager": "ours", "bf16_cl_compiled": "ours",
                      "diffusers_fp32_eager": "peer", "diffusers_fp32_compile": "peer"},
            "images_per_s": {name: batch / value for name, value in seconds.items()}, "gflop_per_image": 0.5,
            "counted_gflop_per_image": 0.5, "tflops": tflops, "matmul_tflops": 0.4,
            "fraction_of_matmul": {name: value / 0.4 for name, value in tflops.items()},
            "speedup_vs_fp32_eager": {name: seconds["fp32_eager"] / value for name, value in seconds.items()},
            "ours": "bf16_cl_compiled", "best_peer": "diffusers_fp32_compile",
            "speedup_vs_best_peer": seconds["diffusers_fp32_compile"] / seconds["bf16_cl_compiled"],
            "best": "bf16_cl_compiled", "unavailable": {}}


def training_info(batch):
    ips = {"naive_fp32_eager": 10.0 * batch, "naive_compiled": 14.0 * batch, "diffusers_bf16_compile": 16.0 * batch,
           "ddpm_fast": 25.0 * batch}
    return {"kind": "training_step", "preset": "tiny", "batch": batch, "image_size": 32, "dtype": "bfloat16",
            "device": "cpu", "images_per_second": ips, "speedup_vs_naive": 2.5, "speedup_vs_best_peer": 25 / 16,
            "best_peer": "diffusers_bf16_compile", "gflop_per_image": 1.5, "achieved_tflops": 0.04,
            "matmul_tflops": 0.4, "fraction_of_matmul_rate": 0.1,
            "setup_seconds": {"naive_fp32_eager": 0.0, "naive_compiled": 20.0, "diffusers_bf16_compile": 30.0,
                              "ddpm_fast": 25.0}}


def sampling_info(batch):
    per_step = {"naive": 0.012 * batch, "diffusers_fp32": 0.010 * batch, "diffusers_fp32_compile": 0.008 * batch,
                "fast": 0.005 * batch}
    ips = {name: batch / (value * 1000) for name, value in per_step.items()}
    tflops = {name: 0.5 * batch / value / 1e3 for name, value in per_step.items()}
    return {"kind": "sampling", "preset": "tiny", "batch": batch, "sample_shape": [3, 32, 32], "num_timesteps": 1000,
            "steps_timed": 20, "repeats": 3, "seconds_per_step": per_step, "images_per_s": ips,
            "setup_seconds": {name: 1.0 for name in per_step},
            "options": {"naive": {"dtype": "float32", "eager": True},
                        "fast": {"dtype": "bfloat16", "channels_last": True, "compile": True}},
            "unavailable": {"fast_fp32": "skipped"}, "gflop_per_image_per_step": 0.5, "tflops": tflops,
            "matmul_tflops": 0.4, "fraction_of_matmul": {name: value / 0.4 for name, value in tflops.items()},
            "ceiling_images_per_s": 0.8,
            "speedup_vs_naive": {name: value / ips["naive"] for name, value in ips.items()},
            "speedup_vs_best_diffusers": {name: value / ips["diffusers_fp32_compile"] for name, value in ips.items()},
            "best_diffusers": "diffusers_fp32_compile", "best_fast": "fast", "goals": {"fast >= 2x naive": True},
            "fast_full_chain": None, "parity": {"fast_vs_naive_max_abs": 3e-6}}


def onnx_info(batch):
    per_step = {"naive": 0.02, "torch_eager": 0.015, "fast": 0.008, "ort_cpu_step_fp32": 0.012}
    ips = {name: batch / (value * 1000) for name, value in per_step.items()}
    ort = ["ort_cpu_step_fp32"]
    return {"kind": "onnx_runtime", "preset": "tiny", "parameters": 1_500_000, "batch": batch,
            "sample_shape": [3, 32, 32], "device": "cpu", "num_timesteps": 1000, "steps_timed": 3, "repeats": 3,
            "seconds_per_step": per_step, "images_per_s": ips, "setup_seconds": {name: 0.5 for name in per_step},
            "options": {"fast": {"dtype": "bfloat16", "compile": True},
                        "ort_cpu_step_fp32": {"dtype": "float32", "graph": "ddpm_step",
                                              "provider": "CPUExecutionProvider", "io_binding": True,
                                              "file": "tiny.onnx"}},
            "unavailable": {"ort_cuda_step_fp16": "no CUDA device in this run (CPU machine)"},
            "speedup_vs_naive": {name: value / ips["naive"] for name, value in ips.items()},
            "speedup_vs_torch_eager": {name: value / ips["torch_eager"] for name, value in ips.items()},
            "fast_over": {name: ips["fast"] / ips[name] for name in ort},
            "best_images_per_s": ips, "fast_over_best_runs": {name: ips["fast"] / ips[name] for name in ort},
            "torch_eager_over": {name: ips["torch_eager"] / ips[name] for name in ort}, "best_ort": ort[0],
            "goals": {}, "goals_unmeasured": [], "onnxruntime": "1.31.1", "providers": ["CPUExecutionProvider"],
            "cuda_provider_usable": False, "ort_intra_op_threads": "default", "torch_threads": 2,
            "exports": {"tiny.onnx": {"seconds": 5.0, "reused": False, "mb": 6.0}},
            "parity": {"ort_cpu_step_fp32_vs_torch_eager_max_abs": 1e-6}, "parity_tolerance": 1e-4,
            "load_average": {"before": [1.0, 1.0, 1.0], "after": [1.5, 1.0, 1.0]}, "note": "synthetic"}


def results_json(infos, device="CPU: Test CPU, 2 threads", device_type="cpu", when="2026-11-22T10:00:00+00:00"):
    benchmarks = [{"group": f"group {index}", "name": f"test_{info.get('kind', 'kernel')}[{index}]",
                   "fullname": f"benchmarks/x.py::test[{index}]", "extra_info": info,
                   "stats": {"median": 0.01, "rounds": 1}} for index, info in enumerate(infos)]
    return {"machine_info": {"device": device, "device_type": device_type, "torch": "2.13.0", "triton": "3.9.0",
                             "cuda": None if device_type == "cpu" else "12.8", "triton_interpreter": False,
                             "commit": "abc123", "mode": "quick"},
            "commit_info": {"id": "abc123", "dirty": False}, "benchmarks": benchmarks, "datetime": when,
            "version": "5.3.1"}


EVERY_KIND = [kernel_info(), unet_info(1), unet_info(8), training_info(1), training_info(16), sampling_info(1),
              sampling_info(16), onnx_info(1)]


# ------------------------------------------------------------------------------------------------ arguments


def test_bench_arguments():
    args = build_parser().parse_args(["bench"])
    assert (args.suites, args.quick, args.out, args.keyword, args.merge) == (None, False, None, None, None)
    args = build_parser().parse_args(["bench", "--suite", "kernels", "unet", "--quick", "--out", "some/dir"])
    assert args.suites == ["kernels", "unet"] and args.quick and args.out == pathlib.Path("some/dir")
    args = build_parser().parse_args(["bench", "--suite", "kernels,onnx", "--suite", "training", "kernels"])
    assert args.suites == ["kernels", "onnx", "training"]
    assert build_parser().parse_args(["bench", "--threads", "1"]).threads == 1


def test_the_default_out_is_a_new_runs_folder_the_checkout_ignores(tmp_path):
    first = bench.default_out(True, under=tmp_path)
    assert first.parent == tmp_path / "runs" and first.name.startswith(f"bench-{bench.device_slug()}-")
    assert first.name.endswith("-quick")
    first.mkdir(parents=True)
    assert bench.default_out(True, under=tmp_path).name == f"{first.name}-2"  # never an earlier run's folder
    assert "-1-thread-" in bench.default_out(False, threads=1, under=tmp_path).name
    assert "runs/" in (ROOT / ".gitignore").read_text().splitlines()


def test_bench_threads_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--threads", "0"])
    assert "expected a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("suite", ["gpus", "kernels,fast", ","])
def test_bench_rejects_an_unknown_suite_by_name(suite, capsys):
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(["bench", "--suite", suite])
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert "unknown suite" in error and "choose from kernels, unet, training, sampling, guidance, quality, onnx" in error
    assert repr(suite.split(",")[-1] or suite) in error


def test_bench_merge_excludes_run_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--merge", str(tmp_path), "--quick"])
    assert "--merge renders existing results" in capsys.readouterr().err


def test_bench_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        main(["bench", "--out", str(tmp_path / "file")])
    assert "is a file" in capsys.readouterr().err


def test_bench_without_a_suite_folder_says_where_it_lives(tmp_path, capsys):
    assert main(["bench", "--benchmarks", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "not a benchmark suite folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ selection


@pytest.mark.parametrize("suite, files", [
    ("kernels", ["benchmarks/test_elementwise_kernels.py", "benchmarks/test_group_norm_kernel.py"]),
    ("unet", ["benchmarks/test_unet_forward.py"]),
    ("sampling", ["benchmarks/test_sampling.py"]),
    ("onnx", ["benchmarks/test_onnx_runtime.py"]),
])
def test_each_suite_selects_its_files(suite, files):
    selected, missing = bench.select(BENCHMARKS, [suite])
    assert selected == files and missing == {}


def test_training_suite_maps_to_its_file_and_copes_when_it_is_absent(tmp_path):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    for name in ("test_unet_forward.py", "test_sampling.py"):
        (folder / name).write_text("")
    selected, missing = bench.select(folder, ["training", "unet", "sampling"])
    assert selected == ["benchmarks/test_unet_forward.py", "benchmarks/test_sampling.py"]
    assert missing == {"training": "not in this checkout: test_training_step.py"}
    (folder / "test_training_step.py").write_text("")
    selected, missing = bench.select(folder, list(bench.SUITES))
    assert "benchmarks/test_training_step.py" in selected and "training" not in missing
    assert list(missing) == ["kernels", "guidance", "quality", "onnx", "cold_start"]


def test_every_suite_in_order_by_default():
    selected, _ = bench.select(BENCHMARKS, list(bench.SUITES))
    order = [name for files in bench.SUITES.values() for name in files]
    names = [path.split("/")[-1] for path in selected]
    assert names == [name for name in order if name in names]
    assert set(names) >= {"test_elementwise_kernels.py", "test_group_norm_kernel.py", "test_unet_forward.py",
                          "test_sampling.py", "test_onnx_runtime.py", "test_cold_start.py"}


def test_pytest_command(tmp_path):
    command = bench.pytest_command(["benchmarks/test_sampling.py"], tmp_path / "raw.json", keyword="1x3x32x32")
    assert command[1:4] == ["-m", "pytest", "benchmarks/test_sampling.py"]
    assert f"--benchmark-json={tmp_path / 'raw.json'}" in command
    assert command[-2:] == ["-k", "1x3x32x32"]
    assert "--benchmark-disable" not in command  # quick mode measures; only CI's smoke mode disables timing


# ------------------------------------------------------------------------------------------------ results.json


def test_augment_adds_the_facts_a_results_file_carries():
    results = bench.augment(results_json([kernel_info()]), command="ddpm-fast bench --quick", suites=["kernels"])
    assert results["device"] == "CPU: Test CPU, 2 threads" and results["device_type"] == "cpu"
    assert results["commit"] == "abc123" and results["mode"] == "quick"
    assert results["command"] == "ddpm-fast bench --quick" and results["suites"] == ["kernels"]
    assert {"python", "torch", "triton", "onnxruntime", "diffusers"} <= set(results["versions"])
    assert results["benchmarks"] and results["machine_info"] and results["version"]  # still pytest-benchmark's


FAKE_SUITE = '''
import os

def test_kernel(benchmark):
    benchmark.group = "fake kernel"
    benchmark.extra_info.update({EXTRA})
    benchmark.extra_info["quick_env"] = os.environ.get("DDPM_FAST_BENCH_QUICK")
    benchmark.extra_info["threads_env"] = os.environ.get("DDPM_FAST_BENCH_THREADS")
    benchmark.pedantic(lambda: None, rounds=2)
'''


@pytest.mark.torch_references
def test_bench_runs_a_suite_and_writes_results_report_and_plots(tmp_path, capsys):
    folder = tmp_path / "repo" / "benchmarks"
    folder.mkdir(parents=True)
    for name in ("report.py", "plots.py"):
        shutil.copy(BENCHMARKS / name, folder / name)
    (folder / "conftest.py").write_text("")
    (folder / "test_elementwise_kernels.py").write_text(FAKE_SUITE.replace("{EXTRA}", repr(kernel_info())))
    out = tmp_path / "out"
    assert main(["bench", "--benchmarks", str(folder), "--suite", "kernels", "--quick", "--threads", "1",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["suites"] == ["kernels"]
    assert results["suites_missing"] == {"kernels": "not in this checkout: test_group_norm_kernel.py"}
    assert results["command"] == (f"ddpm-fast bench --suite kernels --quick --threads 1 --benchmarks {folder} "
                                  f"--out {out}")
    assert results["pytest_exit_code"] == 0 and results["wall_seconds"] >= 0
    for key in ("device", "device_type", "versions", "commit", "mode", "machine_info", "commit_info", "datetime"):
        assert key in results, key
    (case,) = results["benchmarks"]
    assert case["extra_info"]["quick_env"] == "1" and case["extra_info"]["threads_env"] == "1"
    assert case["stats"]["rounds"] == 2
    markdown = (out / "results.md").read_text()
    assert "| fake kernel | 16x3x32x32 |" in markdown
    assert "suite kernels: not in this checkout: test_group_norm_kernel.py, skipped" in markdown
    assert results["plots"] == ["fraction_of_ceiling.png"]
    assert_png(out / "fraction_of_ceiling.png")
    assert not (out / bench.RAW_JSON).exists() and (out / "pytest.log").is_file()
    assert f"wrote {out / 'results.md'}" in capsys.readouterr().out


@pytest.mark.torch_references
def test_bench_reports_failed_cases_and_keeps_the_rest(tmp_path, monkeypatch):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    for name in ("report.py", "plots.py"):
        shutil.copy(BENCHMARKS / name, folder / name)
    (folder / "conftest.py").write_text("")
    suite = FAKE_SUITE.replace("{EXTRA}", repr(kernel_info())) + "\n\ndef test_broken():\n    raise RuntimeError\n"
    (folder / "test_elementwise_kernels.py").write_text(suite)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # no --out: a new runs/bench-... folder under the current one, not the suite's
    assert main(["bench", "--benchmarks", str(folder), "--suite", "kernels"]) == 1
    (out,) = (work / "runs").iterdir()
    assert out.name.startswith(f"bench-{bench.device_slug()}-") and not (folder / "results").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["pytest_exit_code"] == 1 and len(results["benchmarks"]) == 1
    (case,) = results["benchmarks"]
    assert case["extra_info"]["quick_env"] == "0" and case["extra_info"]["threads_env"] is None  # full mode
    assert "some cases failed" in (out / "results.md").read_text()


@pytest.mark.torch_references
def test_the_kernels_suite_runs_in_a_fresh_process():
    """`ddpm-fast bench --suite kernels` runs the suite's files in a pytest process of their own: their cases call
    torch.ops.ddpm_fast.*, which the suite must register itself (no test module of tests/ beside it does)."""
    env = subprocess_env()
    # The torch.compile peer is not what this checks, and compiling it would cost the suite a minute on a CPU.
    env["TORCHDYNAMO_DISABLE"] = "1"
    files = [f"benchmarks/{name}" for name in bench.SUITES["kernels"]]
    result = subprocess.run([sys.executable, "-m", "pytest", *files, "-p", "no:cacheprovider", "-q",
                             "--benchmark-disable"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6 passed" in result.stdout


SLOW_SUITE = '''
import time

def test_first(benchmark):
    benchmark.extra_info.update({EXTRA})
    benchmark.pedantic(lambda: None, rounds=2)

def test_second(benchmark):
    benchmark.extra_info.update({EXTRA})
    benchmark.pedantic(lambda: time.sleep(60), rounds=1)  # stopped in here

def test_third(benchmark):
    benchmark.pedantic(lambda: None, rounds=1)
'''


@pytest.mark.torch_references
@pytest.mark.parametrize("signal_name, background", [("SIGINT", False), ("SIGTERM", False), ("SIGINT", True)])
def test_a_stopped_run_keeps_the_cases_that_finished(tmp_path, signal_name, background):
    """Ctrl-C (SIGINT) or a kill (SIGTERM) of `ddpm-fast bench` while a case runs: the cases that finished are
    written (results.json, results.md saying it stopped), the exit status is the shell's 128 + signal; a line per
    case says which group runs and how far it is, and the results so far are saved after each case. `background`:
    started as a shell starts `cmd &` (SIGINT ignored, which its suite would inherit)."""
    import signal
    import time

    folder = tmp_path / "benchmarks"
    folder.mkdir()
    for name in ("report.py", "plots.py"):
        shutil.copy(BENCHMARKS / name, folder / name)
    (folder / "conftest.py").write_text("")
    (folder / "test_sampling.py").write_text(SLOW_SUITE.replace("{EXTRA}", repr(kernel_info())))
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "ddpm_fast.cli.bench", "--benchmarks", str(folder), "--suite",
                                "sampling", "--out", str(out)], cwd=tmp_path, env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lines.append(process.stdout.readline())
            if lines[-1].startswith("[2/3] sampling: test_second ..."):
                break
        assert lines[-1].startswith("[2/3] sampling: test_second ..."), "".join(lines)
        assert "ddpm-fast bench: 3 cases in sampling\n" in lines
        assert any(line.startswith("[1/3] sampling: test_first passed in ") and "so far)" in line for line in lines)
        assert json.loads((out / bench.RAW_JSON).read_text())["cases_finished"] == 1  # saved after the first case
        process.send_signal(getattr(signal, signal_name))
        rest, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == bench.STOPPED_STATUS[signal_name], "".join(lines) + rest + err
    assert f"{signal_name}: stopped after 1 measured case(s); they are in the report" in err
    results = json.loads((out / "results.json").read_text())
    assert [case["name"] for case in results["benchmarks"]] == ["test_first"] and results["stopped"] == signal_name
    assert f"stopped by {signal_name} before the end" in (out / "results.md").read_text()
    assert not (out / bench.RAW_JSON).exists()


# ------------------------------------------------------------------------------------------------ report and plots


def test_report_renders_every_kind():
    markdown = report.render(bench.augment(results_json(EVERY_KIND), command="ddpm-fast bench --quick"))
    summary = markdown.split("Summary", 1)[1]
    for row in ("| group 0 | 16x3x32x32 float32 |", "| U-Net forward (tiny) | batch 8, 3x32x32 |",
                "| training step (tiny) | batch 16, 32², bfloat16 |", "| sampling (tiny) | batch 1, 3x32x32 |",
                "| ONNX Runtime (CPU) | tiny, batch 1 |"):
        assert row in summary, row
    assert "of copy rate: naive / compile / ours" in markdown and "20.0% / 40.0% / 80.0%" in markdown  # every method
    assert "| 2.50x | 1.56x (diffusers_bf16_compile) |" in markdown  # training: vs naive, vs best peer
    assert "| tiny | 32 | 16 | diffusers_bf16_compile |" in markdown
    assert "| tiny (0.50 GFLOP/img) | 8x3x32x32 | bf16_cl_compiled | ours |" in markdown
    assert "End-to-end sampling" in markdown and "ONNX Runtime vs PyTorch sampling" in markdown
    assert "Mode: quick · command: `ddpm-fast bench --quick`" in markdown


def test_a_fast_path_that_fell_back_is_marked_invalid_never_ours():
    reason = "CUDA-graph capture failed (RuntimeError: x); FastSampler runs the steps without graphs"
    sampling, onnx = sampling_info(16), onnx_info(1)
    for info in (sampling, onnx):
        info["fell_back"] = {"fast": reason}
    sampling["best_fast"] = None
    markdown = report.render(bench.augment(results_json([sampling, onnx])))
    summary = markdown.split("Summary", 1)[1].split("\n\n", 2)[1]
    assert f"| sampling (tiny) | batch 16, 3x32x32 | {report.INVALID} | - | - | - |" in summary
    assert f"| ONNX Runtime (CPU) | tiny, batch 1 | {report.INVALID} | - | - | - |" in summary
    fast_rate = report._rate(sampling["images_per_s"]["fast"])
    assert f"| {fast_rate} |" not in markdown.split("End-to-end sampling", 1)[1].split("ONNX Runtime vs", 1)[0]
    assert f"| 16 | fast ({report.INVALID}) |" in markdown and "none ran without falling back" in markdown
    assert f"| 1 | fast ({report.INVALID}) | PyTorch: bfloat16, compile |" in markdown
    assert markdown.count(f"fast is INVALID (its fast path fell back, so its figures are not ours): {reason}") == 2
    assert "fast" not in plots.speedup_series(results_json([sampling]))["sampling (tiny, 32x32)"]
    assert all("fast" not in case for case in plots.ceiling_panels(results_json([sampling])).get(
        "sampling: TFLOP/s / bf16 matmul rate", {}).values())
    # the same results without the mark report FastSampler's figures as ours
    clean = report.render(bench.augment(results_json([sampling_info(16)])))
    assert report.INVALID not in clean and f"| {report._rate(sampling_info(16)['images_per_s']['fast'])} |" in clean


def test_benchmarks_record_what_ran_after_the_fact(monkeypatch):
    from ddpm_fast.sampling import fast_path as fast_path_module

    monkeypatch.setattr(fast_path_module, "CPU_COMPILE_MIN_EAGER_SECONDS", 0.0)  # the default compiles on a CPU too
    sampling = bench.load_suite_module(BENCHMARKS, "test_sampling")
    conv = torch.nn.Conv2d(3, 3, 1)

    def breaks_the_graph(x, t):
        torch._dynamo.graph_break()
        return conv(x)

    fine = sampling.fast_method("fast_no_compile", lambda x, t: conv(x), 1, (3, 4, 4), torch.device("cpu"),
                                compile=False, dtype=torch.float32)
    broken = sampling.fast_method("fast", breaks_the_graph, 1, (3, 4, 4), torch.device("cpu"), dtype=torch.float32)
    assert broken.options["compile"] is True  # what was asked for
    with cpu_reference(), pytest.warns(df.FastPathFallbackWarning):
        for method in (fine, broken):
            method.run(2)
    fell_back = sampling.record_what_ran([fine, broken])
    assert list(fell_back) == ["fast"] and "torch.compile failed" in fell_back["fast"]
    assert broken.options["compile"] is False and broken.options["graph_replays"] == 0  # what ran
    assert broken.options["compile_decision"] == "eager: torch.compile failed (see fallbacks)"
    assert sampling.goals(1, {"naive": 1.0, "fast_no_compile": 3.0}, torch.device("cpu")) == {
        "fast ran without falling back": False}


def test_report_renders_every_committed_result_set():
    for folder, results in report.result_sets(BENCHMARKS / "results"):
        markdown = report.render(results)
        assert markdown.startswith("Device: **"), folder
        assert report.summary_rows(results), folder


def assert_png(path: pathlib.Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
        image.verify()


@pytest.mark.torch_references
def test_plots_are_valid_pngs(tmp_path):
    results = results_json(EVERY_KIND)
    written = plots.write_plots(results, tmp_path)
    assert [path.name for path in written] == ["speedup_vs_batch.png", "fraction_of_ceiling.png"]
    for path in written:
        assert_png(path)
    series = plots.speedup_series(results)
    assert series["U-Net forward (tiny, 32x32)"]["bf16_cl_compiled"] == [(1, pytest.approx(10 / 3)),
                                                                        (8, pytest.approx(10 / 3))]
    assert series["training step (tiny, 32px, bfloat16)"]["ddpm_fast"] == [(1, 2.5), (16, 2.5)]
    panels = plots.ceiling_panels(results)
    assert panels["memory-bound kernels: GB/s / copy rate"]["group 0\n16x3x32x32"]["ddpm_fast"] == pytest.approx(0.8)


def test_plots_skip_with_a_message_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import matplotlib -> ImportError
    written = bench.write_report(bench.augment(results_json([kernel_info()])), tmp_path, BENCHMARKS)
    assert [path.name for path in written] == ["results.json", "results.md"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["plots"] == [] and "pip install matplotlib" in results["plots_skipped"]
    assert "no plots" in capsys.readouterr().err and "no plots" in (tmp_path / "results.md").read_text()


# ------------------------------------------------------------------------------------------------ merging


def write_set(folder: pathlib.Path, results: dict) -> pathlib.Path:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_merge_joins_runs_of_one_device(tmp_path):
    first = write_set(tmp_path / "a", bench.augment(results_json([kernel_info()]), suites=["kernels"]))
    second = write_set(tmp_path / "b", bench.augment(
        results_json([sampling_info(1)], when="2026-11-23T10:00:00+00:00"), suites=["sampling"]))
    out = tmp_path / "merged"
    assert main(["bench", "--merge", str(first), str(second), "--out", str(out), "--benchmarks", str(BENCHMARKS)]) == 0
    merged = json.loads((out / "results.json").read_text())
    assert [case["extra_info"]["kind"] for case in merged["benchmarks"]] == ["kernel", "sampling"]
    assert merged["suites"] == ["kernels", "sampling"] and merged["datetime"].startswith("2026-11-23")
    assert [part["folder"] for part in merged["merged_from"]] == [str(first), str(second)]
    assert merged["command"].startswith("ddpm-fast bench --merge")


def test_merge_refuses_two_devices(tmp_path, capsys):
    first = write_set(tmp_path / "a", results_json([kernel_info()]))
    second = write_set(tmp_path / "b", results_json([kernel_info()], device="NVIDIA H100", device_type="cuda"))
    assert main(["bench", "--merge", str(first), str(second), "--out", str(tmp_path / "m"),
                 "--benchmarks", str(BENCHMARKS)]) == 2
    assert "different devices" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ the README


def test_readme_benchmarks_section_is_generated_from_the_committed_results():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    expected = report.readme_section(BENCHMARKS / "results")
    assert report.readme_benchmarks_section(readme) == expected, (
        "README.md's Benchmarks section is stale: python benchmarks/report.py --readme benchmarks/results "
        "--write README.md")


def test_docs_benchmarks_page_is_generated_from_the_committed_results():
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert page == report.docs_page(BENCHMARKS / "results"), (
        "docs/benchmarks.md is stale: python benchmarks/report.py --docs benchmarks/results --write docs/benchmarks.md")


def test_the_readme_table_names_no_commit_and_the_docs_page_lists_every_set_with_its_commit(tmp_path):
    root = tmp_path / "results"
    write_set(root / "cpu-old", results_json([kernel_info()], when="2026-11-20T00:00:00+00:00"))
    write_set(root / "cpu-new", results_json([unet_info(1)], when="2026-11-21T00:00:00+00:00"))
    assert "commit " not in report.readme_section(root).replace("committed", "")
    page = report.docs_page(root)
    assert page.startswith("# Benchmarks\n") and "## Every committed result set" in page
    assert page.index("| `results/cpu-new/` |") < page.index("| `results/cpu-old/` |")  # newest first
    assert "commit " in " ".join(page.split())


def test_readme_section_without_a_gpu_set_says_so_and_shows_each_groups_latest_cpu_set(tmp_path):
    root = tmp_path / "results"
    write_set(root / "cpu-old", results_json([kernel_info(), unet_info(4)], when="2026-11-20T00:00:00+00:00"))
    write_set(root / "cpu-new", results_json([unet_info(1)], when="2026-11-21T00:00:00+00:00"))
    section = report.readme_section(root)
    assert section.startswith("## Benchmarks\n")
    words = " ".join(section.split())  # the paragraphs are wrapped
    assert "**No GPU result set has been committed yet**" in words
    assert f"`{tmp_path.name}/results/cpu-old/` (quick mode" in words and "for kernel;" in words
    assert f"`{tmp_path.name}/results/cpu-new/` (quick mode" in words and "for unet_forward." in words
    assert "These are CPU figures, not GPU figures" in words
    assert "U-Net forward (tiny)" in section and "group 0" in section  # the kernel rows of the older set
    assert "batch 1, 3x32x32" in section and "batch 4, 3x32x32" not in section  # its U-Net rows: the newer set's


def test_readme_section_shows_the_latest_gpu_set_and_names_its_device(tmp_path):
    root = tmp_path / "results"
    write_set(root / "h100-a", results_json([unet_info(1)], device="NVIDIA H100 80GB HBM3", device_type="cuda",
                                            when="2026-11-21T00:00:00+00:00"))
    write_set(root / "h200-b", results_json([sampling_info(16)], device="NVIDIA H200", device_type="cuda",
                                            when="2026-11-22T00:00:00+00:00"))
    write_set(root / "cpu-c", results_json([kernel_info()], when="2026-11-23T00:00:00+00:00"))  # newer, but a CPU
    section = report.readme_section(root)
    assert "Latest GPU result set: **NVIDIA H200**" in " ".join(section.split()) and "h200-b" in section
    assert "No GPU" not in section and "CPU figures" not in section
    assert "| sampling (tiny) | batch 16, 3x32x32 |" in section


def test_replace_readme_section_keeps_the_rest():
    readme = "# x\n\nintro\n\n## Benchmarks\n\nold\n\n## Later\n\ntail\n"
    updated = report.replace_readme_section(readme, "## Benchmarks\n\nnew\n")
    assert updated == "# x\n\nintro\n\n## Benchmarks\n\nnew\n\n## Later\n\ntail\n"
    assert report.readme_benchmarks_section(updated) == "## Benchmarks\n\nnew\n"
    at_end = report.replace_readme_section("# x\n\n## Benchmarks\n\nold\n", "## Benchmarks\n\nnew\n")
    assert at_end == "# x\n\n## Benchmarks\n\nnew\n"
    assert report.readme_benchmarks_section(at_end) == "## Benchmarks\n\nnew\n"


@pytest.mark.parametrize("command", ["demo", "train", "sample", "export", "bench"])
def test_every_subcommand_help_shows_its_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    parser = build_parser()
    subparser = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                     ).choices[command]
    for action in subparser._actions:
        if action.option_strings and action.default is not None and action.default is not False \
                and action.default != argparse.SUPPRESS:
            assert f"default: {action.default}" in text or "default" in (action.help or ""), action.option_strings
    if command == "train":
        assert "--lr LR (default: 0.0002)" in text and "--weight-decay WEIGHT_DECAY (default: 0.0)" in text
