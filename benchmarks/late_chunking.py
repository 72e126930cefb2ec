"""Late chunking against separately embedded sentences, on PIAF dev (issue 11).

Two indexes of the 1,518 PIAF passages, built with the same embedder and differing only in
how sentence vectors are made (``RAG_SENTENCE_VECTORS``): ``late`` pools each sentence's
token states from its chunk's pass, ``separate`` embeds every sentence again on its own.
For each: ingest time (chunks/s), hybrid recall@5 for French and English questions, and the
answer-bearing rate of the extractive answer: how often the quoted sentence(s), chosen with
no abstention, contain one of the question's gold ``answers`` (after case, space and
quote-mark folding).

Usage: python -m benchmarks.late_chunking [--modes late,separate]  (indexes kept in benchmarks/out)
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import OUT, PASSAGES, QUESTIONS, ROOT
from rag.answer import extractive_answer
from rag.chat import normalise
from rag.config import Settings
from rag.evaluate import eval_service, passage_rankings, read_jsonl, score

EN_MORE = ROOT / "benchmarks" / "data" / "piaf_dev_en_more.jsonl"


def bearing(answer_quotes: list[str], gold: list[str]) -> bool:
    """Whether a quoted sentence contains a gold answer."""
    quotes = [normalise(q) for q in answer_quotes]
    return any(normalise(g) in q for g in gold for q in quotes)


def measure(mode: str, question_sets: dict[str, list[dict]]) -> dict[str, float]:
    data_dir = OUT / f"late-{mode}"
    settings = Settings(data_dir=data_dir, llm_model=None, sentence_vectors=mode)
    started = time.perf_counter()
    service = eval_service(settings, PASSAGES)
    built_s = time.perf_counter() - started
    retriever = service.retriever()
    row: dict[str, float] = {"chunks": service.store.count(), "build_s": round(built_s, 1)}
    for lang, rows in question_sets.items():
        ranked = [passage_rankings(retriever, r["question"])["hybrid"] for r in rows]
        row[f"{lang}_recall@5"] = score(ranked, [r["passage_id"] for r in rows], [5])["recall@5"]
        hits = 0
        for r in rows:
            retrieval = retriever.search(r["question"])
            answer = extractive_answer(r["question"], retrieval, retriever.lexical.idf, -1.0)
            hits += bearing([c.quote for c in answer.citations], r["answers"])
        row[f"{lang}_bearing"] = hits / len(rows)
        row[f"{lang}_n"] = len(rows)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modes", default="late,separate")
    args = parser.parse_args()
    sets = {
        "fr": read_jsonl(QUESTIONS["fr"]),
        "en": read_jsonl(QUESTIONS["en"]) + (read_jsonl(EN_MORE) if EN_MORE.exists() else []),
    }
    for mode in args.modes.split(","):
        print(mode, measure(mode, sets), flush=True)


if __name__ == "__main__":
    main()
