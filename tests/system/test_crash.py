"""SIGKILLed ingests re-run to exactly the state of a clean ingest.

Five kills at random moments of an ingest (seeded, so a failure can be replayed with the
printed seed), each followed by a re-run that must end with the clean ingest's chunk ids,
file records and a BM25 index matching Chroma.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.service import RagService
from tests.conftest import ROOT, make_settings, write_piaf_corpus
from tests.procs import child_env

N_PASSAGES = 160
KILLS = 5
SEED = int(os.environ.get("RAG_CRASH_SEED", "20261125"))


def _state(data_dir: Path) -> tuple[list[str], list[str], set[str]]:
    service = RagService(make_settings(data_dir))
    ids = [chunk.id for chunk in service.store.all_chunks()]
    return ids, service.lexical().ids, set(service.store.file_records())


def _ingest_process(corpus: Path, data_dir: Path) -> subprocess.Popen:
    env = child_env(data_dir, RAG_EMBED_BATCH_SIZE="8")
    return subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "ingest", str(corpus)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_after(corpus: Path, data_dir: Path, seconds: float) -> float:
    """Start an ingest and SIGKILL it after ``seconds``; returns when it was killed.

    An ingest that finished first (the machine got faster than during the clean run) is
    thrown away and started again with half the delay.
    """
    while True:
        victim = _ingest_process(corpus, data_dir)
        time.sleep(seconds)
        if victim.poll() is None:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            return seconds
        shutil.rmtree(data_dir)
        seconds /= 2


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_matches_clean_ingest(tmp_path: Path) -> None:
    corpus = write_piaf_corpus(tmp_path / "piaf", N_PASSAGES)
    started = time.monotonic()
    clean = _ingest_process(corpus, tmp_path / "clean")
    assert clean.wait(timeout=1800) == 0, clean.stderr.read()
    duration = time.monotonic() - started
    clean_ids, clean_lexical, clean_files = _state(tmp_path / "clean")
    assert len(clean_files) == N_PASSAGES
    assert sorted(clean_lexical) == sorted(clean_ids)

    rng = random.Random(SEED)
    for kill in range(KILLS):
        crashed = tmp_path / f"crashed-{kill}"
        at = _kill_after(corpus, crashed, rng.uniform(0.05, 0.9) * duration)
        where = f"seed {SEED}, kill {kill + 1} at {at:.1f} s of a {duration:.1f} s ingest"
        # Only the file records: opening the BM25 index here would repair it before the re-run.
        partial_files = (
            set(RagService(make_settings(crashed)).store.file_records())
            if (crashed / "rag-data.json").exists()
            else set()
        )

        rerun = _ingest_process(corpus, crashed)
        out, err = rerun.communicate(timeout=1800)
        assert rerun.returncode == 0, f"{where}: {err}"
        assert f"{N_PASSAGES - len(partial_files)} added" in out, where

        ids, lexical_ids, files = _state(crashed)
        assert len(ids) == len(set(ids)), f"duplicate chunk ids ({where})"
        assert sorted(ids) == sorted(clean_ids), where
        assert files == clean_files, where
        assert sorted(lexical_ids) == sorted(ids), f"BM25 index differs from Chroma ({where})"
