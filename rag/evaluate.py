"""Retrieval evaluation on PIAF-format files (``rag eval``).

The passages are materialised as one text file each (title on the first line, as in our
news corpus) under the data dir and ingested into their own collection, so evaluation runs
the real ingest and retrieval code and is incremental: a second run embeds nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from rag.config import Settings
from rag.errors import RagError
from rag.retrieve import CHUNK_CANDIDATES, HybridRetriever, hybrid
from rag.service import RagService

Mode = str  # "hybrid" | "dense" | "bm25"


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per non-blank line; a clear error names the bad line."""
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise RagError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    return rows


def materialise_passages(passages_file: Path, folder: Path) -> None:
    """Write each passage to ``<folder>/<passage_id>.txt`` (only files that changed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in read_jsonl(passages_file):
        path = folder / f"{row['passage_id']}.txt"
        body = f"{row.get('title', '')}\n{row['text']}\n"
        if not path.exists() or path.read_text(encoding="utf-8") != body:
            path.write_text(body, encoding="utf-8")


def eval_service(settings: Settings, passages_file: Path) -> RagService:
    """A service over the passages' own collection, ingested (incrementally) if needed."""
    digest = hashlib.sha256(passages_file.read_bytes()).hexdigest()[:12]
    service = RagService(settings, collection=f"eval-{digest}")
    service.store  # noqa: B018 - opens (and vets) the data dir before we write into it
    folder = settings.data_dir / "eval" / digest
    materialise_passages(passages_file, folder)
    service.ingest([folder], show_progress=True)
    return service


MODES = ("dense", "bm25", "hybrid")


def passage_rankings(retriever: HybridRetriever, question: str) -> dict[Mode, list[str]]:
    """Passage ids (file stems) in rank order for each mode, from one set of searches."""
    _, dense, lex = retriever.rankings(question)
    ranked = {
        "dense": dense.ids,
        "bm25": lex.ids,
        "hybrid": [cid for cid, _ in hybrid(dense, lex, CHUNK_CANDIDATES)],
    }
    owner = chunk_owner(retriever)
    return {mode: list(dict.fromkeys(map(owner, ids))) for mode, ids in ranked.items()}


def chunk_owner(retriever: HybridRetriever) -> Callable[[str], str]:
    """Map chunk id -> passage id (the source file's stem), cached on the retriever."""
    cache = getattr(retriever, "_owner_cache", None)
    if cache is None:
        cache = {c.id: Path(c.meta["source"]).stem for c in retriever.store.all_chunks()}
        retriever._owner_cache = cache  # type: ignore[attr-defined]
    return cache.__getitem__


def score(rankings: list[list[str]], gold: list[str], cutoffs: list[int]) -> dict[str, float]:
    """recall@k for each cut-off and MRR@10."""
    n = len(gold)
    result: dict[str, float] = {}
    for k in cutoffs:
        result[f"recall@{k}"] = sum(g in r[:k] for r, g in zip(rankings, gold)) / n
    result["mrr@10"] = (
        sum(1.0 / (r.index(g) + 1) if g in r[:10] else 0.0 for r, g in zip(rankings, gold)) / n
    )
    return result


def evaluate_files(
    settings: Settings, passages: Path, questions: Path, cutoffs: list[int], mode: Mode
) -> dict[str, float | int]:
    """Index the passages (reused while unchanged) and measure retrieval on the questions."""
    for path in (passages, questions):
        if not path.is_file():
            raise RagError(f"no such file: {path}")
    rows = read_jsonl(questions)
    if not rows:
        raise RagError(f"{questions}: no questions")
    retriever = eval_service(settings, passages).retriever()
    rankings = [passage_rankings(retriever, row["question"])[mode] for row in rows]
    return {"n": len(rows), **score(rankings, [row["passage_id"] for row in rows], cutoffs)}
