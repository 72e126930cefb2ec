"""What a filter costs a question, and what it keeps: PIAF dev (French), 1,518 passages.

Each question is searched (``HybridRetriever.search``, top 5, no answer step) without a
filter, then with filters applied inside each arm (rag/retrieval/filters.py):
- "date range, all in": a ``since``/``until`` range every passage is in (a Chroma ``where``
  on ``date_int`` that selects everything: the cost of the filter itself);
- "half the documents": the gold passage and every other passage of an even index (a
  ``source $in`` list of 760 paths);
- "10 documents": the gold passage and 9 others.
It prints p50/p95 milliseconds per question and recall@5 (the gold passage in the top 5);
inside a filter that keeps the gold passage, recall can only stay or rise.

Usage: python -m benchmarks.filters [N_QUESTIONS]  (the first run indexes the passages)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import PASSAGES, QUESTIONS, bench_settings
from rag.evaluate import chunk_owner, eval_service, read_jsonl
from rag.retrieval.filters import Selection


def selections(sources: list[str], gold: str, dates: list[int]) -> dict[str, Selection | None]:
    """The filters measured for one question whose answer is in ``gold``."""
    others = [s for s in sources if s != gold]
    return {
        "none": None,
        "date range, all in": Selection(None, min(dates), max(dates)),
        "half the documents": Selection(frozenset([gold, *others[::2]])),
        "10 documents": Selection(frozenset([gold, *others[:: max(1, len(others) // 9)][:9]])),
    }


def main() -> None:
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    service = eval_service(bench_settings(), PASSAGES)
    retriever = service.retriever(5)
    chunks = service.store.all_chunks()
    sources = sorted({c.meta["source"] for c in chunks})
    by_stem = {Path(s).stem: s for s in sources}
    dates = [c.meta["date_int"] for c in chunks]
    owner = chunk_owner(retriever)
    times: dict[str, list[float]] = {}
    hits: dict[str, int] = {}
    rows = read_jsonl(QUESTIONS["fr"])[:limit]
    retriever.search(rows[0]["question"])  # warm-up: model and Chroma segments loaded
    for row in rows:
        for name, selection in selections(sources, by_stem[row["passage_id"]], dates).items():
            start = time.perf_counter()
            found = retriever.search(row["question"], selection=selection)
            times.setdefault(name, []).append((time.perf_counter() - start) * 1000)
            top = {owner(n.node.node_id) for n in found.nodes}
            hits[name] = hits.get(name, 0) + (row["passage_id"] in top)
    print("| filter | questions | p50 ms | p95 ms | recall@5 |\n|---|---|---|---|---|")
    for name, spent in times.items():
        p95 = statistics.quantiles(spent, n=20)[-1]
        recall = hits[name] / len(rows)
        print(
            f"| {name} | {len(rows)} | {statistics.median(spent):.0f} | {p95:.0f} | {recall:.3f} |"
        )


if __name__ == "__main__":
    main()
