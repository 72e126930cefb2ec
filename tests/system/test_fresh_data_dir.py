"""Every entry point on a fresh data dir, with the embedded store and with a Chroma server:
`rag ingest`, `rag user add` / `list`, `rag serve` and the chat page; and a Chroma server
that goes down while `rag serve` runs (a 503 with the CLI's message, not a 500).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from rag.config import get_settings
from tests.conftest import ROOT, run_cli
from tests.procs import free_port, stop
from tests.system.test_api import KURSK, KURSK_QUOTE, PASSWORD, rag_serve
from tests.system.test_chroma_server import _chroma_cli, _heartbeat


def _start_chroma(root: Path) -> tuple[subprocess.Popen, str]:
    """A real `chroma run` on a free port, once it answers its heartbeat."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHROMA_"))}
    env["ANONYMIZED_TELEMETRY"] = "False"
    log = (root / f"chroma-{port}.log").open("w")
    command = [_chroma_cli(), "run", "--path", str(root / "db"), "--host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    while not _heartbeat(url):
        assert server.poll() is None, (root / f"chroma-{port}.log").read_text()
    return server, url


@pytest.fixture(scope="module")
def chroma(tmp_path_factory) -> Iterator[str]:
    server, url = _start_chroma(tmp_path_factory.mktemp("chroma"))
    yield url
    stop(server)


@pytest.fixture(params=["embedded", "server"])
def store_env(request, chroma: str) -> dict[str, str]:
    """The environment of one store mode (each test gets its own collection)."""
    if request.param == "embedded":
        return {}
    return {"RAG_CHROMA_URL": chroma, "RAG_COLLECTION": f"fresh{free_port()}"}


def _add_admin(data: Path, env: dict[str, str]) -> None:
    added = run_cli(
        "user", "add", "ada", "--role", "admin", "--password-stdin",
        data_dir=data, env=env, input=PASSWORD + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = run_cli("user", "list", data_dir=data, env=env)
    assert listed.returncode == 0 and listed.stdout.startswith("ada\tadmin"), listed.stderr


def test_user_add_on_a_fresh_dir(tmp_path: Path, store_env: dict[str, str]) -> None:
    _add_admin(tmp_path / "new" / "data", store_env)


def test_ingest_then_users_then_serve(
    tmp_path: Path, store_env: dict[str, str], seed_corpus: Path
) -> None:
    data = tmp_path / "data"
    ingest = run_cli("ingest", str(seed_corpus), data_dir=data, env=store_env)
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads((data / "rag-data.json").read_text())["schema_version"] == 1
    _add_admin(data, store_env)
    key = run_cli("user", "token", "ada", data_dir=data, env=store_env).stdout.strip()
    with rag_serve(data, store_env) as url:
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{url}/v1/models", headers=headers).status_code == 200
        body = {"messages": [{"role": "user", "content": KURSK}]}
        done = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120)
        assert done.status_code == 200, done.text
        assert KURSK_QUOTE in done.json()["choices"][0]["message"]["content"]


def test_serve_on_a_fresh_dir(tmp_path: Path, store_env: dict[str, str]) -> None:
    data = tmp_path / "data"
    with rag_serve(data, store_env) as url:
        models = httpx.get(f"{url}/v1/models")
        assert models.status_code == 200, models.text
        body = {"messages": [{"role": "user", "content": KURSK}]}
        empty = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert empty.status_code == 503 and "rag ingest" in empty.json()["error"]["message"]
    _add_admin(data, store_env)


def test_page_on_a_fresh_dir(tmp_path: Path, store_env: dict[str, str], monkeypatch) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    for name, value in store_env.items():
        monkeypatch.setenv(name, value)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RAG_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    try:
        at = AppTest.from_file(str(ROOT / "chat.py"), default_timeout=300).run()
    finally:
        get_settings.cache_clear()
    assert not at.exception, at.exception
    assert (data / "rag-data.json").exists()
    _add_admin(data, store_env)


def test_chroma_server_down_is_a_503(tmp_path: Path, seed_corpus: Path) -> None:
    server, chroma_url = _start_chroma(tmp_path)
    env = {"RAG_CHROMA_URL": chroma_url, "RAG_COLLECTION": "down"}
    data = tmp_path / "data"
    try:
        assert run_cli("ingest", str(seed_corpus), data_dir=data, env=env).returncode == 0
        with rag_serve(data, env) as url:
            body = {"messages": [{"role": "user", "content": KURSK}]}
            ok = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
            assert ok.status_code == 200, ok.text
            stop(server)
            down = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
            cli = run_cli("ask", KURSK, data_dir=data, env=env)
    finally:
        stop(server)
    assert down.status_code == 503, down.text
    message = down.json()["error"]["message"]
    assert chroma_url in message and "RAG_CHROMA_URL" in message
    assert cli.returncode == 2 and chroma_url in cli.stderr and "RAG_CHROMA_URL" in cli.stderr
