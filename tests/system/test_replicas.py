"""Two `rag serve` replicas on one PostgreSQL app database and one `chroma run` server.

The topology of docs/deployment.md, on loopback: the index is built once through one
replica's settings; keys and removals made with one replica's settings hold on the other at
once (nothing about accounts is cached in a process); 20 clients for a minute get no error;
a replica killed with SIGKILL mid-load leaves the other answering, the saved accounts and
conversations intact (a page process writing conversations is killed with it), and restarts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from rag.accounts.conversations import Conversations
from rag.accounts.db import connect
from tests.browser import wait_http
from tests.conftest import ROOT, make_settings, run_cli
from tests.pg import Cluster
from tests.procs import child_env, free_port, stop
from tests.system.test_chroma_server import _chroma_cli, _heartbeat

pytestmark = pytest.mark.slow

KURSK = "How many workers are in Kursk?"
KURSK_QUOTE = "plus de mille spécialistes nord-coréens"
PASSWORD = "correct horse battery"
CLIENTS = 20
# The acceptance's minute: every client sends several requests to both replicas (an answer
# took 0.1-0.2 s alone and 1.5-17 s behind 19 others on the shared 2-core machine).
LOAD_SECONDS = 60
# The faulted run: the kill lands after KILL_AFTER_S, with every client's request in flight,
# and the survivor then serves alone for the rest.
FAULT_SECONDS = 20
KILL_AFTER_S = 5
# An answer queued behind 19 others on two busy cores takes well under this.
REQUEST_TIMEOUT_S = 120
STARTUP_TIMEOUT_S = 300
# A page process writing conversations while the replica is killed: this many questions
# with their answers per conversation, each pair in one transaction.
WRITER = """
import sys
from rag.accounts.conversations import Conversations
from rag.config import get_settings
store = Conversations(get_settings(), "ann")
while True:
    conv = store.create("Où est Koursk ?")
    for turn in range(3):
        store.append(conv.id, [{"role": "user", "content": f"question {turn}"},
                               {"role": "assistant", "content": f"answer {turn}"}])
        print(conv.id, 2 * (turn + 1), flush=True)
"""


@dataclass
class Replica:
    """One `rag serve` process with its own data dir, on a fixed port (kept on restart)."""

    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        full = child_env(self.data_dir, **self.env)
        log = (self.data_dir.parent / f"serve-{self.port}.log").open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def wait(self) -> None:
        wait_http(f"{self.url}/health", STARTUP_TIMEOUT_S)

    def cli(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """``rag`` with this replica's settings (its data dir, database and Chroma server)."""
        return run_cli(*args, data_dir=self.data_dir, env=self.env, **kwargs)


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("replicas-chroma")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHROMA_"))}
    env["ANONYMIZED_TELEMETRY"] = "False"
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [
            _chroma_cli(),
            "run",
            "--path",
            str(root / "db"),
            "--host",
            "127.0.0.1",
            "--port",
            f"{port}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _heartbeat(url):
            assert server.poll() is None and time.monotonic() < deadline, "no Chroma server"
            time.sleep(0.2)
        yield url
    finally:
        stop(server)
        log.close()


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory, chroma_url: str, pg_cluster: Cluster, seed_corpus: Path
) -> Iterator[tuple[Replica, Replica]]:
    """Two replicas sharing one PostgreSQL database and one Chroma collection; the seed
    corpus indexed once, through the first one's settings."""
    root = tmp_path_factory.mktemp("replicas")
    env = {
        "RAG_DATABASE_URL": pg_cluster.new_database(),
        "RAG_CHROMA_URL": chroma_url,
        "RAG_COLLECTION": "replicas",
    }
    pair = (Replica(root / "a" / "data", env), Replica(root / "b" / "data", env))
    for replica in pair:
        replica.data_dir.parent.mkdir(parents=True)
    ingest = pair[0].cli("ingest", str(seed_corpus))
    assert ingest.returncode == 0, ingest.stderr
    for replica in pair:
        replica.start()
    try:
        for replica in pair:
            replica.wait()
        yield pair
    finally:
        for replica in pair:
            if replica.proc and replica.proc.poll() is None:
                stop(replica.proc)


def ask(http: httpx.Client, url: str, key: str) -> httpx.Response:
    return http.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "documents", "messages": [{"role": "user", "content": KURSK}]},
    )


def answered(response: httpx.Response) -> bool:
    """A 200 carrying the seed's Kursk citation."""
    if response.status_code != 200:
        return False
    message = response.json()["choices"][0]["message"]
    return any(KURSK_QUOTE in c["quote"] for c in message.get("citations", []))


def add_user(replica: Replica, name: str, role: str = "reader") -> str:
    added = replica.cli("user", "add", name, "--role", role, "--password-stdin", input=PASSWORD)
    assert added.returncode == 0, added.stderr
    token = replica.cli("user", "token", name)
    assert token.returncode == 0, token.stderr
    return token.stdout.strip()


def test_a_key_made_with_one_replica_works_on_the_other_and_removal_is_immediate(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    add_user(a, "admin", "admin")  # keeps sign-in on when the readers go
    key = add_user(a, "rita")
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
        assert answered(ask(http, b.url, key)) and answered(ask(http, a.url, key))
        removed = b.cli("user", "remove", "rita")
        assert removed.returncode == 0, removed.stderr
        for replica in (a, b):  # the very next request, on either replica
            assert ask(http, replica.url, key).status_code == 401


@dataclass
class Load:
    """What 20 clients saw: answers per replica, errors, requests that failed over."""

    answers: dict[str, int] = field(default_factory=dict)
    answered_at: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    failed_over: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, url: str, response: httpx.Response) -> None:
        with self.lock:
            if answered(response):
                self.answers[url] = self.answers.get(url, 0) + 1
                self.answered_at.setdefault(url, []).append(time.monotonic())
            else:
                self.errors.append(f"{url}: {response.status_code} {response.text[:200]}")


def run_load(urls: list[str], key: str, seconds: float, dead: set[str]) -> Load:
    """``CLIENTS`` clients, each sending one request at a time, round-robin over ``urls``,
    for ``seconds``. A request to a replica in ``dead`` (killed by the test) that fails in
    transport is retried once on the next replica, as a load balancer does; any other
    failure is an error."""
    load, deadline = Load(), time.monotonic() + seconds

    def client(n: int) -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
            turn = n
            while time.monotonic() < deadline:
                url = urls[turn % len(urls)]
                turn += 1
                try:
                    load.count(url, ask(http, url, key))
                except httpx.TransportError as exc:
                    if url not in dead:
                        with load.lock:
                            load.errors.append(f"{url}: {exc!r}")
                        continue
                    with load.lock:
                        load.failed_over += 1
                    other = urls[turn % len(urls)]
                    load.count(other, ask(http, other, key))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return load


def snapshot(settings) -> dict[str, list[tuple]]:
    """Every row of the accounts and conversations tables, in a stable order."""
    tables = ("users", "api_keys", "conversations", "messages")
    with connect(settings) as db:
        return {t: sorted(tuple(r) for r in db.execute(f"SELECT * FROM {t}")) for t in tables}


def test_twenty_clients_for_a_minute_then_a_replica_killed_mid_load(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    settings = make_settings(a.data_dir, database_url=a.env["RAG_DATABASE_URL"])
    key = add_user(a, "loader")
    store = Conversations(settings, "loader")
    saved = store.create(KURSK)
    store.append(saved.id, [{"role": "user", "content": KURSK}, {"role": "assistant"}])

    steady = run_load([a.url, b.url], key, LOAD_SECONDS, dead=set())
    print(f"steady: {steady.answers} answers in {LOAD_SECONDS} s, errors {steady.errors[:3]}")
    assert steady.errors == []
    assert all(steady.answers.get(u, 0) > 0 for u in (a.url, b.url))  # both took their share

    before = snapshot(settings)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER],
        cwd=ROOT,
        env={**os.environ, "RAG_DATA_DIR": str(a.data_dir), **a.env},
        stdout=subprocess.PIPE,
        text=True,
    )

    killed_at: list[float] = []

    def kill() -> None:
        time.sleep(KILL_AFTER_S)
        a.proc.send_signal(signal.SIGKILL)
        writer.send_signal(signal.SIGKILL)
        killed_at.append(time.monotonic())

    killer = threading.Thread(target=kill)
    killer.start()
    faulted = run_load([a.url, b.url], key, FAULT_SECONDS, dead={a.url})
    killer.join()
    print(f"faulted: {faulted.answers}, failed over {faulted.failed_over}")
    assert faulted.errors == []
    assert faulted.failed_over > 0  # requests were going to the killed replica
    # Every request to the survivor, and every one failed over to it, was answered (no
    # error above), and it went on answering after the kill.
    assert any(t > killed_at[0] for t in faulted.answered_at.get(b.url, []))

    committed = _committed(writer)
    after = snapshot(settings)
    for table, rows in before.items():  # nothing saved before the kill changed or went
        assert set(rows) <= set(after[table]), table
    _check_conversations(settings, committed)

    a.start()  # the killed replica restarts on the same settings
    a.wait()
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
        assert answered(ask(http, a.url, key))
    assert store.messages(saved.id)[0]["content"] == KURSK


def _committed(writer: subprocess.Popen) -> dict[str, int]:
    """The messages each conversation had when the killed writer last reported a commit."""
    writer.wait()
    committed: dict[str, int] = {}
    for line in writer.stdout.read().splitlines():
        conv_id, count = line.split()
        committed[conv_id] = int(count)
    assert committed, "the writer committed nothing before it was killed"
    return committed


def _check_conversations(settings, committed: dict[str, int]) -> None:
    """Every committed message is there; every conversation holds whole question-answer
    pairs at positions 0..n-1, each message valid JSON."""
    store = Conversations(settings, "ann")
    with connect(settings) as db:
        for conv in store.list():
            rows = db.execute(
                "SELECT position, message FROM messages WHERE conversation = ? ORDER BY position",
                (conv.id,),
            ).fetchall()
            assert [r["position"] for r in rows] == list(range(len(rows)))
            assert len(rows) % 2 == 0
            for row in rows:
                json.loads(row["message"])
    have = {conv.id: len(store.messages(conv.id)) for conv in store.list()}
    for conv_id, count in committed.items():
        assert have.get(conv_id, 0) >= count, (conv_id, count, have.get(conv_id))
