"""The house rule that public functions carry type hints and a docstring, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "supernets", "search_spaces", "predictors")


def _public_functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module-level functions and methods of module-level classes whose names do not start with '_'
    (closures inside a function are its implementation, not its interface)."""
    found = []
    for node in tree.body:
        members = node.body if isinstance(node, ast.ClassDef) and not node.name.startswith("_") else [node]
        found += [f for f in members if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                  and not f.name.startswith("_")]
    return found


def _problems(f: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = [*f.args.posonlyargs, *f.args.args, *f.args.kwonlyargs, f.args.vararg, f.args.kwarg]
    bare = [a.arg for a in args if a is not None and a.annotation is None and a.arg not in ("self", "cls")]
    return ([f"argument {', '.join(bare)} without a type"] if bare else []) \
        + (["no return type"] if f.returns is None else []) \
        + (["no docstring"] if not ast.get_docstring(f) else [])


@pytest.mark.parametrize("package", PACKAGES)
def test_public_functions_have_types_and_a_docstring(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    missing = [f"{path.relative_to(ROOT)}:{f.lineno} {f.name}: {problem}"
               for path in files for f in _public_functions(ast.parse(path.read_text()))
               for problem in _problems(f)]
    assert not missing, "\n".join(missing)


def test_the_check_sees_a_bare_function() -> None:
    tree = ast.parse("def f(x):\n    return x\n\nclass C:\n    def g(self) -> int:\n        return 1\n")
    assert [_problems(f) for f in _public_functions(tree)] == [
        ["argument x without a type", "no return type", "no docstring"], ["no docstring"]]
