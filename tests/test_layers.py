"""The package's shape, checked from its source (no import, so it runs in well under a second).

Modules only import modules of their own layer or below, in the pipeline order the README's
"How it works" section lists; and no function grows past ``MAX_FUNCTION_LINES``.
"""

from __future__ import annotations

import ast
from pathlib import Path

RAG = Path(__file__).resolve().parent.parent / "rag"
MAX_FUNCTION_LINES = 60

# Lowest first. A module may import its own layer and the ones before it, never a later one.
LAYERS: list[set[str]] = [
    {"errors", "config"},
    {"documents.formats", "documents.citations"},
    {
        "datadir",
        "index.chroma",
        "index.store",
        "index.lexical",
        "embedding.tokenizer",
        "embedding.onnx_e5",
        "embedding.embedders",
        "accounts.db",
        "accounts.users",
        "accounts.conversations",
    },
    {"ingest.pipeline", "answering.answer_type", "answering.verifier"},
    {"retrieval.hybrid"},
    {"answering.extractive", "answering.decision", "answering.llm", "answering.generate"},
    {"service"},
    {"evaluate"},
    {"cli", "api", "ingest.watch", "ui.render"},
]
LAYER = {module: n for n, modules in enumerate(LAYERS) for module in modules}


def _modules() -> list[Path]:
    return sorted(p for p in RAG.rglob("*.py") if p.stem != "__init__")


def _name(path: Path) -> str:
    """``rag/index/store.py`` -> ``index.store``."""
    return ".".join(path.relative_to(RAG).with_suffix("").parts)


def _module(dotted: str) -> str:
    """``rag.index.store`` -> ``index.store``; a package import names its folder."""
    return dotted.removeprefix("rag.")


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
    unplaced = [_name(p) for p in _modules() if _name(p) not in LAYER]
    assert not unplaced, f"place these modules in a layer of tests/test_layers.py: {unplaced}"


def test_imports_only_point_down_the_pipeline() -> None:
    wrong = []
    for path in _modules():
        for line, module in _rag_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if LAYER.get(module, -1) > LAYER.get(_name(path), len(LAYERS)):
                where = path.relative_to(RAG.parent)
                wrong.append(f"{where}:{line} imports rag.{module} (a later layer)")
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
