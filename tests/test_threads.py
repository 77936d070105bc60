"""The CLI's CPU thread choice: one thread per core other processes leave free, unless the user chose."""

import pytest

from ddpm_fast.cli import threads

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): the CLI's thread choice,
# with the commands refused before any kernel runs.
pytestmark = pytest.mark.torch_references


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.delenv(threads.ENVIRONMENT, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)


@pytest.mark.parametrize("busy, expected", [(0.0, 4), (0.4, 4), (1.0, 3), (2.6, 1), (3.9, 1), (8.0, 1)])
def test_one_thread_per_free_core(four_cores, monkeypatch, busy, expected):
    monkeypatch.setattr(threads, "busy_cores", lambda: busy)
    chosen, why = threads.choose_threads()
    assert chosen == expected and why.startswith(f"one per free core (other processes kept {busy:.1f} of ")


def test_no_proc_stat_leaves_torch_default(four_cores, monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda: None)
    assert threads.choose_threads()[0] is None


def test_the_users_choice_wins(four_cores, monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda: pytest.fail("measured although the user chose"))
    monkeypatch.setenv(threads.ENVIRONMENT, "all")
    assert threads.choose_threads() == (None, "DDPM_FAST_THREADS=all: torch's default")
    monkeypatch.setenv(threads.ENVIRONMENT, "3")
    assert threads.choose_threads() == (3, "DDPM_FAST_THREADS=3")
    monkeypatch.delenv(threads.ENVIRONMENT)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose_threads() == (None, "OMP_NUM_THREADS=2")


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "5", "999"])
def test_a_bad_setting_is_named(four_cores, monkeypatch, value):
    monkeypatch.setenv(threads.ENVIRONMENT, value)
    with pytest.raises(ValueError, match=rf"DDPM_FAST_THREADS must be 'all' or an int in \[1, 4\].*got '{value}'"):
        threads.choose_threads()


@pytest.mark.parametrize("value", ["abc", "0", "-2"])
def test_a_bad_openmp_setting_is_named(four_cores, monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(ValueError, match=f"OMP_NUM_THREADS must be a positive int, got '{value}'"):
        threads.choose_threads()


def test_busy_cores_reads_this_machine():
    busy = threads.busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= (__import__("os").cpu_count() or 1) + 1e-9
    assert 1 <= threads.available_cores()


def test_configure_sets_torch_and_says_so(four_cores, monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "busy_cores", lambda: 3.0)
    try:
        line = threads.configure_torch_threads()
        assert torch.get_num_threads() == 1
        assert line.startswith("CPU threads: 1 — one per free core (other processes kept 3.0 of ")
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("command", [["train", "--run-dir", "{tmp}/run", "--steps", "1", "--device", "cpu"],
                                     ["demo", "--run-dir", "{tmp}/demo", "--steps", "1", "--device", "cpu"]])
def test_a_bad_setting_on_the_command_line_is_one_line(command, tmp_path, monkeypatch, capsys):
    from ddpm_fast.cli import main as cli

    monkeypatch.setenv(threads.ENVIRONMENT, "many")
    assert cli.main([part.replace("{tmp}", str(tmp_path)) for part in command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DDPM_FAST_THREADS must be 'all' or an int in" in err
    assert not any(tmp_path.iterdir())


def test_argument_mistakes_are_reported_before_torch_is_imported():
    """`--model huge`, a bad --device or DDPM_FAST_THREADS: one line at once, not after seconds of imports."""
    import subprocess
    import sys

    from subprocess_env import subprocess_env

    script = ("import os, sys\nfrom ddpm_fast.cli.main import main\n"
              "for argv, chosen in ((['train', '--run-dir', 'unused-run', '--model', 'huge'], '1'), (['demo'], 'lots'),\n"
              "                     (['sample', '--checkpoint', '.', '--device', 'tpu'], 'lots')):\n"
              "    os.environ['DDPM_FAST_THREADS'] = chosen\n"
              "    try:\n        code = main(argv)\n    except SystemExit as exit:\n        code = exit.code\n"
              "    print(code, 'torch' in sys.modules)\n")
    env = subprocess_env()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[:3] == ["2 False"] * 3, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert "model must be one of the UNet presets" in lines[0] and "DDPM_FAST_THREADS" in lines[1]
    assert "--device: expected auto, cpu, cuda or cuda:N, got 'tpu'" in lines[2], done.stderr
