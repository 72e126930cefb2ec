"""Retrieval quality on PIAF dev, French and English questions: dense, BM25, hybrid.

"dense" fuses the chunk-vector and sentence-vector rankings; "hybrid" adds BM25 weighted by
its coverage of the question (rag/retrieve.py). The raw per-question rankings are saved to
benchmarks/out/rankings.json so fusion settings can be compared without re-embedding.

Usage: python -m benchmarks.retrieval  (the first run indexes the 1,518 passages)
"""

from __future__ import annotations

import json

from benchmarks.common import OUT, PASSAGES, QUESTIONS, bench_settings
from rag.evaluate import chunk_owner, eval_service, passage_ranking, read_jsonl, score

CUTOFFS = [1, 3, 5, 10]
MODES = ["dense", "bm25", "hybrid"]


def dump_rankings(retriever, questions: dict[str, list[dict]]) -> None:
    """Every arm's raw ranking per question (passage ids), for offline fusion studies."""
    owner = chunk_owner(retriever)
    dump = {}
    for lang, rows in questions.items():
        dump[lang] = []
        for row in rows:
            _, arms, lex = retriever.rankings(row["question"])
            dump[lang].append(
                {
                    "gold": row["passage_id"],
                    "coverage": lex.coverage,
                    "arms": [[owner(cid) for cid in arm.ids] for arm in arms],
                }
            )
    (OUT / "rankings.json").write_text(json.dumps(dump))


def main() -> None:
    retriever = eval_service(bench_settings(), PASSAGES).retriever()
    questions = {lang: read_jsonl(path) for lang, path in QUESTIONS.items()}
    print("| questions | mode | n | recall@1 | recall@3 | recall@5 | recall@10 | MRR@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for lang, rows in questions.items():
        gold = [row["passage_id"] for row in rows]
        for mode in MODES:
            ranks = [passage_ranking(retriever, row["question"], mode) for row in rows]
            s = score(ranks, gold, CUTOFFS)
            cells = " | ".join(f"{s[f'recall@{k}']:.3f}" for k in CUTOFFS)
            print(f"| {lang} | {mode} | {len(rows)} | {cells} | {s['mrr@10']:.3f} |")
    dump_rankings(retriever, questions)


if __name__ == "__main__":
    main()
