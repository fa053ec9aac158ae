"""No function in src/ditlab is over 60 lines, except the few named below with the reason.

Read from the source with ``ast`` (like tests/test_import_graph.py): a function's length runs from
its ``def`` line to its last line, docstring and comments included; a nested function or a method
counts on its own (``Class.method``). A long function is split into named steps; one that stays long
is added to ``ALLOWED`` with the reason a reader would otherwise ask for.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ditlab

SRC = Path(ditlab.__file__).resolve().parent
LIMIT = 60

# "path relative to src/ditlab:qualified name" -> why it stays over the limit
ALLOWED = {
    "models/dit.py:DiT.__init__": (
        "creates the submodules in the official DiT's order, which is the order (and naming) of the parameters "
        "in its state dicts; split over helpers, that order would no longer be visible in one place"
    ),
}


def function_lengths(path: Path) -> dict[str, int]:
    """``qualified name -> lines`` of every function and method in ``path``."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    out[name] = child.end_lineno - child.lineno + 1
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(), filename=str(path)), "")
    return out


def long_functions() -> dict[str, int]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for name, lines in function_lengths(path).items():
            if lines > LIMIT:
                found[f"{rel}:{name}"] = lines
    return found


def test_no_function_is_over_the_limit_unless_named_with_a_reason():
    over = {name: lines for name, lines in long_functions().items() if name not in ALLOWED}
    assert not over, (
        f"functions over {LIMIT} lines: {over}; split them into named steps, or add them to ALLOWED with a reason"
    )


def test_every_allowed_function_is_still_long():
    """An entry whose function was shortened, renamed or moved is removed, so the list stays the truth."""
    stale = set(ALLOWED) - set(long_functions())
    assert not stale, f"ALLOWED names functions that are no longer over {LIMIT} lines: {sorted(stale)}"


def test_the_count_sees_methods_and_nested_functions(tmp_path):
    source = tmp_path / "m.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    source.write_text(
        f"class A:\n    def long(self):\n{body.replace('    ', '        ')}\n\ndef f():\n    def g():\n{body.replace('    ', '        ')}\n"
    )
    lengths = function_lengths(source)
    assert lengths["A.long"] == LIMIT + 1
    assert lengths["f.g"] == LIMIT + 1 and lengths["f"] == LIMIT + 2
