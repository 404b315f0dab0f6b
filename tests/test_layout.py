"""The house rules of the source tree, read from the imports (docs/design.md draws the same picture)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "bertlab"

# Bottom to top; a module may import its own layer or the ones below, never one above.
LAYERS = [
    ("errors", "atomic_write", "output_lock", "run_folder", "progress"),
    ("model", "tokenizer", "data", "config", "sentence_embedding"),
    ("saved_run",),
    ("training", "tasks", "reporting"),
    ("flow", "pretrained", "hf_import", "baseline", "trained_model"),
    (
        "pretraining",
        "finetuning",
        "preparation",
        "evaluate",
        "export",
        "onnx_export",
        "predict",
        "released_model",
        "suite",
    ),
    ("run",),
    ("launcher",),
]
# Hydra's own modules: the launcher edge (its runtime) and the one instantiate helper.
HYDRA_ALLOWED = ("launcher", "config.instantiate")


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:
            found[name] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module imported anywhere in the file (also inside functions), bertlab's without the prefix."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def layer_of(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        if any(name == unit or name.startswith(f"{unit}.") for unit in layer):
            return index
    raise AssertionError(f"bertlab.{name} is in no layer of tests/test_layout.py; place it there")


def bertlab_graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {
            imported.removeprefix("bertlab.")
            for imported in imports(path)
            if imported.startswith("bertlab.") and imported.removeprefix("bertlab.") in known
        }
        - {name}
        for name, path in known.items()
    }


def test_no_module_imports_one_above_it():
    upward = [
        f"{name} -> {imported}"
        for name, imported_names in bertlab_graph().items()
        for imported in imported_names
        if layer_of(imported) > layer_of(name)
    ]
    assert upward == []


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of `graph` (module -> the modules it imports) meets."""
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for imported in sorted(graph.get(name, ())):
            if state.get(imported) == "open":
                cycles.append([*path[path.index(imported) :], imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_the_imports_have_no_cycle():
    assert import_cycles(bertlab_graph()) == []


def test_only_the_edge_imports_hydra_and_nothing_imports_the_launcher():
    hydra_users, launcher_users = [], []
    for name, path in modules().items():
        imported = imports(path)
        if any(i == "hydra" or i.startswith("hydra.") for i in imported):
            hydra_users.append(name)
        if not name.startswith("launcher") and any(i.startswith("bertlab.launcher") for i in imported):
            launcher_users.append(name)
    assert all(name.startswith(HYDRA_ALLOWED) for name in hydra_users), hydra_users
    assert launcher_users == []


def test_a_package_sits_in_one_layer_and_the_packages_have_no_cycle():
    """A package is one unit of the house: all its modules in one layer, and no import runs back up through
    it (saved_run -> config -> training -> saved_run was such a loop while config/ held the run checks)."""
    known = modules()
    packages = {name for name in known if "." in name}
    split = {
        package: sorted({layer_of(name) for name in known if name.startswith(f"{package}.")})
        for package in {name.split(".")[0] for name in packages}
    }
    assert {package: layers for package, layers in split.items() if len(layers) > 1} == {}

    graph: dict[str, set[str]] = {}
    for name, imported_names in bertlab_graph().items():
        top = name.split(".")[0]
        graph.setdefault(top, set()).update(i.split(".")[0] for i in imported_names if i.split(".")[0] != top)
    assert import_cycles(graph) == []
