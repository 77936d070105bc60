"""Test setup: which CPU path the kernels take, and one share of the cores per pytest-xdist worker.

TRITON_INTERPRET=1 runs the Triton kernels themselves on CPU tensors (the interpreter); TRITON_INTERPRET=0 runs the
torch references, the path a CPU user gets (triton reads "0" as off). Unset and without a GPU, the interpreter.
It must be set before triton is first imported, hence at the top of conftest, before torch.
"""

import os
import shutil
import warnings

if "TRITON_INTERPRET" not in os.environ and shutil.which("nvidia-smi") is None:
    os.environ["TRITON_INTERPRET"] = "1"
# Under `pytest -n N` each worker gets cores/N OpenMP threads: N workers at torch's default of one thread per core
# would make every op's threads wait at its barrier for a core another worker holds.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    from ddpm_fast.cli.threads import available_cores  # imports neither torch nor triton

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // _workers)))
# The CLI's commands, run in this process, would otherwise set torch's thread count for every later test from the
# machine's load at that moment (tests/test_threads.py checks the choice itself).
os.environ.setdefault("DDPM_FAST_THREADS", "all")

import pytest  # noqa: E402
import torch  # noqa: E402

from ddpm_fast.kernels import launch  # noqa: E402

HAS_CUDA = torch.cuda.is_available()

# A test marked `torch_references` runs the kernels' torch references whatever TRITON_INTERPRET says: its work is in
# a subprocess (which drops the interpreter), inside `cpu_reference()`, or reaches no kernel at all. The interpreter's
# run leaves it out (-m "not torch_references"): there it would repeat the TRITON_INTERPRET=0 run exactly. That run
# checks the claim: a marked test that sends a CPU tensor toward a kernel fails.
TORCH_REFERENCES = "torch_references"
_watch = {"on": False, "reached": []}


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


if not launch.TRITON_INTERPRETED:
    _runs_triton = launch.runs_triton

    def _watched_runs_triton(tensor):
        if _watch["on"] and not tensor.is_cuda and launch.reaches_kernel(tensor):
            _watch["reached"].append(f"{tuple(tensor.shape)} {tensor.dtype}")
        return _runs_triton(tensor)

    launch.runs_triton = _watched_runs_triton


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures are set up: a module fixture's work counts too
def pytest_runtest_setup(item):
    _watch["on"] = not launch.TRITON_INTERPRETED and item.get_closest_marker(TORCH_REFERENCES) is not None
    _watch["reached"] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    reached, _watch["on"] = _watch["reached"], False
    if reached:
        pytest.fail(f"marked {TORCH_REFERENCES}, but under the interpreter {len(reached)} op calls would run a "
                    f"Triton kernel (first on a tensor {reached[0]}): run them inside cpu_reference() or drop the "
                    "mark", pytrace=False)
    return result


# Every kernel test runs on the CPU (interpreter) and, marked `gpu`, on CUDA.
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fast_path_fallbacks_are_errors():
    """A FastSampler that silently gave up torch.compile or CUDA graphs would let a test pass on the slow path: any
    FastPathFallbackWarning fails the test, except inside `pytest.warns`, where a test expects one."""
    from ddpm_fast import FastPathFallbackWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPathFallbackWarning)
        yield
