"""The package's import graph, read from the source with ``ast``, has no cycles.

Every import counts, at module level and inside functions alike: a function-level import hides a
loop from the interpreter at start-up but not from a reader. Importing ``a.b.c`` runs the package
``__init__`` files of ``a`` and ``a.b`` too, so those are edges as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ditlab

SRC = Path(ditlab.__file__).resolve().parent
PACKAGE = "ditlab"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py")) if "conf" not in p.relative_to(SRC).parts}


def imported_names(path: Path, name: str) -> set[str]:
    """Every ditlab module the file imports (absolute or relative, anywhere in the file)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {m for m in out if m == PACKAGE or m.startswith(PACKAGE + ".")}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges = set()
        for target in imported_names(path, name):
            parts = target.split(".")
            # the module itself (when it is one) and every package __init__ on the way to it
            edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in mods)
        edges.discard(name)
        # a package's own __init__ runs before its submodules: importing a submodule is not a loop back
        graph[name] = {e for e in edges if not name.startswith(e + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_every_module_and_both_kinds_of_import():
    graph = import_graph()
    assert len(graph) > 50 and "ditlab.cli" in graph and "ditlab.models.accounting" in graph
    assert "ditlab.config" in graph["ditlab.cli"]  # module level
    assert "ditlab.training.train" in graph["ditlab.cli"]  # inside a function (kept lazy for start-up)
    assert (
        "ditlab.models" in graph["ditlab.models.accounting"] or "ditlab.models.dit" in graph["ditlab.models.accounting"]
    )


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_graph_is_acyclic():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import loop: " + " -> ".join(cycle)


def folder(module: str) -> str:
    """The folder a module belongs to: ``ditlab.training.train`` -> ``ditlab.training``; a top-level
    module (``ditlab.build``, ``ditlab.config``) is its own unit."""
    return ".".join(module.split(".")[:2])


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph seen folder by folder: one edge per pair of folders with any import between them."""
    out: dict[str, set[str]] = {}
    for module, edges in graph.items():
        if module == PACKAGE:
            continue  # ditlab/__init__.py: the package itself, not a folder of it
        out.setdefault(folder(module), set()).update(folder(e) for e in edges if e != PACKAGE)
    return {f: edges - {f} for f, edges in out.items()}


def test_folder_graph_merges_modules_into_their_folders():
    graph = {"ditlab.a.x": {"ditlab.b.y", "ditlab"}, "ditlab.b.y": {"ditlab.c"}, "ditlab.b.z": {"ditlab.a.w"}}
    assert folder_graph(graph) == {"ditlab.a": {"ditlab.b"}, "ditlab.b": {"ditlab.c", "ditlab.a"}}
    assert find_cycle(folder_graph(graph)) == ["ditlab.a", "ditlab.b", "ditlab.a"]  # no module-level cycle


def test_no_import_cycle_between_folders():
    # Modules of two folders may import each other without a module-level cycle (training.train ->
    # sweep.compute, sweep.jobs -> training.wandb_logger); the folders are then one knot to change.
    cycle = find_cycle(folder_graph(import_graph()))
    assert cycle is None, "folders import each other: " + " -> ".join(cycle)


def test_config_imports_nothing_else_from_ditlab():
    # ...but the two foundations its resolvers live in, which import only the error type.
    graph = import_graph()
    assert graph["ditlab.config"] == {"ditlab.run_names", "ditlab.user_cache"}
    assert graph["ditlab.run_names"] <= {"ditlab.errors"} and graph["ditlab.user_cache"] == set()


def test_the_wandb_log_reader_stays_outside_the_library():
    # It parses wandb's own offline format (no public API reads it); only tests and users import it.
    assert not [m for m, edges in import_graph().items() if "ditlab.training.wandb_offline" in edges]


# docs/architecture.md's layers, bottom (0) to top (4); a module imports only from its layer or below.
LAYERS = (
    (4, ("ditlab.cli", "ditlab.tools", "ditlab.report.cli")),
    (3, ("ditlab.training", "ditlab.sweep", "ditlab.report", "ditlab.cache")),
    (2, ("ditlab.build",)),
    (
        1,
        (
            "ditlab.models",
            "ditlab.objectives",
            "ditlab.auxloss",
            "ditlab.samplers",
            "ditlab.encoders",
            "ditlab.data",
            "ditlab.latent_cache",
            "ditlab.metrics",
            "ditlab.nets",
        ),
    ),
)


def layer(module: str) -> int:
    for level, prefixes in LAYERS:  # most specific first: ditlab.report.cli before ditlab.report
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return 0  # foundations: config, registry, errors, images, atomic, devices, provenance, progress


def test_layers_import_only_downwards():
    upward = [
        f"{m} -> {e}" for m, edges in import_graph().items() for e in edges if m != PACKAGE and layer(e) > layer(m)
    ]
    assert not upward, "imports against the layering of docs/architecture.md: " + "; ".join(upward)
