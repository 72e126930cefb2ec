"""Retrieval quality on PIAF dev, French and English questions: dense, BM25, hybrid.

Usage: python benchmarks/retrieval.py  (first run indexes the 1,518 passages, ~5 min)
"""

from __future__ import annotations

from benchmarks.common import PASSAGES, QUESTIONS, bench_settings
from rag.evaluate import eval_service, passage_ranking, read_jsonl, score

CUTOFFS = [1, 3, 5, 10]
MODES = ["dense", "bm25", "hybrid"]


def main() -> None:
    retriever = eval_service(bench_settings(), PASSAGES).retriever()
    print("| questions | mode | n | recall@1 | recall@3 | recall@5 | recall@10 | MRR@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for lang, path in QUESTIONS.items():
        rows = read_jsonl(path)
        gold = [row["passage_id"] for row in rows]
        for mode in MODES:
            ranks = [passage_ranking(retriever, row["question"], mode) for row in rows]
            s = score(ranks, gold, CUTOFFS)
            cells = " | ".join(f"{s[f'recall@{k}']:.3f}" for k in CUTOFFS)
            print(f"| {lang} | {mode} | {len(rows)} | {cells} | {s['mrr@10']:.3f} |")


if __name__ == "__main__":
    main()
