"""The packages import one way: runtime ← modeling ← evaluation ← training, converters;
inside the runtime, its rooms (subpackages) import one way too (:data:`ROOMS`).

Read from the source with ``ast`` (nothing is imported, no TensorFlow): fast, and it sees
imports inside functions too. The table is the rule; a new arrow against it fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PACKAGES = {
    "runtime": ("leukedge", REPO / "sdk" / "leukedge"),
    "modeling": ("leukedge.modeling", REPO / "modeling"),
    "evaluation": ("leukedge.evaluation", REPO / "evaluation"),
    "training": ("leukedge.training", REPO / "training"),
    "converters": ("leukedge.converters", REPO / "converters"),
}

ALLOWED = {
    "runtime": set(),
    "modeling": {"runtime"},
    "evaluation": {"runtime", "modeling"},
    "training": {"runtime", "modeling", "evaluation"},
    "converters": {"runtime", "modeling", "evaluation"},
}
"""Which packages each package may import (besides itself)."""

CLI_ENTRY_POINT = {
    "leukedge.training.cli",
    "leukedge.converters.cli",
    "leukedge.converters.compare",
}
"""What the ``leukedge`` command (``sdk/leukedge/cli/``) may import from above, inside
functions only: it assembles ``leukedge train`` / ``convert`` and runs
``bench --compare``."""


def _package(module: str) -> str | None:
    for name in ("modeling", "evaluation", "training", "converters"):
        if module == f"leukedge.{name}" or module.startswith(f"leukedge.{name}."):
            return name
    if module == "leukedge" or module.startswith("leukedge."):
        return "runtime"
    return None


def _module_name(prefix: str, root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([prefix, *parts])


def _imports(path: Path, module: str):
    """``(imported module, at module level)`` for every leukedge import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
            names += [f"{names[0]}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if _package(name) is not None:
                yield name, id(node) in top_level


def _edges():
    for package, (prefix, root) in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            module = _module_name(prefix, root, path)
            for name, top in _imports(path, module):
                target = _package(name)
                if target != package:
                    yield package, module, name, target, top


def test_every_package_imports_only_downward():
    wrong = []
    for package, module, name, target, top in _edges():
        if target in ALLOWED[package]:
            continue
        entry = (module == "leukedge.cli" or module.startswith("leukedge.cli.")) and not top
        if entry and any(name == m or name.startswith(m + ".") for m in CLI_ENTRY_POINT):
            continue
        # "from leukedge.training import cli" also names the package itself.
        if entry and name in {"leukedge.training", "leukedge.converters"}:
            continue
        wrong.append(f"{module} imports {name} ({package} -> {target})")
    assert not wrong, "\n".join(wrong)


def test_the_rule_is_checked_on_real_imports():
    """The scan sees the arrows that exist (an empty scan would pass anything)."""
    found = {(package, target) for package, _, _, target, _ in _edges()}
    assert {("training", "evaluation"), ("converters", "evaluation")} <= found
    assert {("evaluation", "modeling"), ("evaluation", "runtime")} <= found


def test_training_and_converters_do_not_know_each_other():
    for package, module, name, target, _ in _edges():
        assert {package, target} != {"training", "converters"}, f"{module} imports {name}"


def _module_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over every leukedge module, imports inside
    functions included; package ``__init__`` files (facades that re-export their
    submodules) are left out."""
    modules = {}
    for prefix, root in PACKAGES.values():
        for path in sorted(root.rglob("*.py")):
            if path.name != "__init__.py":
                modules[_module_name(prefix, root, path)] = path
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name, _ in _imports(path, module):
            while name and name not in modules:  # "a.b.NAME" -> module "a.b"
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def test_no_module_imports_back_into_its_importer():
    """No cycles between modules, within a package as well as across (issue 14: a
    callback module importing back into the training loop that uses it)."""
    graph = _module_graph()
    assert graph["leukedge.training.train"] >= {"leukedge.training.callbacks"}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


# ------------------------------------------------------------ rooms inside the runtime
RUNTIME_ROOT = REPO / "sdk" / "leukedge"

BASE = {"leukedge.errors", "leukedge._version", "leukedge.timing"}
"""Top-level modules every room may import: the exception base, the version, the step
timer."""

ROOMS = {
    "base": set(),
    "checks": {"base"},
    "engine": {"base", "checks"},
    "cells": {"base", "checks", "engine"},
    "classifier": {"base", "checks", "engine", "cells"},
    "lab": {"base", "checks", "engine", "cells", "classifier"},
    "review": {"base", "checks", "engine", "cells", "classifier", "lab"},
    "bench": {"base", "checks", "engine", "cells", "classifier"},
    "cli_kit": {"base"},
    "cli": {"base", "checks", "engine", "cells", "classifier", "lab", "review", "bench"}
    | {"cli_kit", "facade"},
    "facade": {"base", "checks", "engine", "cells", "classifier"},
}
"""Which rooms of ``sdk/leukedge`` each room may import (besides itself), as each
subpackage's docstring says: checks know no engine; the engine reads the checks' fitted
parameters from the model's metadata; cells may use both; the classifier (the front
door) stands on those; the lab workflow, the review page and the benchmarks stand on the
classifier; the CLI may import everything, and nothing imports it back. ``facade`` is
``leukedge/__init__.py``, whose public names only the CLI uses."""


def _room(module: str) -> str:
    """``leukedge.engine.pool`` → ``engine``; the base modules → ``base``; ``leukedge``
    itself → ``facade``. A module outside every room gets its own name, which
    :data:`ROOMS` then lacks (a new room must be given its arrows here)."""
    if module == "leukedge":
        return "facade"
    for base in BASE:
        if module == base or module.startswith(base + "."):
            return "base"
    return module.split(".")[1]


def _runtime_edges():
    """``(module, imported name, its room, the imported module's room)`` for every import
    between runtime modules; ``leukedge.X.NAME`` counts as an import of module
    ``leukedge.X`` (``from leukedge import __version__`` is the facade)."""
    prefix, root = PACKAGES["runtime"]
    paths = {_module_name(prefix, root, path): path for path in sorted(root.rglob("*.py"))}
    for module, path in paths.items():
        for name, _ in _imports(path, module):
            if _package(name) != "runtime":
                continue
            target = name
            while target not in paths:  # "leukedge.engine.pool.EnginePool" -> the module
                target = target.rpartition(".")[0]
            yield module, name, _room(module), _room(target)


def test_every_runtime_module_is_in_a_room():
    prefix, root = PACKAGES["runtime"]
    homeless = {
        _module_name(prefix, root, path)
        for path in root.rglob("*.py")
        if _room(_module_name(prefix, root, path)) not in ROOMS
    }
    assert not homeless, f"add these to a room of tests/test_layering.py ROOMS: {homeless}"


def test_every_room_imports_only_downward():
    wrong = [
        f"{module} imports {name} ({room} -> {target})"
        for module, name, room, target in _runtime_edges()
        if target != room and target not in ROOMS.get(room, set())
    ]
    assert not wrong, "\n".join(wrong)


def test_the_room_rule_is_checked_on_real_imports():
    """The scan sees the arrows that exist (an empty scan would pass anything)."""
    found = {(room, target) for _, _, room, target in _runtime_edges() if room != target}
    assert {("engine", "checks"), ("classifier", "engine"), ("lab", "classifier")} <= found
    assert {("cli", "lab"), ("bench", "engine"), ("cells", "checks")} <= found
