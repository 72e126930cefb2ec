"""Calibrate the extractive answer's abstention threshold.

Answerable questions: PIAF dev (French and English) over the PIAF index. Unanswerable: the
off-corpus questions in benchmarks/data/off_corpus_questions.jsonl, asked of the same index.
For every question we record the evidence score the answer step computes, then print the
trade-off (answered share of PIAF questions vs wrongly answered share of off-corpus ones)
for a range of thresholds, and the threshold that maximises the mean of three rates: French
questions answered, English questions answered, off-corpus questions refused (each language
counts as much as the other, though the English set is 18 times smaller).

Usage: python benchmarks/calibrate_abstain.py
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import OFF_CORPUS, PASSAGES, QUESTIONS, bench_settings
from rag.answer import evidence
from rag.evaluate import eval_service, read_jsonl


def scores_for(questions: list[str], service) -> np.ndarray:
    retriever = service.retriever()
    idf = retriever.lexical.idf
    return np.asarray([evidence(q, retriever.search(q), idf) for q in questions])


def main() -> None:
    service = eval_service(bench_settings(), PASSAGES)
    pos = {
        lang: scores_for([r["question"] for r in read_jsonl(p)], service)
        for lang, p in QUESTIONS.items()
    }
    off_rows = read_jsonl(OFF_CORPUS)
    neg = scores_for([r["question"] for r in off_rows], service)
    print("| threshold | PIAF FR answered | PIAF EN answered | off-corpus answered (wrong) |")
    print("|---|---|---|---|")
    best = (0.0, 0.0)
    for t in np.arange(0.70, 0.90, 0.01):
        fr, en = (float(np.mean(pos[k] >= t)) for k in ("fr", "en"))
        wrong = float(np.mean(neg >= t))
        balanced = (fr + en + (1 - wrong)) / 3
        best = max(best, (balanced, round(float(t), 2)))
        print(f"| {t:.2f} | {fr:.3f} | {en:.3f} | {wrong:.3f} |")
    print(
        f"\nbest mean(FR answered, EN answered, off-corpus refused) = {best[0]:.3f} "
        f"at threshold {best[1]:.2f}"
    )
    for lang, values in pos.items():
        print(
            f"PIAF {lang}: evidence p10/p50/p90 = "
            f"{np.percentile(values, 10):.3f}/{np.median(values):.3f}/"
            f"{np.percentile(values, 90):.3f}"
        )
    print(
        f"off-corpus: p10/p50/p90 = {np.percentile(neg, 10):.3f}/{np.median(neg):.3f}/"
        f"{np.percentile(neg, 90):.3f}; max {neg.max():.3f} "
        f"({off_rows[int(neg.argmax())]['question']})"
    )


if __name__ == "__main__":
    main()
