"""Static limits on the package's source (issue: code health): short functions, short files, and
one home per list of names (a tuple, list or set of three or more string literals is defined in
one module only; the others import it)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "arnas_ray"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_the_package_has_sources():
    assert len(SOURCES) > 50  # the checks below would pass vacuously on a wrong path


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_file_or_function_is_too_long(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_FILE_LINES, f"{path.name} has {lines} lines"
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(_tree(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines in {path.name}: {long}"


def _name_collections(tree: ast.AST) -> set[frozenset[str]]:
    return {frozenset(e.value for e in node.elts) for node in ast.walk(tree)
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 3
            and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts)}


def test_no_two_modules_define_the_same_list_of_names():
    homes: dict[frozenset[str], list[str]] = defaultdict(list)
    for path in SOURCES:
        for names in _name_collections(_tree(path)):
            homes[names].append(str(path.relative_to(PACKAGE)))
    shared = {tuple(sorted(names)): files for names, files in homes.items() if len(files) > 1}
    assert not shared, shared


def test_the_name_check_sees_a_copied_list():
    """The detector itself: the same names in another order and container count as one list."""
    a = ast.parse('STATUSES = ("finished", "failed", "stopped")')
    b = ast.parse('if s in ["stopped", "finished", "failed"]: pass')
    assert _name_collections(a) == _name_collections(b) == {frozenset({"finished", "failed", "stopped"})}
    assert not _name_collections(ast.parse('PAIR = ("a", "b")'))
