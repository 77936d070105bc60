"""PEP 562 lazy names for a package: each public name imports its module on first use, so importing the package
itself stays cheap (no torch, no Triton)."""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Iterable


def lazy_names(package: str, module_of: dict[str, str], submodules: Iterable[str] = ()
               ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for `package`: module_of maps a name to the module (relative to the package) that
    defines it; each of `submodules` is returned as the module itself. A resolved name is stored on the package,
    so later lookups never reach __getattr__."""
    submodules = frozenset(submodules)

    def __getattr__(name: str) -> object:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        namespace = sys.modules[package]
        return sorted(set(vars(namespace)) | set(getattr(namespace, "__all__", ())))

    return __getattr__, __dir__
