"""Build every kernel for an NVIDIA target (sm_90) on a CPU-only machine: every option variant compiles, and none
spills registers at the launch configurations real models get.

The interpreter is lenient where compiled Triton is not (e.g. non-constexpr globals inside @jit code), so passing
under TRITON_INTERPRET=1 does not prove a kernel compiles. triton.compile needs no GPU: the wheel ships ptxas.
tests/launch_resources.py builds each configuration once for both tests (about a thousand builds, the costliest part
of CI), in a subprocess because the interpreter must be off when triton is imported.
"""

import collections
import os
import pathlib
import re
import subprocess
import sys

import pytest

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): compiles kernels for
# sm_90 in subprocesses that never take the interpreter.
pytestmark = pytest.mark.torch_references

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def builds():
    """The script's exit status and output lines, from one run for the module."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "launch_resources.py")], env=env,
                            capture_output=True, text=True, timeout=1800)
    return result.returncode, result.stdout.splitlines(), result.stderr[-4000:]


def test_every_kernel_variant_compiles_for_sm90(builds):
    """Every launch configuration and option variant builds; the counts per kernel show a dropped loop."""
    _, lines, stderr = builds
    failures = [line for line in lines if line.startswith("FAILED")]
    assert not failures and any(line == "built 1018, 0 failed" for line in lines), "\n".join(failures) + stderr
    kernels = collections.Counter(line.split()[1] for line in lines if line.startswith(("ok", "SPILLS")))
    assert kernels == {"p_step_kernel": 219, "group_norm_backward_kernel": 229, "group_norm_forward_kernel": 214,
                       "dpm_solver_step_kernel": 147, "ddim_step_kernel": 111, "group_norm_stats_kernel": 50,
                       "unipc_step_kernel": 39, "q_sample_kernel": 6, "philox_normal_kernel": 3}


def test_no_kernel_spills_at_the_launch_configurations_of_real_models(builds):
    """Registers and stack frame (the cubin's resource usage, sm_90; ptxas -v's spill figures where a frame exists)
    of every kernel at the tiles and warps the launchers pick for ddpm-cifar10 and ddpm-256 at batch 1/16/128/512,
    both layouts, forward and backward. A spilled register is a round trip to local memory on every access: none is
    allowed."""
    status, lines, stderr = builds
    spills = [line for line in lines if line.startswith("SPILLS")]
    assert not spills and "0 configuration(s) spill" in lines, "\n".join(spills) + stderr
    counted = [re.match(r"(\d+) launch configurations", line) for line in lines]
    launches = [int(match.group(1)) for match in counted if match]
    assert launches and launches[0] > 200, lines[:3]  # every site was enumerated
    assert status == 0, "\n".join(line for line in lines if line.startswith("FAILED")) + stderr
