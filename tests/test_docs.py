"""The documentation site's promises: a landing-page README, an API entry for every public name, a module map that
names every module, and a benchmarks page generated from the committed results (tests/test_bench.py checks that)."""

import importlib
import pathlib
import re
import subprocess

import pytest

import ddpm_fast
import ddpm_fast.export
import ddpm_fast.kernels

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): the README, the docs
# pages and the public names they document.
pytestmark = pytest.mark.torch_references

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SOURCES = {"ddpm_fast": "ddpm_fast", "kernels": "ddpm_fast.kernels", "export": "ddpm_fast.export"}


def _resolve(path: str) -> object:
    """The object a mkdocstrings identifier names: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            target = getattr(target, name)
        return target
    raise ImportError(path)


def test_every_public_name_has_an_api_entry():
    identifiers = [match for page in (DOCS / "api").glob("*.md")
                   for match in re.findall(r"^::: ([\w.]+)$", page.read_text(encoding="utf-8"), re.M)]
    documented = [_resolve(identifier) for identifier in identifiers]
    missing = [f"{package.__name__}.{name}" for package in (ddpm_fast, ddpm_fast.kernels, ddpm_fast.export)
               for name in package.__all__
               if not any(getattr(package, name) is entry for entry in documented)]
    assert not missing, f"no `::: path` entry in docs/api/ for {missing}"


def _modules() -> set[str]:
    modules = set()
    for folder, package in SOURCES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] != "__init__":
                modules.add(".".join([package, *parts]))
    return modules


def test_the_architecture_page_maps_every_module_and_no_other():
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    mapped = set(re.findall(r"^\| `(ddpm_fast[\w.]*)` \|", page, re.M))
    modules = _modules()
    assert not modules - mapped, f"add to the module map of docs/architecture.md: {sorted(modules - mapped)}"
    assert not mapped - modules, f"docs/architecture.md maps modules that do not exist: {sorted(mapped - modules)}"


def test_the_readme_is_a_landing_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert not re.search(r"\b(commit|at) [0-9a-f]{7,40}\b", readme), "no commit hashes in the README"
    assert 'pip install -e ".[docs]"' in readme.replace("-c constraints.txt ", "") and "mkdocs serve" in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link


def test_every_page_of_the_site_is_in_its_navigation_and_every_picture_exists():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    listed = set(re.findall(r"([\w/-]+\.md)$", config, re.M))
    assert pages == listed, pages ^ listed
    for page in DOCS.rglob("*.md"):
        for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text(encoding="utf-8")):
            assert (page.parent / picture).is_file(), f"{page.name}: {picture}"


def test_nothing_in_the_repository_points_outside_it():
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    pattern = re.compile(r"\.\./shared|DESIGN\.md|DESIGN §|/work/")
    # Committed benchmark result sets record the commands their runs were given, as written: data, not references.
    # This file names the patterns.
    offenders = [name for name in listed.splitlines()
                 if not name.startswith("benchmarks/results/") and name != "tests/test_docs.py"
                 and (ROOT / name).is_file()
                 and pattern.search((ROOT / name).read_text(encoding="utf-8", errors="ignore"))]
    assert not offenders, offenders
