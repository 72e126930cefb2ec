"""`rag ask` latency, warm, on the PIAF index: p50 / p95 over dev questions.

Warm means the process has loaded the embedder, Chroma and the BM25 index once (as the app
and any long-running caller do); each timed call is a full ``RagService.ask`` (retrieval,
sentence scoring, citation verification).

Usage: python -m benchmarks.ask_latency [--n 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import PASSAGES, QUESTIONS, bench_settings
from rag.evaluate import eval_service, read_jsonl


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    service = eval_service(bench_settings(), PASSAGES)
    questions = [r["question"] for r in read_jsonl(QUESTIONS["en"])]
    questions += [r["question"] for r in read_jsonl(QUESTIONS["fr"])]
    questions = questions[: args.n]
    for q in questions[:5]:
        service.ask(q)
    timings = []
    for q in questions:
        started = time.perf_counter()
        service.ask(q)
        timings.append((time.perf_counter() - started) * 1000)
    print(
        f"rag ask warm latency over {len(timings)} PIAF questions "
        f"({service.store.count()} chunks): p50 {np.percentile(timings, 50):.0f} ms, "
        f"p95 {np.percentile(timings, 95):.0f} ms"
    )


if __name__ == "__main__":
    main()
