"""Load on `rag serve`: concurrent OpenAI clients asking PIAF questions for a fixed time.

Builds (or reuses) the PIAF index, starts `rag serve` on it as a subprocess on a free
loopback port (extractive answers, sign-in off), then runs ``--clients`` threads, each with
its own `openai` client asking dev questions (French and English, in turn) one after another
until ``--seconds`` have passed; odd-numbered clients stream. A request counts as an error
if it raises, or if its answer is neither cited nor an abstention. Prints requests, errors,
throughput and latency percentiles (whole reply, streamed or not).

Usage: python -m benchmarks.api_load [--clients 20] [--seconds 60]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import openai

from benchmarks.common import OUT, PASSAGES, QUESTIONS, bench_settings
from rag.evaluate import eval_service, read_jsonl
from tests.browser import wait_http
from tests.procs import child_env, free_port, stop


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ms: float | None, error: str | None = None) -> None:
        with self.lock:
            if error:
                self.errors.append(error)
            else:
                self.latencies_ms.append(ms)


def ask_once(client: openai.OpenAI, question: str, stream: bool) -> str | None:
    """One chat completion; the reason it failed, or None."""
    messages = [{"role": "user", "content": question}]
    if stream:
        chunks = list(client.chat.completions.create(model="piaf", messages=messages, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        citations = chunks[-1].choices[0].delta.model_extra.get("citations")
    else:
        message = client.chat.completions.create(model="piaf", messages=messages)
        text = message.choices[0].message.content
        citations = message.choices[0].message.model_extra.get("citations")
    if citations is None:
        return "no citations field"
    if not citations and "could not find" not in text:
        return f"uncited answer: {text[:80]!r}"
    return None


def client_loop(
    url: str, index: int, questions: list[str], deadline: float, tally: Tally, step: int = 1
) -> None:
    """Ask questions ``index``, ``index + step``, … until ``deadline`` (clients never overlap)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    n = index
    while time.monotonic() < deadline:
        question = questions[n % len(questions)]
        n += step
        started = time.perf_counter()
        try:
            error = ask_once(client, question, stream=index % 2 == 1)
        except openai.OpenAIError as exc:
            error = f"{type(exc).__name__}: {exc}"
        tally.add((time.perf_counter() - started) * 1000, error)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    settings = bench_settings()
    service = eval_service(settings, PASSAGES)
    chunks, collection = service.store.count(), service.collection
    del service  # the server loads its own
    questions = [r["question"] for r in read_jsonl(QUESTIONS["fr"])]
    english = [r["question"] for r in read_jsonl(QUESTIONS["en"])]
    questions = [q for pair in zip(questions, english * 20) for q in pair]

    port = free_port()
    env = child_env(settings.data_dir, RAG_COLLECTION=collection)
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "api_load_server.log").open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/health", 300)
            tally = Tally()
            warm = Tally()
            client_loop(url, 0, questions, time.monotonic() + 1, warm)  # first requests
            deadline = time.monotonic() + args.seconds
            threads = [
                threading.Thread(
                    target=client_loop, args=(url, i, questions, deadline, tally, args.clients)
                )
                for i in range(args.clients)
            ]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
        finally:
            stop(server)
    report(tally, args.clients, elapsed, chunks)


def report(tally: Tally, clients: int, elapsed: float, chunks: int) -> None:
    done = len(tally.latencies_ms)
    print(
        f"rag serve under {clients} concurrent OpenAI clients for {elapsed:.0f} s "
        f"(PIAF, {chunks} chunks, extractive): {done} answers, {len(tally.errors)} errors, "
        f"{done / elapsed:.1f} answers/s; latency p50 "
        f"{np.percentile(tally.latencies_ms, 50):.0f} ms, p95 "
        f"{np.percentile(tally.latencies_ms, 95):.0f} ms, max {max(tally.latencies_ms):.0f} ms"
    )
    for error in tally.errors[:5]:
        print(f"error: {error}")


if __name__ == "__main__":
    main()
