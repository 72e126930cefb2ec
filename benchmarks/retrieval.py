"""Retrieval quality on PIAF dev, French and English questions: dense, BM25, hybrid.

"dense" adds each chunk's similarity and its best sentence's; "hybrid" fuses that ranking
with BM25, weighted by BM25's coverage of the question (rag/retrieve.py). English: the 33
questions of ``questions_dev_en.jsonl`` and the 567 of ``benchmarks/data/piaf_dev_en_more.jsonl``
(600 in all).

``--tune`` searches the fusion constants (RRF_K, LEXICAL_WEIGHT, COVERAGE_POWER) over a grid
on the same rankings and prints the settings whose worse language does best.

Usage: python -m benchmarks.retrieval [--tune]  (the first run indexes the 1,518 passages)
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from benchmarks.common import PASSAGES, QUESTIONS, ROOT, bench_settings
from rag import retrieve
from rag.evaluate import MODES, chunk_owner, eval_service, passage_rankings, read_jsonl, score

CUTOFFS = [1, 3, 5, 10]
EN_MORE = ROOT / "benchmarks" / "data" / "piaf_dev_en_more.jsonl"


def question_sets() -> dict[str, list[dict]]:
    en33 = read_jsonl(QUESTIONS["en"])
    return {
        "fr": read_jsonl(QUESTIONS["fr"]),
        "en (33)": en33,
        "en (600)": en33 + read_jsonl(EN_MORE),
    }


def report(retriever) -> None:
    print("| questions | mode | n | recall@1 | recall@3 | recall@5 | recall@10 | MRR@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for lang, rows in question_sets().items():
        gold = [row["passage_id"] for row in rows]
        ranked = [passage_rankings(retriever, row["question"]) for row in rows]
        for mode in MODES:
            s = score([r[mode] for r in ranked], gold, CUTOFFS)
            cells = " | ".join(f"{s[f'recall@{k}']:.3f}" for k in CUTOFFS)
            print(f"| {lang} | {mode} | {len(rows)} | {cells} | {s['mrr@10']:.3f} |")


def tune(retriever) -> None:
    """Grid over the fusion constants: recall@5 per language, hybrid and dense."""
    owner = chunk_owner(retriever)
    sets = {k: v for k, v in question_sets().items() if k != "en (33)"}
    arms = {
        lang: [(retriever.rankings(r["question"])[1:], r["passage_id"]) for r in rows]
        for lang, rows in sets.items()
    }

    def recall(lang: str) -> float:
        hits = [
            gold in list(dict.fromkeys(map(owner, (c for c, _ in retrieve.hybrid(d, lx, 50)))))[:5]
            for (d, lx), gold in arms[lang]
        ]
        return float(np.mean(hits))

    dense = {
        lang: float(np.mean([g in list(dict.fromkeys(map(owner, d.ids)))[:5] for (d, _), g in a]))
        for lang, a in arms.items()
    }
    print("dense recall@5:", dense)
    results = []
    for k, weight, power in itertools.product(
        (2, 5, 10, 20, 60), (0.25, 0.5, 0.75, 1.0, 1.5), (1.0, 2.0, 3.0, 4.0)
    ):
        retrieve.RRF_K, retrieve.LEXICAL_WEIGHT, retrieve.COVERAGE_POWER = k, weight, power
        got = {lang: recall(lang) for lang in arms}
        results.append((min(got.values()), got, (k, weight, power)))
    for _worst, got, params in sorted(results, key=lambda r: -r[0])[:10]:
        print(f"RRF_K, LEXICAL_WEIGHT, COVERAGE_POWER = {params}: {got}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tune", action="store_true")
    args = parser.parse_args()
    retriever = eval_service(bench_settings(), PASSAGES).retriever()
    (tune if args.tune else report)(retriever)


if __name__ == "__main__":
    main()
