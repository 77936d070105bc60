"""The repository's promises about itself: CI runs the README's test command; the package layout resolves."""

import os
import pathlib
import re
import shutil
import site
import subprocess
import sys
import venv
import zipfile

import pytest

import ddpm_fast

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): the repository and its
# install.
pytestmark = pytest.mark.torch_references

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_test_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"\*\*Run the tests\*\*.*?```bash\n(.*?)\n```", readme, re.S).group(1)
    return [part.strip() for part in block.split("&&") if "pytest" in part]


def test_ci_runs_exactly_the_readme_test_commands():
    commands = _readme_test_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert all(command in ci_lines for command in commands)
    # Both CPU paths: the whole suite on the torch references, the interpreter on every test that can reach a kernel.
    assert [command.split(" python")[0] for command in commands] == ["TRITON_INTERPRET=0", "TRITON_INTERPRET=1"]
    assert "tests benchmarks" in commands[0] and commands[1].endswith('-m "not torch_references" tests')
    assert all("--dist loadfile" in command for command in commands)


def test_the_torch_references_mark_is_declared_and_left_out_only_by_the_interpreter_run():
    markers = _pyproject()["tool"]["pytest"]["ini_options"]["markers"]
    assert any(marker.startswith("torch_references:") for marker in markers)
    first, second = _readme_test_commands()
    assert "torch_references" not in first and "torch_references" in second


MARKED_BUT_REACHING = """
import pytest, torch
import ddpm_fast as df
from ddpm_fast.kernels import cpu_reference

@pytest.mark.torch_references
def test_reaches_a_kernel():
    df.q_sample(torch.zeros(1, 3, 4, 4), torch.tensor([3]), df.NoiseSchedule.linear(10), noise=torch.zeros(1, 3, 4, 4))

@pytest.mark.torch_references
def test_stays_on_the_references():
    with cpu_reference():
        df.q_sample(torch.zeros(1, 3, 4, 4), torch.tensor([3]), df.NoiseSchedule.linear(10),
                    noise=torch.zeros(1, 3, 4, 4))
"""


def test_a_torch_references_test_that_reaches_a_kernel_fails(tmp_path):
    """The check behind the mark (tests/conftest.py): in the TRITON_INTERPRET=0 run, a marked test whose op would take
    a kernel under the interpreter fails, so the interpreter's run loses nothing by leaving marked tests out."""
    (tmp_path / "test_marked.py").write_text(MARKED_BUT_REACHING, encoding="utf-8")
    env = {**os.environ, "TRITON_INTERPRET": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(tmp_path), str(tmp_path / "test_marked.py")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert "1 failed, 1 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
    assert "test_reaches_a_kernel" in result.stdout
    assert "marked torch_references, but under the interpreter" in result.stdout


def test_ci_installs_the_no_deps_test_requirements_the_readme_names():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"\*\*Run the tests\*\*.*?```bash\n(.*?)\n```", readme, re.S).group(1)
    assert "pip install --no-deps -r tests/requirements-no-deps.txt" in block
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pip install --quiet --no-compile --no-deps -r tests/requirements-no-deps.txt" in ci
    pins = [line for line in (ROOT / "tests" / "requirements-no-deps.txt").read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")]
    assert pins and all("==" in line for line in pins)  # pinned: installed without a resolver to keep them apart


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_kernels_and_export_live_in_the_package_namespace():
    config = _pyproject()
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
    from ddpm_fast.cli.main import main
    from ddpm_fast.kernels import cpu_reference

    with cpu_reference():  # a whole U-Net: the interpreter would run its norm programs one at a time
        assert main(["demo", "--run-dir", str(tmp_path), "--steps", "2", "--batch-size", "4", "--timesteps", "5",
                     "--num-samples", "2", "--device", "cpu", "--no-compile", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "naive reference" in out and "speed-up" in out


def test_every_wing_of_the_package_is_installed():
    # A folder of ddpm_fast/ with an __init__.py that pyproject.toml does not list would work from the checkout
    # and be missing from a regular install.
    wings = {"ddpm_fast." + ".".join(init.parent.relative_to(ROOT / "ddpm_fast").parts)
             for init in (ROOT / "ddpm_fast").glob("*/**/__init__.py")}
    assert wings == {"ddpm_fast.models", "ddpm_fast.sampling", "ddpm_fast.training", "ddpm_fast.evaluation", "ddpm_fast.data",
                     "ddpm_fast.interop", "ddpm_fast.cli"}
    assert set(_pyproject()["tool"]["setuptools"]["packages"]) == {"ddpm_fast", "ddpm_fast.kernels",
                                                                   "ddpm_fast.export", *wings}


def _setuptools_builds_wheels() -> bool:
    """setuptools >= 70.1 carries bdist_wheel itself; older ones need the `wheel` package beside them."""
    from importlib import metadata

    try:
        version = tuple(int(part) for part in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    if version >= (70, 1):
        return True
    try:
        metadata.version("wheel")
    except metadata.PackageNotFoundError:
        return False
    return version >= (68, 0)


def test_a_regular_install_into_a_new_venv_imports_every_wing(tmp_path):
    """A fresh, non-editable `pip install` of the checkout into a new venv: the wings, kernels/ and export/ import
    from that venv (not from the checkout) and the console script runs."""
    # A copy of the checkout without build products: setuptools builds in the source tree, and a stale build/ of an
    # older layout would otherwise slip old modules into the wheel.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "runs", "results"))
    wheels = tmp_path / "wheels"
    # Build with this environment's setuptools when it can make wheels (no download; the GPU machine has no index),
    # else in pip's isolated build environment, as a user's `pip install .` would.
    isolation = [] if _setuptools_builds_wheels() else ["--use-pep517"]
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            *(isolation or ["--no-build-isolation"]), "--wheel-dir", str(wheels), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("ddpm_fast-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    modules = {name for name in names if name.endswith(".py")}
    expected = {f"ddpm_fast/{path.relative_to(ROOT / 'ddpm_fast').as_posix()}"
                for path in (ROOT / "ddpm_fast").rglob("*.py")}
    expected |= {f"ddpm_fast/{folder}/{path.name}" for folder in ("kernels", "export")
                 for path in (ROOT / folder).glob("*.py")}
    assert modules == expected  # every module of the checkout, and nothing else
    # The photograph the demo's forward-process picture noises, with its licence (package data).
    assert {"ddpm_fast/data/chelsea.png", "ddpm_fast/data/chelsea.LICENSE.txt"} <= names
    fresh = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(fresh)
    python = fresh / "bin" / "python"
    # torch, numpy and the rest come from this environment's site-packages, added as a plain path: a path line of a
    # .pth does not run that folder's own .pth files, so this environment's editable install stays out.
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    fresh_site = pathlib.Path(subprocess.run([str(python), "-c", purelib], capture_output=True, text=True,
                                             check=True).stdout.strip())
    (fresh_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    code = ("import ddpm_fast, ddpm_fast.sampling.sampler, ddpm_fast.training.trainer, ddpm_fast.models.unet, "
            "ddpm_fast.data.images, ddpm_fast.interop.diffusers_scheduler, ddpm_fast.cli.main, ddpm_fast.kernels, "
            "ddpm_fast.export; print(ddpm_fast.__file__); print(ddpm_fast.kernels.__file__); "
            "print(ddpm_fast.FastSampler.__module__)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    ran = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert ran.returncode == 0, ran.stderr
    package_file, kernels_file, sampler_module = ran.stdout.split()
    assert pathlib.Path(package_file).is_relative_to(fresh) and pathlib.Path(kernels_file).is_relative_to(fresh)
    assert sampler_module == "ddpm_fast.sampling.sampler"
    script = subprocess.run([str(fresh / "bin" / "ddpm-fast"), "--help"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert script.returncode == 0 and "demo" in script.stdout, script.stderr


def test_ci_second_leg_runs_the_oldest_supported_versions_on_existing_tests():
    """CI's second leg installs the minimum torch / triton that pyproject.toml claims (the GPU machine's) and runs
    the listed tests; every listed path (and test name) must exist, or the leg would test less than it says."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    dependencies = _pyproject()["project"]["dependencies"]
    assert "torch>=2.11" in dependencies and any(d.startswith("triton>=3.6") for d in dependencies)
    assert "torch==2.11.0" in ci and "triton==3.6.0" in ci and "tests/gpu_machine_versions.txt" in ci
    entries = [line.strip() for line in (ROOT / "tests" / "gpu_machine_versions.txt").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert "tests/test_gpu_compile.py" in entries and "tests/test_sampler.py" in entries
    for entry in entries:
        path, _, name = entry.partition("::")
        assert (ROOT / path).is_file(), entry
        assert not name or f"def {name}(" in (ROOT / path).read_text(encoding="utf-8"), entry
