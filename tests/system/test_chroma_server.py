"""Server mode: the same ingest and ask contract against a real `chroma run` process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.index.store import StoreError
from rag.service import RagService
from tests.conftest import make_settings, run_cli
from tests.procs import free_port, stop

KURSK = "How many workers are in Kursk?"
KURSK_QUOTE = "plus de mille spécialistes nord-coréens"
LIGHTHOUSE = (
    "Le phare de Kerbrannec\n"
    "Le phare de Kerbrannec a été construit en 1887 par l'ingénieur Yves Morvan. "
    "Il guide les pêcheurs à l'entrée de la baie depuis plus d'un siècle.\n"
)


def _chroma_cli() -> str:
    """The `chroma` command installed with chromadb in this environment."""
    beside = Path(sys.executable).parent / "chroma"
    found = str(beside) if beside.exists() else shutil.which("chroma")
    assert found, "the `chroma` CLI (installed with chromadb) is missing"
    return found


def _heartbeat(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory) -> Iterator[str]:
    """A real Chroma server on a free local port, stopped after the module's tests."""
    root = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHROMA_"))}
    env["ANONYMIZED_TELEMETRY"] = "False"
    log = (root / "server.log").open("w")
    command = [_chroma_cli(), "run", "--path", str(root / "db")]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not _heartbeat(url):
            assert server.poll() is None, (root / "server.log").read_text()
            assert time.monotonic() < deadline, "the Chroma server did not start in 60 s"
            time.sleep(0.2)
        yield url
    finally:
        stop(server)
        log.close()


def _check_kursk(answer) -> None:
    assert not answer.abstained, answer
    kursk = [c for c in answer.citations if KURSK_QUOTE in c.quote]
    assert kursk, answer
    for cite in answer.citations:
        text = Path(cite.source).read_text(encoding="utf-8")
        assert text[cite.start : cite.end] == cite.quote


def test_ingest_and_ask_through_the_server(tmp_path: Path, chroma_url: str, seed_corpus) -> None:
    settings = make_settings(tmp_path / "data", chroma_url=chroma_url, collection="svc")
    service = RagService(settings)
    first = service.ingest([seed_corpus], show_progress=False)
    assert (first.added, first.failed) == (1, [])
    assert first.chunks_embedded > 0
    again = service.ingest([seed_corpus], show_progress=False)
    assert (again.unchanged, again.chunks_embedded) == (1, 0)
    # Nothing of Chroma's went to the local data dir: only our BM25 index lives there.
    assert not (tmp_path / "data" / "chroma").exists()

    _check_kursk(service.ask(KURSK))
    assert service.ask("What is the capital of Australia?").abstained
    # A fresh service (a restarted app) reads the same server-side index.
    _check_kursk(RagService(settings).ask(KURSK))


def test_cli_against_the_server(tmp_path: Path, chroma_url: str, seed_corpus) -> None:
    env = {"RAG_CHROMA_URL": chroma_url, "RAG_COLLECTION": "cli"}
    data = tmp_path / "data"
    ingest = run_cli("ingest", str(seed_corpus), data_dir=data, env=env)
    assert ingest.returncode == 0, ingest.stderr
    assert "1 added" in ingest.stdout
    again = run_cli("ingest", str(seed_corpus), data_dir=data, env=env)
    assert "0 chunks embedded" in again.stdout, again.stdout + again.stderr

    ask = run_cli("ask", KURSK, "--json", data_dir=data, env=env)
    assert ask.returncode == 0, ask.stderr
    payload = json.loads(ask.stdout)
    assert payload["abstained"] is False
    assert any(KURSK_QUOTE in c["quote"] for c in payload["citations"])
    for cite in payload["citations"]:  # ``source``: relative to the folder indexed
        text = (seed_corpus / cite["source"]).read_text(encoding="utf-8")
        assert text[cite["start"] : cite["end"]] == cite["quote"]
    off = run_cli("ask", "What is the capital of Australia?", "--json", data_dir=data, env=env)
    assert json.loads(off.stdout)["abstained"] is True


def test_two_app_instances_share_one_server(tmp_path: Path, chroma_url: str, seed_corpus) -> None:
    """Two services with their own data dirs (two app hosts) see each other's ingests."""
    first = RagService(make_settings(tmp_path / "a", chroma_url=chroma_url, collection="shared"))
    second = RagService(make_settings(tmp_path / "b", chroma_url=chroma_url, collection="shared"))
    first.ingest([seed_corpus], show_progress=False)
    _check_kursk(second.ask(KURSK))  # ingested by the other instance

    lighthouse = tmp_path / "phare"
    lighthouse.mkdir()
    (lighthouse / "phare.txt").write_text(LIGHTHOUSE, encoding="utf-8")
    before = first.lexical().ids  # loaded before the other instance's ingest
    stamp = first.store.change_stamp()
    assert second.ingest([lighthouse], show_progress=False).added == 1
    # The one small read each question makes to notice another instance's ingest.
    changed = first.store.change_stamp()
    assert changed not in (None, stamp)
    # An ingest that changes nothing leaves it alone, so no instance reloads its BM25 index.
    assert second.ingest([lighthouse], show_progress=False).unchanged == 1
    assert first.store.change_stamp() == changed
    assert first.status().documents == second.status().documents == 2
    # The first instance's BM25 index follows the server's chunks, not only its own ingests.
    ids = set(first.lexical().ids)
    assert ids == {c.id for c in first.store.all_chunks()} and len(ids) > len(before)
    answer = first.ask("Qui a construit le phare de Kerbrannec ?")
    assert not answer.abstained, answer
    assert any("Yves Morvan" in c.quote for c in answer.citations), answer


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", chroma_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreError, match="RAG_CHROMA_URL"):
        RagService(settings).store  # noqa: B018 - opening is the test
    cli = run_cli(
        "ask", KURSK, data_dir=tmp_path / "data", env={"RAG_CHROMA_URL": settings.chroma_url}
    )
    assert cli.returncode == 2
    assert cli.stderr.startswith("error: ") and "Traceback" not in cli.stderr
