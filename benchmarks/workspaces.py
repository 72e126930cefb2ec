"""Workspaces at scale: ``ask`` latency with 20 workspaces in one collection over CIDRE 10 %.

``build`` takes the CIDRE 10 % set of benchmarks/scale.py (whole novels, same order), cuts
each novel into parts at paragraph breaks so there are at least ``PARTS`` files, and indexes
file i into workspace ``ws-(i mod 20)`` of one Chroma collection (the design of
docs/workspaces.md), in a data dir under benchmarks/out (an interrupted build resumes: the
ingest is incremental). ``measure`` then times warm ``RagService.ask`` (the path of ``rag
ask`` without the process start) over benchmarks/data/cidre_questions.txt, each question
once to warm up and then three times: unscoped (every workspace: the single-workspace case,
no filter), scoped to one workspace (rotating over the 20: the dense ``where`` and the BM25
mask of ``rag.retrieval.scope``), and scoped to the default workspace with 20 others to
exclude (``$nin``). It prints p50/p95 per case and appends one JSON line to
benchmarks/results/workspaces.jsonl.

``RAG_SENTENCE_VECTORS=late`` builds the index in about half the time: the question path,
the number of records and so the latency are the same (only how the sentence vectors were
computed differs, which changes recall, not speed).

Usage: RAG_CIDRE_DIR=../shared/corpora/cidre python -m benchmarks.workspaces build
       RAG_CIDRE_DIR=../shared/corpora/cidre python -m benchmarks.workspaces measure
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import time
from datetime import date
from pathlib import Path

import numpy as np

from benchmarks.common import OUT, ROOT
from benchmarks.scale import QUESTIONS, select_novels
from rag.accounts.workspaces import Workspaces
from rag.config import DEFAULT_WORKSPACE, Settings
from rag.service import RagService

PERCENT = 10.0
WORKSPACES = 20
# At least two files per workspace, so no workspace is one novel's only file.
PARTS = 2 * WORKSPACES
WORK = OUT / "workspaces-10"
RESULTS = ROOT / "benchmarks" / "results" / "workspaces.jsonl"


def settings() -> Settings:
    return Settings(data_dir=WORK / "data", llm_model=None)


def names() -> list[str]:
    return [f"ws-{i:02d}" for i in range(WORKSPACES)]


def split_novels(novels: list[Path], folder: Path) -> list[Path]:
    """Each novel cut into equal parts at paragraph breaks, ``PARTS`` files or more in all."""
    folder.mkdir(parents=True, exist_ok=True)
    per_novel = math.ceil(PARTS / len(novels))
    files = []
    for novel in novels:
        paragraphs = novel.read_text(encoding="utf-8").split("\n\n")
        size = math.ceil(len(paragraphs) / per_novel)
        for part in range(per_novel):
            path = folder / f"{novel.parent.name}_{novel.stem}_{part}.txt"
            if not path.exists():
                chunk = paragraphs[part * size : (part + 1) * size]
                path.write_text("\n\n".join(chunk), encoding="utf-8")
            files.append(path)
    return files


def build() -> None:
    files = split_novels(select_novels(PERCENT), WORK / "corpus")
    service = RagService(settings())
    service.ensure_data_dir()
    workspaces = Workspaces(service.settings)
    known = set(workspaces.names())
    for name in names():
        if name not in known:
            workspaces.add(name)
    for i, name in enumerate(names()):
        mine = [path for j, path in enumerate(files) if j % WORKSPACES == i]
        started = time.perf_counter()
        report = service.ingest(mine, show_progress=False, workspace=name)
        print(f"{name}: {report.summary()} in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"{len(files)} files, {service.store.count()} chunks in {WORKSPACES} workspaces")


def timed(service: RagService, questions: list[str], scopes: list) -> list[float]:
    """Milliseconds per ``ask``, question i in ``scopes[i % len(scopes)]``: each question
    once to warm up, then three timed rounds."""
    for i, question in enumerate(questions):
        service.ask(question, scope=scopes[i % len(scopes)])
    timings = []
    for _ in range(3):
        for i, question in enumerate(questions):
            started = time.perf_counter()
            service.ask(question, scope=scopes[i % len(scopes)])
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def figures(timings: list[float]) -> dict:
    return {
        "p50_ms": round(float(np.percentile(timings, 50)), 1),
        "p95_ms": round(float(np.percentile(timings, 95)), 1),
    }


def measure() -> dict:
    service = RagService(settings())
    questions = [q for q in QUESTIONS.read_text(encoding="utf-8").splitlines() if q.strip()]
    one = [service.scope([name]) for name in names()]
    cases = {
        "unscoped": timed(service, questions, [None]),
        "one_workspace": timed(service, questions, one),
        "default_workspace": timed(service, questions, [service.scope([DEFAULT_WORKSPACE])]),
    }
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    row = {
        "date": date.today().isoformat(),
        "commit": commit,
        "percent": PERCENT,
        "workspaces": WORKSPACES,
        "files": len(service.indexed_files()),
        "chunks": service.store.count(),
        **{case: figures(timings) for case, timings in cases.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")
    for case in cases:
        print(f"{case:18} ask p50 {row[case]['p50_ms']:7.1f} ms  p95 {row[case]['p95_ms']:7.1f} ms")
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["build", "measure"])
    args = parser.parse_args()
    build() if args.command == "build" else measure()


if __name__ == "__main__":
    main()
