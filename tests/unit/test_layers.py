"""The package's shape, checked from its source (no import, so it runs in well under a second).

A folder contract: each folder of ``rag/`` (and each top-level module) sits in a layer, and a
module only imports modules of its own layer or below, in pipeline order (docs/architecture.md);
``SEPARATE`` names folders of one layer that must not import each other. No function grows
past ``MAX_FUNCTION_LINES``.
"""

from __future__ import annotations

import ast
from pathlib import Path

RAG = Path(__file__).resolve().parents[2] / "rag"
MAX_FUNCTION_LINES = 60

# Lowest first. A module may import its own layer and the ones before it, never a later one.
# An entry names a folder (all its modules) or a module; a module's own entry wins over its
# folder's (the watcher drives the whole service, so it sits above it).
LAYERS: list[set[str]] = [
    {"errors", "config", "text", "security"},
    {"documents", "datadir"},
    {"embedding", "index", "accounts"},
    {"ingest", "retrieval"},
    {"answering"},
    {"service"},
    {"evaluate"},
    {"cli", "api", "ui", "ingest.watch"},
]
LAYER = {unit: n for n, units in enumerate(LAYERS) for unit in units}
# (importer, imported) folders of the same layer that must stay apart: accounts and sign-in
# load no embedding model and open no index; retrieval reads the index's record shapes
# (rag/index/records.py), never the ingest's code, and the ingest never retrieves.
SEPARATE = {
    ("accounts", "embedding"),
    ("accounts", "index"),
    ("retrieval", "ingest"),
    ("ingest", "retrieval"),
}


def _modules() -> list[Path]:
    return sorted(p for p in RAG.rglob("*.py") if p.stem != "__init__")


def _name(path: Path) -> str:
    """``rag/index/store.py`` -> ``index.store``."""
    return ".".join(path.relative_to(RAG).with_suffix("").parts)


def _module(dotted: str) -> str:
    """``rag.index.store`` -> ``index.store``; a package import names its folder."""
    return dotted.removeprefix("rag.")


def _unit(module: str) -> str | None:
    """The layer entry that places ``module``: its own, else its folder's."""
    if module in LAYER:
        return module
    folder = module.split(".")[0]
    return folder if folder in LAYER else None


def _rag_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every ``rag.X`` import, type-checking and function-local ones too."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rag."):
            found.append((node.lineno, _module(node.module)))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, _module(alias.name))
                for alias in node.names
                if alias.name.startswith("rag.")
            ]
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = [_name(p) for p in _modules() if _unit(_name(p)) is None]
    assert not unplaced, f"place these modules in a layer of tests/unit/test_layers.py: {unplaced}"


def test_imports_only_point_down_the_pipeline() -> None:
    wrong = []
    for path in _modules():
        for line, module in _rag_imports(ast.parse(path.read_text(encoding="utf-8"))):
            importer, imported = _unit(_name(path)), _unit(module)
            where = path.relative_to(RAG.parent)
            if LAYER.get(imported, -1) > LAYER.get(importer, len(LAYERS)):
                wrong.append(f"{where}:{line} imports rag.{module} (a later layer)")
            elif (importer, imported) in SEPARATE:
                wrong.append(f"{where}:{line} imports rag.{module} ({imported} is off limits)")
    assert not wrong, "\n".join(wrong)


def test_no_function_is_longer_than_the_limit() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    where = path.relative_to(RAG.parent)
                    long.append(f"{where}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)
