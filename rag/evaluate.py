"""Retrieval and answer evaluation on PIAF-format files (``rag eval``).

The passages are materialised as one text file each (title on the first line, as in our
news corpus) under the data dir and ingested into their own collection, so evaluation runs
the real ingest and retrieval code and is incremental: a second run embeds nothing.

Answer-level figures (definitions also in the README, "Abstention"):
- ``answered``: share of the questions that get an answer rather than the refusal;
- ``answer_bearing``: share of the questions answered with a cited quote that contains one
  of the gold ``answers`` (both compared after ``rag.chat.normalise``: case, whitespace and
  quote marks);
- ``near_miss_answered``: share answered of the same questions asked with every chunk whose
  text contains a gold answer left out of retrieval (the topic is still indexed, the fact is
  not), so every answer is a wrong one;
- ``off_corpus_answered``: share answered of questions the corpus cannot answer
  (``--off-corpus``), asked of the same index;
- ``auc``: probability that a question scores a higher confidence than its near-miss
  version (ties count half), i.e. how well the answer decision separates the two.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.answer import Answer
from rag.chat import normalise
from rag.config import Settings
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
                    raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
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
        ids, _, metas = retriever.store.all_chunks()
        cache = {cid: Path(m["source"]).stem for cid, m in zip(ids, metas)}
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


@dataclass
class Outcome:
    """One question's answer, as the answer-level figures count it."""

    answered: bool
    bearing: bool
    confidence: float


def bears(answer: Answer, gold: Collection[str]) -> bool:
    """Whether an answer quotes one of the gold answers (after ``normalise``)."""
    wanted = [normalise(g) for g in gold if normalise(g)]
    return not answer.abstained and any(
        g in normalise(c.quote) for c in answer.citations for g in wanted
    )


class GoldChunks:
    """Chunk ids whose text contains a given answer: what a near-miss question leaves out."""

    def __init__(self, retriever: HybridRetriever) -> None:
        ids, texts, _ = retriever.store.all_chunks()
        self.texts = {cid: normalise(text) for cid, text in zip(ids, texts)}

    def holding(self, answers: Collection[str]) -> set[str]:
        wanted = [normalise(a) for a in answers if normalise(a)]
        return {cid for cid, text in self.texts.items() if any(a in text for a in wanted)}


def outcome(service: RagService, question: str, gold: Collection[str] = (), exclude=()) -> Outcome:
    """Ask ``question`` (leaving out the chunks in ``exclude``) and score its answer."""
    answer = service.retrieve(question, exclude=exclude)[1]
    return Outcome(not answer.abstained, bears(answer, gold), answer.confidence)


def auc(positive: list[float], negative: list[float]) -> float:
    """Area under the ROC curve of a score separating ``positive`` from ``negative``."""
    if not positive or not negative:
        return float("nan")
    pos, neg = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def answer_outcomes(
    service: RagService, rows: list[dict], off_corpus: list[dict]
) -> dict[str, list[Outcome]]:
    """Each question answered as asked, as its near-miss version, and the off-corpus ones."""
    gold = GoldChunks(service.retriever())
    return {
        "direct": [outcome(service, r["question"], r["answers"]) for r in rows],
        "near_miss": [
            outcome(service, r["question"], exclude=gold.holding(r["answers"])) for r in rows
        ],
        "off_corpus": [outcome(service, r["question"]) for r in off_corpus],
    }


def answer_figures(outcomes: dict[str, list[Outcome]]) -> dict[str, float]:
    """The answer-level figures (module docstring) from ``answer_outcomes``."""
    direct, near, off = outcomes["direct"], outcomes["near_miss"], outcomes["off_corpus"]
    figures = {
        "answered": float(np.mean([o.answered for o in direct])),
        "answer_bearing": float(np.mean([o.answered and o.bearing for o in direct])),
        "near_miss_answered": float(np.mean([o.answered for o in near])),
        "auc": auc([o.confidence for o in direct], [o.confidence for o in near]),
    }
    if off:
        figures["off_corpus_answered"] = float(np.mean([o.answered for o in off]))
    return figures


def evaluate_files(
    settings: Settings,
    passages: Path,
    questions: Path,
    cutoffs: list[int],
    mode: Mode,
    off_corpus: Path | None = None,
) -> dict[str, float | int]:
    """Index the passages (reused while unchanged), measure retrieval and answers."""
    for path in (passages, questions, *([off_corpus] if off_corpus else [])):
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
    rows = read_jsonl(questions)
    if not rows:
        raise ValueError(f"{questions}: no questions")
    service = eval_service(settings, passages)
    retriever = service.retriever()
    rankings = [passage_rankings(retriever, row["question"])[mode] for row in rows]
    retrieval = score(rankings, [row["passage_id"] for row in rows], cutoffs)
    outcomes = answer_outcomes(service, rows, read_jsonl(off_corpus) if off_corpus else [])
    return {"n": len(rows), **retrieval, **answer_figures(outcomes)}
