"""Answers/s and latency of one and of two `rag serve` replicas, in the same run.

The topology of docs/deployment.md on one machine: the PIAF index (built, or reused, as
``benchmarks.retrieval`` builds it) served by one `chroma run` process (a copy of the embedded
store's folder), the app database on a throwaway PostgreSQL cluster (tests/pg.py), sign-in
on (every request's key is checked in PostgreSQL), extractive answers. ``--clients`` clients
each send one chat completion at a time (odd-numbered ones streaming), PIAF dev questions in
French and English in turn, for ``--seconds``: first all to replica 1, then round-robin over
replicas 1 and 2 (``--rounds`` times). Prints one line per run: answers, errors, answers/s,
p50/p95 latency and the load average.

Both replicas share the machine's cores, so on one machine the second replica adds
processes, not CPUs: the figure says what a replica costs and that answers stay correct
under it; replicas on separate machines add their cores.

Usage: python -m benchmarks.replicas [--clients 20] [--seconds 60] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import openai

from benchmarks.api_load import Tally, ask_once
from benchmarks.common import OUT, PASSAGES, QUESTIONS, bench_settings
from rag.accounts.users import Accounts
from rag.evaluate import eval_service, read_jsonl
from tests.browser import wait_http
from tests.pg import Cluster, find_bin_dir
from tests.procs import child_env, free_port, stop
from tests.system.test_chroma_server import _chroma_cli, _heartbeat

# Enough for the first requests' one-off costs (BM25 load from Chroma, ONNX warm-up).
WARM_S = 5.0


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def chroma_server(store: Path, root: Path) -> tuple[subprocess.Popen, str]:
    """`chroma run` over a copy of the embedded store's folder; its URL once it answers."""
    shutil.copytree(store, root / "chroma")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHROMA_"))}
    env["ANONYMIZED_TELEMETRY"] = "False"
    command = [_chroma_cli(), "run", "--path", str(root / "chroma"), "--port", str(port)]
    server = start([*command, "--host", "127.0.0.1"], env, OUT / "replicas_chroma.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not _heartbeat(url):
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the Chroma server did not start: see benchmarks/out")
        time.sleep(0.5)
    return server, url


def replica(n: int, root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    full = child_env(root / f"replica{n}", **env)
    command = [sys.executable, "-m", "rag.cli", "serve", "--port", str(port)]
    return start(command, full, OUT / f"replicas_serve{n}.log"), f"http://127.0.0.1:{port}"


def load(urls: list[str], key: str, questions: list[str], clients: int, seconds: float):
    """(tally, elapsed s): ``clients`` clients round-robin over ``urls`` for ``seconds``."""
    tally, deadline = Tally(), time.monotonic() + seconds

    def loop(index: int) -> None:
        chats = [
            openai.OpenAI(base_url=f"{u}/v1", api_key=key, max_retries=0, timeout=120) for u in urls
        ]
        n = index
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                error = ask_once(chats[n % len(chats)], questions[n % len(questions)], index % 2)
            except openai.OpenAIError as exc:
                error = f"{type(exc).__name__}: {exc}"
            tally.add((time.perf_counter() - started) * 1000, error)
            n += clients

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally, time.monotonic() - started


def report(label: str, tally: Tally, elapsed: float) -> None:
    """One line; the machine's load average too, since other jobs share its cores."""
    done, ms = len(tally.latencies_ms), tally.latencies_ms
    print(
        f"{label}: {done} answers, {len(tally.errors)} errors, {done / elapsed:.1f} answers/s; "
        f"latency p50 {np.percentile(ms, 50):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms "
        f"(load average {os.getloadavg()[0]:.1f})"
    )
    for error in tally.errors[:3]:
        print(f"  error: {error}")


def questions() -> list[str]:
    french = [r["question"] for r in read_jsonl(QUESTIONS["fr"])]
    english = [r["question"] for r in read_jsonl(QUESTIONS["en"])]
    return [q for pair in zip(french, english * 20) for q in pair]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=1, help="alternate the two, N times each")
    args = parser.parse_args()
    settings = bench_settings()
    service = eval_service(settings, PASSAGES)
    chunks, collection = service.store.count(), service.collection
    del service
    OUT.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="rag-replicas-"))
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (initdb, postgres): see docs/deployment.md")
    cluster, procs = Cluster(bin_dir), []
    try:
        cluster.start()
        chroma, chroma_url = chroma_server(settings.data_dir / "chroma", root)
        procs.append(chroma)
        env = {
            "RAG_DATABASE_URL": cluster.new_database(),
            "RAG_CHROMA_URL": chroma_url,
            "RAG_COLLECTION": collection,
        }
        accounts = Accounts(settings.model_copy(update={"database_url": env["RAG_DATABASE_URL"]}))
        accounts.add("bench", "a benchmark password", "reader")
        key = accounts.new_key("bench")
        urls = []
        for n in (1, 2):
            proc, url = replica(n, root, env)
            procs.append(proc)
            urls.append(url)
        for url in urls:
            wait_http(f"{url}/health", 300)
            load([url], key, questions(), 1, WARM_S)
        print(f"PIAF ({chunks} chunks), extractive, {args.clients} clients, {args.seconds:.0f} s")
        for _ in range(args.rounds):
            report("1 replica ", *load(urls[:1], key, questions(), args.clients, args.seconds))
            report("2 replicas", *load(urls, key, questions(), args.clients, args.seconds))
    finally:
        for proc in procs:
            stop(proc)
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
