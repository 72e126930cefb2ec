"""Retrieval and answer evaluation on PIAF-format files (``rag eval``).

The passages are materialised as one text file each (title on the first line, as in our
news corpus) under the data dir and ingested into their own collection, so evaluation runs
the real ingest and retrieval code and is incremental: a second run embeds nothing.

Answer-level evaluation asks each question twice: as is, and as a *near-miss*, with every
passage that contains one of its gold answers (and the gold passage) taken out of
retrieval, so the topic is still in the corpus but the fact is not; off-corpus questions
are asked as they are. The definitions of the figures are in docs/answer-decision.md.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rag.config import Settings
from rag.errors import RagError
from rag.retrieval.fusion import hybrid
from rag.retrieval.hybrid import CHUNK_CANDIDATES, HybridRetriever
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
    settings: Settings,
    passages: Path,
    questions: Path,
    cutoffs: list[int],
    mode: Mode,
    off_corpus: Path | None = None,
    answers: bool = True,
) -> dict[str, float | int]:
    """Index the passages (reused while unchanged), measure retrieval on the questions and,
    with ``answers``, the answer-level figures (every file is checked before any work)."""
    for path in (passages, questions, off_corpus):
        if path is not None and not path.is_file():
            raise RagError(f"no such file: {path}")
    rows = read_jsonl(questions)
    if not rows:
        raise RagError(f"{questions}: no questions")
    off = read_jsonl(off_corpus) if off_corpus else []
    service = eval_service(settings, passages)
    retriever = service.retriever()
    rankings = [passage_rankings(retriever, row["question"])[mode] for row in rows]
    result = {"n": len(rows), **score(rankings, [row["passage_id"] for row in rows], cutoffs)}
    if answers:
        figures = answer_metrics(AnswerEvaluation(service, passages).run(rows, off))
        result.update({key: value for key, value in figures.items() if key != "n"})
    return result


# --- Answer-level evaluation -------------------------------------------------------------


def fold_text(text: str) -> str:
    """Text as gold answers are looked for: NFKC, folded case, straight apostrophes,
    single spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold().replace("’", "'")
    return " ".join(folded.split())


def bears_answer(quotes: list[str], answers: list[str]) -> bool:
    """Whether the cited quotes (one of them, or all of them read in order) contain a gold
    answer; an answer spanning two quoted sentences counts."""
    wanted = [fold_text(a) for a in answers if a.strip()]
    texts = [fold_text(q) for q in quotes]
    texts.append(" ".join(texts))
    return any(a in t for a in wanted for t in texts)


@dataclass(frozen=True)
class Outcome:
    """One question asked one way: was it answered, did a quote hold a gold answer, and the
    judge's confidence and features (kept for fitting the confidence model)."""

    id: str
    lang: str
    kind: str  # "direct" | "near_miss" | "off_corpus"
    answered: bool
    bearing: bool
    confidence: float
    features: dict[str, float]


class AnswerEvaluation:
    """Asks PIAF-format questions of their passages' index, as is and as near-misses."""

    def __init__(self, service: RagService, passages: Path) -> None:
        self.service = service
        self.passage_text = {
            row["passage_id"]: fold_text(f"{row.get('title', '')}\n{row['text']}")
            for row in read_jsonl(passages)
        }
        self.chunks: dict[str, list[str]] = {}
        for chunk in service.store.all_chunks():
            self.chunks.setdefault(Path(chunk.meta["source"]).stem, []).append(chunk.id)

    def answer_chunks(self, row: dict) -> set[str]:
        """Chunks of the gold passage and of every passage containing a gold answer."""
        wanted = [fold_text(a) for a in row.get("answers", []) if a.strip()]
        holding = {pid for pid, text in self.passage_text.items() if any(a in text for a in wanted)}
        holding.add(row["passage_id"])
        return {cid for pid in holding for cid in self.chunks.get(pid, [])}

    def outcome(self, row: dict, kind: str, exclude: set[str] | frozenset = frozenset()) -> Outcome:
        found = self.service.evidence(row["question"], exclude=exclude)
        answer = found.extractive
        quotes = [c.quote for c in answer.citations]
        return Outcome(
            str(row.get("id", row["question"])),
            str(row.get("lang", "")),
            kind,
            not answer.abstained,
            not answer.abstained and bears_answer(quotes, row.get("answers", [])),
            float(answer.confidence or 0.0),
            found.judgement.features,
        )

    def run(self, questions: list[dict], off_corpus: list[dict]) -> list[Outcome]:
        """Every question as is and as a near-miss, then every off-corpus question."""
        outcomes = []
        for row in tqdm(questions, desc="Asking", unit="question"):
            outcomes.append(self.outcome(row, "direct"))
            outcomes.append(self.outcome(row, "near_miss", self.answer_chunks(row)))
        outcomes += [self.outcome(row, "off_corpus") for row in off_corpus]
        return outcomes


def auc(positive: list[float], negative: list[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    if not positive or not negative:
        return float("nan")
    neg = np.sort(np.asarray(negative))
    pos = np.asarray(positive)
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))


def answer_metrics(outcomes: list[Outcome]) -> dict[str, float | int]:
    """The answer-level figures (defined in docs/answer-decision.md)."""
    direct = [o for o in outcomes if o.kind == "direct"]
    near = [o for o in outcomes if o.kind == "near_miss"]
    off = [o for o in outcomes if o.kind == "off_corpus"]
    answered = [o for o in direct if o.answered]

    def share(items: list[Outcome], hit: Callable[[Outcome], bool]) -> float:
        return sum(map(hit, items)) / len(items) if items else float("nan")

    return {
        "n": len(direct),
        "answered": share(direct, lambda o: o.answered),
        "answer_bearing": share(answered, lambda o: o.bearing),
        "near_miss_answered": share(near, lambda o: o.answered),
        "off_corpus_answered": share(off, lambda o: o.answered),
        "auc": auc([o.confidence for o in direct], [o.confidence for o in near]),
    }
