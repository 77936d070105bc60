"""MkDocs hook: lay the package out for mkdocstrings as it is installed.

kernels/ and export/ sit at the top of the repository and are installed as ddpm_fast.kernels and ddpm_fast.export
(pyproject.toml's package-dir). griffe, which reads the sources for the API reference, finds packages by folder, so
this hook copies the sources into build/docs-source/ddpm_fast/ in the installed layout before the build starts
(`on_startup` runs before mkdocstrings reads its `paths`).
"""

from __future__ import annotations

import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "build" / "docs-source"


def on_startup(command: str, dirty: bool) -> None:
    shutil.rmtree(SOURCE, ignore_errors=True)
    package = SOURCE / "ddpm_fast"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.png", "*.txt")
    shutil.copytree(ROOT / "ddpm_fast", package, ignore=skip)
    for folder in ("kernels", "export"):
        shutil.copytree(ROOT / folder, package / folder, ignore=skip)
