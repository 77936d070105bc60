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

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


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
