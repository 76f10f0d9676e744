"""The package reads data -> model -> engine -> scoring -> search -> export -> analysis -> pipeline -> cli:
a stage imports only from the stages before it, and no module imports another's private names."""

from __future__ import annotations

import ast

from helpers import REPO_ROOT

ORDER = ["errors", "data", "model", "engine", "scoring", "search", "export", "analysis", "inputs", "pipeline", "cli",
         "__main__"]


def _imports():
    package = REPO_ROOT / "layershear"
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("layershear."):
                yield module, node.module, [a.name for a in node.names]


def _stage(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_every_module_belongs_to_a_stage():
    assert {_stage(m) for m, _, _ in _imports()} - {""} <= set(ORDER)


def test_stages_import_only_earlier_stages():
    upward = [(m, target) for m, target, _ in _imports()
              if _stage(m) in ORDER and ORDER.index(_stage(target)) > ORDER.index(_stage(m))]
    assert upward == []


def test_no_module_imports_private_names_of_another():
    private = [(m, target, name) for m, target, names in _imports() for name in names
               if name.startswith("_") and not name.startswith("__") and target != m]
    assert private == []


def test_search_does_not_import_analysis():
    assert not [t for m, t, _ in _imports() if _stage(m) == "search" and _stage(t) == "analysis"]
