"""Dependencies point one way (docs: the architecture page): every module's imports, read with ast, go to its own
layer or a lower one, and no modules import each other in a circle.

A module imported inside a function counts like any other import. The only edges allowed to run upward are the
public `from_*` constructors that the API names on lower-layer classes (FastSampler.from_diffusers, UNet.from_diffusers,
...): thin delegates into the adapter that reads the foreign format, listed in DELEGATES. Imports inside functions are
for start-up time only: the command line's modules keep `ddpm-fast --help` free of torch that way; elsewhere only the
delegates import inside a function.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): reads the source files'
# imports: no kernel runs.
pytestmark = pytest.mark.torch_references

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Source folders and the package each is installed as (kernels/ and export/ live at the top of the repository).
SOURCES = {"ddpm_fast": "ddpm_fast", "kernels": "ddpm_fast.kernels", "export": "ddpm_fast.export"}

# Bottom to top; a module belongs to the first prefix it starts with.
LAYERS = (
    ("vocabulary", ("ddpm_fast.vocabulary", "ddpm_fast._lazy")),
    ("core", ("ddpm_fast.checks", "ddpm_fast.files", "ddpm_fast.schedule", "ddpm_fast.diffusion_setup",
              "ddpm_fast.reference", "ddpm_fast.data")),
    ("kernels", ("ddpm_fast.kernels",)),
    ("validated ops", ("ddpm_fast.diffusion",)),
    ("models", ("ddpm_fast.models",)),
    ("sampling", ("ddpm_fast.sampling",)),
    ("training and evaluation", ("ddpm_fast.evaluation", "ddpm_fast.training", "ddpm_fast.seed_functions")),
    ("adapters", ("ddpm_fast.interop", "ddpm_fast.export")),
    ("command line", ("ddpm_fast.cli", "ddpm_fast.__main__")),
)
# Where an import inside a function keeps start-up fast: the command line's parser imports these modules.
LAZY_IMPORTERS = ("ddpm_fast.cli",)
# The package's own __init__ only maps public names to their modules, loaded on first use (PEP 562).
FACADE = "ddpm_fast"

# (module, function) -> the adapter it delegates to: the public constructors of foreign formats.
DELEGATES = {
    ("ddpm_fast.models.unet", "from_diffusers"): "ddpm_fast.interop.diffusers_unet",
    ("ddpm_fast.sampling.sampler", "from_diffusers"): "ddpm_fast.interop.diffusers_pipeline",
    ("ddpm_fast.sampling.sampler", "from_pretrained"): "ddpm_fast.interop.pretrained",
    ("ddpm_fast.sampling.sampler", "from_denoising_diffusion_pytorch"): "ddpm_fast.interop.denoising_diffusion_pytorch",
}


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for folder, package in SOURCES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _modules()


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in {__file__} and to the architecture page")


def _imports(module: str, path: pathlib.Path):
    """(imported module, enclosing function name or None, line) for each import of a ddpm_fast module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, function, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")[:len(module.split(".")) - child.level + (1 if is_package else 0)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:  # `from package import module` imports the module
                    found.append((f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target,
                                  function, child.lineno))
            visit(child, function)

    visit(tree, None)
    return [(target, function, line) for target, function, line in found
            if target == "ddpm_fast" or target.startswith("ddpm_fast.")]


EDGES = {module: _imports(module, path) for module, path in MODULES.items()}


def test_every_module_has_a_layer():
    for module in MODULES:
        if module != FACADE:
            layer_of(module)


def test_imports_point_down():
    upward = []
    for module, imports in EDGES.items():
        if module == FACADE:
            continue
        for target, function, line in imports:
            if target == FACADE or layer_of(target) <= layer_of(module):
                continue
            if DELEGATES.get((module, function)) == target:
                continue
            upward.append(f"{MODULES[module].relative_to(ROOT)}:{line} ({LAYERS[layer_of(module)][0]}) imports "
                          f"{target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = {module: {target for target, function, _ in imports
                      if target in MODULES and DELEGATES.get((module, function)) != target and target != FACADE}
             for module, imports in EDGES.items()}
    # Tarjan's strongly connected components: any component of more than one module is a cycle.
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    assert not cycles, f"modules that import each other in a circle: {cycles}"


def test_no_private_names_across_modules():
    """Helpers shared between modules are public names of their module: nothing imports another's `_private`."""
    taken = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ddpm_fast")):
                taken += [f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not taken, "private names imported from another module:\n" + "\n".join(taken)


def test_imports_inside_functions_only_where_start_up_needs_them():
    lazy = [f"{MODULES[module].relative_to(ROOT)}:{line} imports {target} inside {function}()"
            for module, imports in EDGES.items() for target, function, line in imports
            if function is not None and not module.startswith(LAZY_IMPORTERS)
            and DELEGATES.get((module, function)) != target]
    assert not lazy, "imports inside functions outside the command line:\n" + "\n".join(lazy)


@pytest.mark.parametrize("delegate", sorted(DELEGATES))
def test_delegates_exist(delegate):
    """Each allowed upward edge is still a real import in a function of that name (the list stays honest)."""
    module, function = delegate
    assert any(f == function and t == DELEGATES[delegate] for t, f, _ in EDGES[module]), delegate
