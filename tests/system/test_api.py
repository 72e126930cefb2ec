"""`rag serve` as a subprocess, driven by the real `openai` client and plain HTTP; `rag user`.

Two servers over copies of one seed index: an open one on loopback answering through the LLM
stand-in (no account), and one with accounts, answering extractively.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from rag.accounts.db import connect
from rag.accounts.users import Accounts
from rag.api import document_id
from rag.service import RagService
from tests.browser import wait_http
from tests.conftest import ROOT, SEED, make_settings, run_cli
from tests.integration.test_llm import KURSK_CLAIM, KURSK_SENTENCE, SECRET, citing, llm_env
from tests.openai_standin import StandIn, error, reply
from tests.procs import child_env, free_port, stop

KURSK = "How many workers are in Kursk?"
KURSK_QUOTE = "plus de mille spécialistes nord-coréens"
PASSWORD = "correct horse battery"
BREST = (
    "Rapport sur le port de Brest\n"
    "Le port de Brest a accueilli exactement 4321 navires de pêche en 2023.\n"
)


@contextlib.contextmanager
def rag_serve(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``rag serve`` on a free loopback port; yields its base URL."""
    port = free_port()
    full_env = child_env(data_dir, **(env or {}))
    log = (data_dir.parent / f"serve-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", 300)
        yield url
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="module")
def seed_index(tmp_path_factory, seed_corpus: Path) -> Path:
    data_dir = tmp_path_factory.mktemp("api-seed") / "data"
    RagService(make_settings(data_dir)).ingest([seed_corpus], show_progress=False)
    return data_dir


@pytest.fixture(scope="module")
def open_url(seed_index: Path, standin: StandIn, tmp_path_factory) -> Iterator[str]:
    """No account, answers through the LLM stand-in."""
    data_dir = tmp_path_factory.mktemp("api-open") / "data"
    shutil.copytree(seed_index, data_dir)
    with rag_serve(data_dir, llm_env(standin.url)) as url:
        yield url


@pytest.fixture(scope="module")
def secured(
    seed_index: Path, tmp_path_factory, module_database_url: str | None
) -> Iterator[tuple[str, dict[str, str]]]:
    """Sign-in on (one account per role), on SQLite then on PostgreSQL; yields the URL and
    each role's API key."""
    data_dir = tmp_path_factory.mktemp("api-secured") / "data"
    shutil.copytree(seed_index, data_dir)
    accounts = Accounts(make_settings(data_dir, database_url=module_database_url))
    keys = {}
    for role in ("reader", "editor"):
        accounts.add(role, PASSWORD, role)
        keys[role] = accounts.new_key(role)
    with rag_serve(data_dir, database_env(module_database_url)) as url:
        yield url, keys


def database_env(database_url: str | None) -> dict[str, str]:
    return {"RAG_DATABASE_URL": database_url} if database_url else {}


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def assert_line_4(citations: list[dict], url: str, key: str = "") -> None:
    """The seed's line-4 citation is there, named as in its folder, and every quote is
    exactly the text its ``document_id`` serves (``GET /v1/documents/{id}``)."""
    assert any(c["line"] == 4 and KURSK_QUOTE in c["quote"] for c in citations), citations
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for c in citations:
        assert c["source"] == SEED.name
        doc = httpx.get(f"{url}/v1/documents/{c['document_id']}", headers=headers, timeout=60)
        assert doc.json()["text"][c["start"] : c["end"]] == c["quote"]


def stream_answer(chat: openai.OpenAI, **extra) -> tuple[str, list[dict]]:
    """The streamed text, and the citations of the final chunk."""
    chunks = list(
        chat.chat.completions.create(
            model="documents", messages=[{"role": "user", "content": KURSK}], stream=True, **extra
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    last = chunks[-1].choices[0]
    assert last.finish_reason == "stop"
    assert {"confidence", "closest"} <= set(last.delta.model_extra)
    return text, last.delta.model_extra["citations"]


def test_chat_completion_carries_the_line_4_citation(secured) -> None:
    url, keys = secured
    done = client(url, keys["reader"]).chat.completions.create(
        model="documents", messages=[{"role": "user", "content": KURSK}]
    )
    message = done.choices[0].message
    assert KURSK_QUOTE in message.content and "[1]" in message.content
    assert_line_4(message.model_extra["citations"], url, keys["reader"])
    assert 0.0 <= message.model_extra["confidence"] <= 1.0
    assert message.model_extra["closest"] == []


def test_streamed_completion_ends_with_the_citations(secured) -> None:
    url, keys = secured
    text, citations = stream_answer(client(url, keys["reader"]))
    assert KURSK_QUOTE in text
    assert_line_4(citations, url, keys["reader"])


def test_llm_answer_streams_with_verified_citations(open_url: str, standin: StandIn) -> None:
    standin.script(reply(citing("plus de mille", KURSK_CLAIM, KURSK_SENTENCE)))
    text, citations = stream_answer(client(open_url))
    assert text.startswith(KURSK_CLAIM) and "[1]" in text and "Quotes:" not in text
    assert_line_4(citations, open_url)
    assert all(c["verified"] for c in citations)


def test_history_reaches_the_llm(open_url: str, standin: StandIn) -> None:
    """Earlier turns are the history: the follow-up is condensed first (two LLM calls)."""
    standin.script(
        reply("How many North Korean workers are in Kursk?"),
        reply(citing("plus de mille", KURSK_CLAIM, KURSK_SENTENCE)),
    )
    done = client(open_url).chat.completions.create(
        model="anything",
        messages=[
            {"role": "system", "content": "ignored"},
            {"role": "user", "content": "Tell me about North Korean workers."},
            {"role": "assistant", "content": "They help Russia."},
            {"role": "user", "content": "How many in Kursk?"},
        ],
    )
    assert len(standin.requests) == 2
    assert "They help Russia." in json.dumps(standin.requests[0])
    assert done.model == "anything"
    assert_line_4(done.choices[0].message.model_extra["citations"], open_url)


def test_llm_server_key_never_leaves_the_server(open_url: str, standin: StandIn) -> None:
    """The stand-in echoes the key in its error, as careless servers do."""
    standin.script(error(401))
    done = httpx.post(
        f"{open_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": KURSK}]},
        timeout=60,
    )
    assert done.status_code == 200
    assert standin.keys and standin.keys[-1] == SECRET
    assert SECRET not in done.text
    assert KURSK_QUOTE in done.text  # the extractive fallback
    standin.script(error(401))
    with httpx.stream(
        "POST",
        f"{open_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": KURSK}], "stream": True},
        timeout=60,
    ) as streamed:
        body = "".join(streamed.iter_text())
    assert SECRET not in body and body.endswith("data: [DONE]\n\n")


def test_fallback_replacing_a_failed_stream_is_streamed_with_its_citations(
    open_url: str, standin: StandIn
) -> None:
    standin.script(error(500))
    text, citations = stream_answer(client(open_url))
    assert KURSK_QUOTE in text
    assert_line_4(citations, open_url)


def test_ask_returns_the_json_of_the_cli(secured, seed_index: Path) -> None:
    url, keys = secured
    headers = {"Authorization": f"Bearer {keys['reader']}"}
    api = httpx.post(f"{url}/v1/ask", json={"question": KURSK}, headers=headers, timeout=60)
    assert api.status_code == 200
    assert isinstance(api.json()["confidence"], float) and api.json()["closest"] == []
    cli = run_cli("ask", KURSK, "--json", data_dir=seed_index)
    assert cli.returncode == 0, cli.stderr
    # int8 activations are quantised per batch, and which words a process still has to
    # embed depends on what it was asked before: the confidence may differ in the third
    # decimal between two processes (docs/answer-decision.md), nothing else may.
    served, printed = api.json(), json.loads(cli.stdout)
    assert served.pop("confidence") == pytest.approx(printed.pop("confidence"), abs=0.01)
    assert served == printed


def test_open_server_needs_no_key_but_refuses_web_pages(open_url: str) -> None:
    assert httpx.get(f"{open_url}/v1/models").json()["data"][0]["id"] == "documents"
    files = {"files": ("x.txt", b"Planted by a web page.\n", "text/plain")}
    for headers in ({"Origin": "https://evil.example"}, {"Host": "evil.example"}):
        planted = httpx.post(f"{open_url}/v1/documents", files=files, headers=headers)
        assert planted.status_code == 403, headers
    local = httpx.get(f"{open_url}/v1/models", headers={"Origin": "http://localhost:3000"})
    assert local.status_code == 200


def test_no_key_is_401_and_health_is_open(secured) -> None:
    url, _ = secured
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    with pytest.raises(openai.AuthenticationError):
        client(url, "rag_not-a-key").chat.completions.create(
            model="documents", messages=[{"role": "user", "content": KURSK}]
        )
    for method, path in [("POST", "/v1/ask"), ("GET", "/v1/models"), ("POST", "/v1/documents")]:
        done = httpx.request(method, f"{url}{path}", json={"question": KURSK})
        assert done.status_code == 401, path
        assert "corpus" not in done.text and KURSK_QUOTE not in done.text


def test_reader_cannot_upload_and_editor_can(secured) -> None:
    url, keys = secured
    files = {"files": ("brest.txt", BREST.encode(), "text/plain")}

    def upload(role: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {keys[role]}"}
        return httpx.post(f"{url}/v1/documents", files=files, headers=headers, timeout=120)

    refused = upload("reader")
    assert refused.status_code == 403
    assert "reader" in refused.json()["error"]["message"]
    done = upload("editor")
    assert done.status_code == 200, done.text
    assert done.json()["added"] == 1
    answer = httpx.post(
        f"{url}/v1/ask",
        json={"question": "Combien de navires de pêche le port de Brest a-t-il accueillis ?"},
        headers={"Authorization": f"Bearer {keys['reader']}"},
        timeout=60,
    ).json()
    assert any("4321 navires" in c["quote"] for c in answer["citations"])


def test_document_endpoint_serves_only_indexed_texts(secured) -> None:
    url, keys = secured
    headers = {"Authorization": f"Bearer {keys['reader']}"}
    done = client(url, keys["reader"]).chat.completions.create(
        model="documents", messages=[{"role": "user", "content": KURSK}]
    )
    cite = done.choices[0].message.model_extra["citations"][0]
    doc = httpx.get(f"{url}/v1/documents/{cite['document_id']}", headers=headers).json()
    assert doc["text"][cite["start"] : cite["end"]] == cite["quote"]
    for path in ("/etc/passwd", str(ROOT / "pyproject.toml")):
        stranger = httpx.get(f"{url}/v1/documents/{document_id(path)}", headers=headers)
        assert stranger.status_code == 404
    traversal = httpx.get(f"{url}/v1/documents/..%2F..%2Fetc%2Fpasswd", headers=headers)
    assert traversal.status_code == 404


def test_bad_requests_get_one_clear_line(secured) -> None:
    url, keys = secured
    headers = {"Authorization": f"Bearer {keys['reader']}"}
    cases = [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "no user message"),
        ({"messages": [{"role": "user", "content": "  "}]}, "question"),
    ]
    for body, needle in cases:
        done = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60)
        assert done.status_code == 400, body
        assert needle in done.json()["error"]["message"].lower()
    junk = httpx.post(f"{url}/v1/ask", content=b"{not json", headers=headers)
    assert junk.status_code == 400 and "not JSON" in junk.json()["error"]["message"]


def test_serving_beyond_loopback_needs_an_account(tmp_path: Path) -> None:
    done = run_cli("serve", "--host", "0.0.0.0", "--port", "1", data_dir=tmp_path / "data")
    assert done.returncode == 2
    assert done.stderr.startswith("error: Refusing to serve on 0.0.0.0")
    assert "Traceback" not in done.stderr


def test_user_commands(tmp_path: Path, database_url: str | None) -> None:
    data_dir = tmp_path / "data"
    env = database_env(database_url)
    secret = "a long and secret passphrase"
    added = run_cli(
        "user",
        "add",
        "alice",
        "--role",
        "editor",
        "--password-stdin",
        data_dir=data_dir,
        env=env,
        input=secret + "\n",
    )
    assert added.returncode == 0, added.stderr
    again = run_cli(
        "user",
        "add",
        "alice",
        "--role",
        "reader",
        "--password-stdin",
        data_dir=data_dir,
        env=env,
        input=secret + "\n",
    )
    assert again.returncode == 2 and "already exists" in again.stderr
    short = run_cli(
        "user",
        "add",
        "bob",
        "--role",
        "reader",
        "--password-stdin",
        data_dir=data_dir,
        env=env,
        input="short\n",
    )
    assert short.returncode == 2 and "password" in short.stderr
    listed = run_cli("user", "list", data_dir=data_dir, env=env)
    assert listed.stdout.splitlines()[0].split("\t")[:2] == ["alice", "editor"]
    token = run_cli("user", "token", "alice", data_dir=data_dir, env=env)
    key = token.stdout.strip()
    assert token.returncode == 0 and key.startswith("rag_") and len(key) > 40
    accounts = Accounts(make_settings(data_dir, database_url=database_url))
    assert accounts.user_for_key(key).name == "alice"
    assert accounts.sign_in("alice", secret, "test").role == "editor"
    if database_url is None:
        raw = b"".join(p.read_bytes() for p in data_dir.glob("app.sqlite3*"))
        assert secret.encode() not in raw and key.encode() not in raw
    with connect(accounts.settings) as db:
        stored = db.execute("SELECT password_hash FROM users").fetchone()[0]
        assert not db.execute("SELECT 1 FROM api_keys WHERE key_sha256 = ?", (key,)).fetchall()
    assert stored.startswith("$argon2id$")
    assert secret not in added.stdout + added.stderr
    removed = run_cli("user", "remove", "alice", data_dir=data_dir, env=env)
    assert removed.returncode == 0 and "sign-in is off" in removed.stderr
    assert accounts.user_for_key(key) is None
    assert run_cli("user", "token", "alice", data_dir=data_dir, env=env).returncode == 2


def test_no_response_holds_a_server_path(open_url: str, standin: StandIn, tmp_path_factory):
    """Every path a client can take (answers plain and streamed, Open WebUI source events,
    closest passages, documents, uploads, errors) names files as in their folder, never by
    the data dir's or the corpus folder's absolute path (all under pytest's base temp)."""
    server_paths = {str(tmp_path_factory.getbasetemp()), str(ROOT)}
    kursk = {"messages": [{"role": "user", "content": KURSK}]}
    salary = {"messages": [{"role": "user", "content": "What is the salary of the workers?"}]}
    standin.script(reply(citing("plus de mille", KURSK_CLAIM, KURSK_SENTENCE)))
    bodies = []
    for body in (kursk, salary, {**kursk, "stream": True}, {**salary, "stream": True}):
        done = httpx.post(f"{open_url}/v1/chat/completions", json=body, timeout=120)
        assert done.status_code == 200, done.text
        bodies.append(done.text)
    assert '"type": "source"' in bodies[2]  # the Open WebUI events were checked too
    asked = httpx.post(f"{open_url}/v1/ask", json={"question": KURSK}, timeout=120)
    cite = asked.json()["citations"][0]
    assert cite["source"] == SEED.name
    document = httpx.get(f"{open_url}/v1/documents/{cite['document_id']}")
    files = [("files", ("ok.txt", BREST.encode())), ("files", ("vide.txt", b"  \n"))]
    uploaded = httpx.post(f"{open_url}/v1/documents", files=files, timeout=120)
    assert uploaded.json()["failed"] == [{"name": "vide.txt", "reason": "empty file"}]
    missing = httpx.get(f"{open_url}/v1/documents/{'0' * 32}")
    models = httpx.get(f"{open_url}/v1/models/documents")
    bodies += [r.text for r in (asked, document, uploaded, missing, models)]
    for text in bodies:
        assert not any(path in text for path in server_paths), text
