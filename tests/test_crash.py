"""A SIGKILLed ingest re-runs to exactly the state of a clean ingest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.service import RagService
from tests.conftest import ROOT, make_settings, write_piaf_corpus

N_PASSAGES = 240


def _state(data_dir: Path) -> tuple[list[str], list[str], set[str]]:
    service = RagService(make_settings(data_dir))
    ids = service.store.all_chunks()[0]
    return ids, service.lexical().ids, set(service.store.file_records())


def _ingest_process(corpus: Path, data_dir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "OPENAI_"))}
    env.update(RAG_DATA_DIR=str(data_dir), RAG_EMBED_BATCH_SIZE="8")
    return subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "ingest", str(corpus)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_mid_ingest_then_rerun_matches_clean_ingest(tmp_path: Path) -> None:
    corpus = write_piaf_corpus(tmp_path / "piaf", N_PASSAGES)

    started = time.monotonic()
    clean = _ingest_process(corpus, tmp_path / "clean")
    assert clean.wait(timeout=1800) == 0, clean.stderr.read()
    duration = time.monotonic() - started
    clean_ids, clean_lexical, clean_files = _state(tmp_path / "clean")
    assert len(clean_files) == N_PASSAGES

    crashed = tmp_path / "crashed"
    victim = _ingest_process(corpus, crashed)
    time.sleep(duration * 0.6)
    assert victim.poll() is None, "the ingest finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    _, _, partial_files = _state(crashed)
    assert len(partial_files) < N_PASSAGES, "nothing was left to redo after the kill"

    rerun = _ingest_process(corpus, crashed)
    out, err = rerun.communicate(timeout=1800)
    assert rerun.returncode == 0, err
    assert f"{N_PASSAGES - len(partial_files)} added" in out

    ids, lexical_ids, files = _state(crashed)
    assert len(ids) == len(set(ids)), "duplicate chunk ids"
    assert sorted(ids) == sorted(clean_ids)
    assert files == clean_files
    assert sorted(lexical_ids) == sorted(ids) == sorted(clean_lexical)
