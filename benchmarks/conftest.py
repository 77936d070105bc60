"""Benchmark setup: device, smoke mode, and the facts every results file must carry (device, versions)."""

import os
import platform
import subprocess

import pytest
import torch
import triton


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def pytest_benchmark_update_machine_info(config, machine_info):
    if torch.cuda.is_available():
        machine_info["device"] = torch.cuda.get_device_name()
    else:
        machine_info["device"] = f"CPU: {_cpu_name()}, {torch.get_num_threads()} threads"
    machine_info["torch"] = torch.__version__
    machine_info["triton"] = triton.__version__
    machine_info["cuda"] = torch.version.cuda
    from ddpm_fast.kernels import _launch

    machine_info["triton_interpreter"] = _launch.TRITON_INTERPRETED
    machine_info["commit"] = os.environ.get("DDPM_FAST_COMMIT") or _git_commit()


def _git_commit() -> str:
    # The GPU machine gets a copy of the work tree without .git: run_on_device.sh passes DDPM_FAST_COMMIT instead.
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@pytest.fixture(scope="session")
def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _smoke(config) -> bool:
    return bool(config.getoption("benchmark_disable", False))


@pytest.fixture(scope="session")
def smoke(request):
    """--benchmark-disable: run every case once at its smallest size, so CI proves the suite still works."""
    return _smoke(request.config)


def pytest_generate_tests(metafunc):
    # A module's `benchmark_shapes()` gives the sizes for its `shape` argument; smoke mode keeps the smallest.
    if "shape" in metafunc.fixturenames and hasattr(metafunc.module, "benchmark_shapes"):
        shapes = metafunc.module.benchmark_shapes()
        if _smoke(metafunc.config):
            shapes = shapes[:1]
        metafunc.parametrize("shape", shapes, ids=["x".join(map(str, s)) for s in shapes])
