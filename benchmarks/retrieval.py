"""Retrieval quality on PIAF dev, French and English questions: dense, BM25, hybrid.

"dense" adds each chunk's similarity and its best sentence's; "hybrid" fuses that ranking
with BM25, weighted by BM25's coverage of the question (rag/retrieval/hybrid.py).

Usage: python -m benchmarks.retrieval  (the first run indexes the 1,518 passages)
"""

from __future__ import annotations

from benchmarks.common import PASSAGES, QUESTIONS, bench_settings
from rag.evaluate import MODES, eval_service, passage_rankings, read_jsonl, score

CUTOFFS = [1, 3, 5, 10]


def main() -> None:
    retriever = eval_service(bench_settings(), PASSAGES).retriever()
    questions = {lang: read_jsonl(path) for lang, path in QUESTIONS.items()}
    print("| questions | mode | n | recall@1 | recall@3 | recall@5 | recall@10 | MRR@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for lang, rows in questions.items():
        gold = [row["passage_id"] for row in rows]
        ranked = [passage_rankings(retriever, row["question"]) for row in rows]
        for mode in MODES:
            s = score([r[mode] for r in ranked], gold, CUTOFFS)
            cells = " | ".join(f"{s[f'recall@{k}']:.3f}" for k in CUTOFFS)
            print(f"| {lang} | {mode} | {len(rows)} | {cells} | {s['mrr@10']:.3f} |")


if __name__ == "__main__":
    main()
