"""What imports what: `import ddpm_fast` and the command line's parser load neither torch nor Triton; a name loads
its module on first use; Triton comes with the first kernel."""

import subprocess
import sys

import pytest

import ddpm_fast
from subprocess_env import subprocess_env

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): what importing loads, in
# fresh subprocesses: no kernel runs here.
pytestmark = pytest.mark.torch_references


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_and_the_cli_parser_load_neither_torch_nor_triton():
    out = _run("import sys, ddpm_fast\n"
               "from ddpm_fast.cli.main import build_parser\n"
               "build_parser().parse_args(['sample', '--checkpoint', 'x'])\n"
               "print(sorted(m for m in ('torch', 'triton', 'numpy') if m in sys.modules))")
    assert out == "[]"


def test_help_exits_before_any_heavy_import():
    code = ("import sys\nfrom ddpm_fast.cli.main import main\n"
            "for argv in (['--help'], ['train', '--help'], ['sample', '--help'], ['export', '--help'], "
            "['demo', '--help'], ['bench', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit as exit:\n        assert exit.code == 0, exit.code\n"
            "print('torch' in sys.modules, 'triton' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "False False"
    assert "usage: ddpm-fast" in result.stdout


def test_configs_and_schedules_load_no_triton_and_a_kernel_does():
    out = _run("import sys, ddpm_fast\n"
               "ddpm_fast.NoiseSchedule.linear(10); ddpm_fast.UNetConfig().check_spatial(32, 32)\n"
               "ddpm_fast.TrainingConfig()\n"
               "import ddpm_fast.kernels\n"
               "before = 'triton' in sys.modules\n"
               "ddpm_fast.kernels.q_sample_reference\n"
               "print(before, 'triton' in sys.modules)")
    assert out == "False True"


@pytest.mark.parametrize("name", ddpm_fast.__all__)
def test_every_public_name_resolves_and_is_listed(name):
    assert getattr(ddpm_fast, name) is not None
    assert name in dir(ddpm_fast)


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        ddpm_fast.no_such_name  # noqa: B018
    with pytest.raises(AttributeError, match="no_such_kernel"):
        ddpm_fast.kernels.no_such_kernel  # noqa: B018
    assert set(ddpm_fast.kernels.__all__) <= set(dir(ddpm_fast.kernels))
    for name in ddpm_fast.kernels.__all__:
        assert getattr(ddpm_fast.kernels, name) is not None


def test_using_an_op_registers_it_in_a_fresh_process():
    # The modules that call torch.ops.ddpm_fast.* import kernels.ops themselves: no import order can miss one.
    out = _run("import torch\nfrom ddpm_fast.diffusion import q_sample\nfrom ddpm_fast import NoiseSchedule\n"
               "x, _ = q_sample(torch.zeros(1, 1, 4, 4), torch.tensor([5]), NoiseSchedule.linear(10), seed=0)\n"
               "print(tuple(x.shape))")
    assert out == "(1, 1, 4, 4)"


def test_kernels_ops_registers_every_op_in_a_fresh_process():
    out = _run("import torch, ddpm_fast.kernels.ops\n"
               "print(sorted(name for name in ('q_sample', 'q_sample_philox', 'p_step', 'ddim_step', 'philox_normal',"
               " 'group_norm_act') if hasattr(torch.ops.ddpm_fast, name)))")
    assert out == str(sorted(["q_sample", "q_sample_philox", "p_step", "ddim_step", "philox_normal", "group_norm_act"]))
