"""The repository's promises about itself: CI runs the README's test command; the package layout resolves."""

import pathlib
import re

import pytest

import ddpm_fast

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"\*\*Run the tests\*\*.*?```bash\n(.*?)\n```", readme, re.S).group(1)
    return block.split("&&")[-1].strip()


def test_ci_runs_exactly_the_readme_test_command():
    command = _readme_test_command()
    assert "pytest" in command
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert command in ci_lines


def test_kernels_and_export_live_in_the_package_namespace():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert config["tool"]["setuptools"]["package-dir"] == {
        "ddpm_fast": "ddpm_fast", "ddpm_fast.kernels": "kernels", "ddpm_fast.export": "export"}
    import ddpm_fast.export
    import ddpm_fast.kernels

    assert pathlib.Path(ddpm_fast.kernels.__file__).parent.name == "kernels"
    assert ddpm_fast.export.__name__ == "ddpm_fast.export"


def test_public_api_names():
    for name in ("NoiseSchedule", "FastSampler", "FastDDPMScheduler", "UNet", "q_sample", "p_step", "ddim_step", "forward_diffusion_sample", "train_step",
                 "sample", "reference"):
        assert hasattr(ddpm_fast, name), name
    for name in ("forward_diffusion_sample", "train_step", "sample"):
        assert hasattr(ddpm_fast.reference, name), name


def test_cli_demo_runs(capsys, tmp_path):
    from ddpm_fast.cli import main
    from ddpm_fast.kernels import cpu_reference

    with cpu_reference():  # a whole U-Net: the interpreter would run its norm programs one at a time
        assert main(["demo", "--run-dir", str(tmp_path), "--steps", "2", "--batch-size", "4", "--timesteps", "5",
                     "--num-samples", "2", "--device", "cpu", "--no-compile", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "naive reference" in out and "speed-up" in out
