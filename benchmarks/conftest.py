"""Benchmark setup: device, modes, the ceilings measured once per session, and the facts every results file must
carry (device, versions, commit, mode).

Modes: smoke (--benchmark-disable; CI runs every case once at its smallest size), quick (DDPM_FAST_BENCH_QUICK=1, set by
`ddpm-fast bench --quick`: real timings at a module's `quick_shapes()`, or its first size, with shorter budgets) and
full (every size of `benchmark_shapes()`).
"""

import os

import pytest
import torch

from ddpm_fast.cli.bench import THREADS_ENV, device_name, git_commit, package_versions
from timing import matmul_tflops, quick_mode

if os.environ.get(THREADS_ENV):  # `ddpm-fast bench --threads N`; the device's name records the count
    torch.set_num_threads(int(os.environ[THREADS_ENV]))

CEILINGS: dict = {}  # measured during the session, written into machine_info when the JSON is saved
LOAD_AT_START = os.getloadavg()  # a shared CPU machine: the busier it is, the noisier the figures


def _mode(config) -> str:
    return "smoke" if _smoke(config) else ("quick" if quick_mode() else "full")


def pytest_benchmark_update_machine_info(config, machine_info):
    import triton

    from ddpm_fast.kernels import launch

    machine_info["device"], machine_info["device_type"] = device_name()
    machine_info["torch"] = torch.__version__
    machine_info["triton"] = triton.__version__
    machine_info["cuda"] = torch.version.cuda
    machine_info["triton_interpreter"] = launch.TRITON_INTERPRETED
    # The GPU machine gets a copy of the work tree without .git: the device plan passes DDPM_FAST_COMMIT instead.
    machine_info["commit"] = os.environ.get("DDPM_FAST_COMMIT") or git_commit()
    machine_info["mode"] = _mode(config)
    machine_info["ceilings"] = dict(CEILINGS)
    machine_info["load_average"] = {"start": LOAD_AT_START, "end": os.getloadavg()}


def pytest_benchmark_update_json(config, benchmarks, output_json):
    # The facts a reader looks for first, at the top level beside pytest-benchmark's own keys.
    machine = output_json["machine_info"]
    output_json.update({"device": machine["device"], "device_type": machine["device_type"],
                        "versions": package_versions(), "commit": machine["commit"], "mode": machine["mode"],
                        "ceilings": machine["ceilings"]})


@pytest.fixture(scope="session")
def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _smoke(config) -> bool:
    return bool(config.getoption("benchmark_disable", False))


@pytest.fixture(scope="session")
def smoke(request):
    """--benchmark-disable: run every case once at its smallest size, so CI proves the suite still works."""
    return _smoke(request.config)


@pytest.fixture(scope="session")
def quick(request):
    """`ddpm-fast bench --quick`: real timings, fewer sizes and rounds (never true together with smoke)."""
    return quick_mode() and not _smoke(request.config)


@pytest.fixture(scope="session")
def bf16_matmul_tflops(device, smoke):
    """The device's dense bf16 matmul rate in TFLOP/s, measured once per session: every U-Net figure's ceiling."""
    if "bf16_matmul_tflops" not in CEILINGS:
        CEILINGS["bf16_matmul_tflops"] = matmul_tflops(device, smoke)
    return CEILINGS["bf16_matmul_tflops"]


def pytest_generate_tests(metafunc):
    # A module's `benchmark_shapes()` gives the sizes for its `shape` argument; smoke mode keeps the smallest, quick
    # mode the module's `quick_shapes()` (or the smallest).
    if "shape" in metafunc.fixturenames and hasattr(metafunc.module, "benchmark_shapes"):
        shapes = metafunc.module.benchmark_shapes()
        if _smoke(metafunc.config):
            shapes = shapes[:1]
        elif quick_mode():
            quick_shapes = getattr(metafunc.module, "quick_shapes", None)
            shapes = quick_shapes() if quick_shapes else shapes[:1]
        metafunc.parametrize("shape", shapes, ids=["x".join(map(str, s)) for s in shapes])
