"""Shared set-up for the benchmark scripts: the PIAF paths and a benchmark data dir."""

from __future__ import annotations

import os
from pathlib import Path

from rag.config import Settings

ROOT = Path(__file__).resolve().parent.parent
# All of PIAF v1.1 ships in the repository (MIT / CC BY-SA, see its README.md); PIAF_DIR points
# the benchmarks at another copy.
PIAF = Path(os.environ.get("PIAF_DIR", ROOT / "benchmarks" / "data" / "piaf"))
PASSAGES = PIAF / "passages.jsonl"
QUESTIONS = {"fr": PIAF / "questions_dev.jsonl", "en": PIAF / "questions_dev_en.jsonl"}
OFF_CORPUS = ROOT / "benchmarks" / "data" / "off_corpus_questions.jsonl"
OUT = ROOT / "benchmarks" / "out"


def bench_settings() -> Settings:
    """Benchmarks keep their indexes in benchmarks/out/data unless RAG_DATA_DIR says else."""
    data_dir = Path(os.environ.get("RAG_DATA_DIR", OUT / "data"))
    return Settings(data_dir=data_dir, llm_model=None)
