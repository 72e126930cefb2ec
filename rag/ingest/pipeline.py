"""Ingestion: files -> chunks with exact character offsets -> embeddings -> Chroma + BM25.

Incremental by content hash. The order of writes makes a killed ingest safe to re-run: a
changed or new file first loses its manifest record and old chunks, then its new chunks are
stored under deterministic ids, and only then is its manifest record written. A file whose
record is missing is therefore always redone from scratch, never duplicated.

Files are read and chunked only as the embedder reaches them, so memory holds the files of
the batch in flight rather than the corpus; progress is counted in source bytes for the
same reason (a file's chunk count is known once it is read).

Each chunk records its file's path as users see it (``path``): relative to the first folder
among the ingest's ``paths``, then its ``roots`` (the watched folders of single changed
files, the uploads folder), that holds it (``rag.ingest.files.shown_path``). That folder is
known here and nowhere later, so citations never have to show the server's absolute path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.schema import TextNode
from tqdm import tqdm

from rag.config import DEFAULT_WORKSPACE, Settings
from rag.embedding.embedders import Embedder
from rag.index.lexical import sync_lexical
from rag.index.records import WORKSPACE_KEY, FileRecord, vector_sentences
from rag.index.store import Store
from rag.ingest.chunking import (
    Batch,
    ChunkedFile,
    chunk_batches,
    chunk_file,
    embed_text,
    embed_text_offset,
    make_splitter,
    repeated_chunks,
)
from rag.ingest.files import (
    Failure,
    IngestError,
    LoadedFile,
    discover,
    load_file,
    shown_path,
    store_extracted,
)

# (done, total) in bytes of the source files being indexed: a file's chunk count is known
# only once it is read, and files are read one at a time as the embedder reaches them.
ProgressFn = Callable[[int, int], None]


@dataclass
class IngestReport:
    """Counts for the summary line, plus the per-file problems to show the user."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    pruned: int = 0
    failed: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chunks_embedded: int = 0

    def summary(self) -> str:
        return (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.failed)} failed, {self.pruned} pruned; "
            f"{self.chunks_embedded} chunks embedded"
        )


def ingest_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``ingest`` that the settings decide."""
    return {
        "chunk_size": settings.chunk_size,
        "chunk_overlap": settings.chunk_overlap,
        "batch_size": settings.embed_batch_size,
        "late": settings.sentence_vectors == "late",
        "max_file_mb": settings.max_file_mb,
        "max_text_chars": settings.max_text_chars,
    }


def ingest(
    paths: list[Path],
    store: Store,
    embedder: Embedder,
    lexical_root: Path,
    extracted_root: Path,
    *,
    chunk_size: int = 256,
    chunk_overlap: int = 0,
    batch_size: int = 32,
    late: bool = False,
    rebuild: bool = False,
    prune: bool = False,
    progress: ProgressFn | None = None,
    show_progress: bool = True,
    max_file_mb: float | None = None,
    max_text_chars: int = 0,
    added_by: str = "",
    metadata: dict[str, dict[str, Any]] | None = None,
    roots: Sequence[Path] = (),
    workspace: str = DEFAULT_WORKSPACE,
) -> IngestReport:
    """Bring the index in line with ``paths``; returns counts for the summary line.
    ``added_by``: who uploads these files (a folder's re-read keeps its record's);
    ``metadata``: by source, what its chunks also carry (web articles, ``rag.ingest.feeds``);
    paths are shown relative to the folders among ``paths``, then ``roots``; the files go
    to ``workspace`` (a file indexed in another moves: its chunk ids come from its path)."""
    report = IngestReport()
    if rebuild:
        store.drop()
    elif store.count():
        store.check_embedder()
    files, report.failed = discover(paths, max_file_mb=max_file_mb)
    known = store.file_records()
    todo = _changed_files(files, known, report, workspace)
    gone = [source for source in known if not Path(source).exists()] if prune else []
    report.pruned = len(gone)
    stamp = _Stamp(store)
    if gone:
        stamp.renew()
        store.forget_files(gone)
    folders = [path.resolve() for path in [*paths, *roots] if path.is_dir()]
    origin = _Origin(added_by, metadata or {}, folders, workspace)
    chunking = (chunk_size, chunk_overlap)
    chunked = _chunk_files(todo, known, report, extracted_root, chunking, max_text_chars, origin)
    total = sum(_size(path) for path in todo)
    bar = tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc="Indexing",
        disable=not show_progress or not total,
    )
    with bar:
        batches, tracker = chunk_batches(chunked, batch_size), _Progress(total, bar, progress)
        _embed_and_store(batches, store, embedder, late, report, (stamp, workspace), tracker)
    if stamp.renewed:  # and once more after the writes (see rag.index.store)
        store.renew_stamp()
    sync_lexical(store, lexical_root, force=stamp.renewed or rebuild)
    return report


class _Stamp:
    """Renews the store's change stamp once, before the first write of this ingest, so an
    ingest killed half-way still reads as a change; an ingest that changes nothing keeps it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.renewed = False

    def renew(self) -> None:
        if not self.renewed:
            self.store.renew_stamp()
            self.renewed = True


def _changed_files(
    files: list[Path], known: dict[str, FileRecord], report: IngestReport, workspace: str
) -> list[Path]:
    """The files whose bytes or workspace differ from their manifest record; the others count
    as unchanged (not re-read: OCR takes seconds a page)."""
    todo = []
    for path in files:
        if _unchanged(path, _in(known.get(str(path)), workspace)):
            report.unchanged += 1
        else:
            todo.append(path)
    return todo


def _in(record: FileRecord | None, workspace: str) -> FileRecord | None:
    """``record`` if its file is in ``workspace``, else None (the file is then re-indexed)."""
    return record if record is not None and record.workspace == workspace else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass(frozen=True)
class _Origin:
    """Where an ingest's files come from: who uploads them (``added_by``), what each
    source's chunks also carry (``metadata``: web articles), and the ``folders`` their
    paths are shown relative to (``rag.ingest.files.shown_path``), and the ``workspace``
    they go to."""

    added_by: str
    metadata: dict[str, dict[str, Any]]
    folders: list[Path]
    workspace: str


def _chunk_files(
    todo: list[Path],
    known: dict[str, FileRecord],
    report: IngestReport,
    extracted_root: Path,
    chunking: tuple[int, int],
    max_text_chars: int,
    origin: _Origin,
) -> Iterator[ChunkedFile]:
    """Each file loaded and chunked only when the embedder reaches it.

    Memory then holds the text and chunks of the files in the current batch, not the
    corpus's: loading all 94 CIDRE novels before embedding held 62,773 chunk nodes, 390 MB.
    """
    splitter = None  # built on first use: its token counter takes a while to load
    for path in todo:
        loaded = _load_changed(path, known, report, max_text_chars, origin.workspace)
        if loaded is None:
            yield ChunkedFile(None, [], _size(path))
            continue
        loaded.meta = origin.metadata.get(loaded.source, {})
        if loaded.meta.get("date"):  # a feed's or page's own date, not the stored copy's
            loaded.date = str(loaded.meta["date"])
        previous = known.get(loaded.source)
        loaded.added_by = origin.added_by or (previous.added_by if previous else "")
        loaded.path = str(loaded.meta.get("url") or "") or shown_path(path, origin.folders)
        store_extracted(loaded, extracted_root)
        if splitter is None:
            splitter = make_splitter(*chunking)
        nodes = chunk_file(loaded, splitter, extracted_root)
        if repeated := repeated_chunks(nodes):
            report.notes.append(f"{path}: {repeated} chunks repeat earlier text; stored once")
        yield ChunkedFile(loaded, nodes, _size(path))


def _load_changed(
    path: Path,
    known: dict[str, FileRecord],
    report: IngestReport,
    max_text_chars: int,
    workspace: str,
) -> LoadedFile | None:
    """``path`` loaded if its content is new or changed (counted as added or updated), else
    None (counted as unchanged, or reported as failed)."""
    try:
        loaded = load_file(path, max_text_chars)
    except IngestError as exc:
        report.failed.append(Failure(str(path), str(exc).removeprefix(f"{path}: ")))
        return None
    if loaded.encoding == "latin-1":  # PDFs report "pdf": no note for them
        report.notes.append(f"{path}: not valid UTF-8, read as {loaded.encoding}")
    previous = known.get(loaded.source)
    if previous and previous.sha256 == loaded.sha256 and previous.workspace == workspace:
        report.unchanged += 1
        return None
    if previous:
        report.updated += 1
    else:
        report.added += 1
    return loaded


def _unchanged(path: Path, previous: FileRecord | None) -> bool:
    """Whether ``path`` still has the content it was indexed with (False if unreadable)."""
    if previous is None:
        return False
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest() == previous.sha256
    except OSError:
        return False  # load_file reports it


# Chunk vectors, the chunks' sentence records and the sentences' vectors.
Embedded = tuple[np.ndarray, list[tuple[str, str, dict]], np.ndarray]


def embed_batch(batch: list[TextNode], embedder: Embedder, late: bool) -> Embedded:
    """Vectors for a batch of chunks, and their sentences with theirs.

    With ``late`` and an embedder that has token states, a sentence's vector is the mean
    of its tokens' states in its chunk's pass ("late chunking"): every token is embedded
    once, where embedding each sentence again used to more than double the work. Otherwise
    the sentences are embedded on their own, in the same call as the chunks.
    """
    if not batch:  # a batch of failed or unchanged files only
        empty = np.zeros((0, embedder.dim), np.float32)
        return empty, [], empty
    texts = [embed_text(node) for node in batch]
    per_node = [vector_sentences(node) for node in batch]
    sentences = [rec for recs in per_node for rec in recs]
    states = embedder.passage_states(texts) if late else None
    if states is None:
        vectors = embedder.embed_passages(texts + [text for _, text, _ in sentences])
        return vectors[: len(batch)], sentences, vectors[len(batch) :]
    pooled: list[np.ndarray | None] = []
    for node, node_states, recs in zip(batch, states, per_node, strict=True):
        shift = embed_text_offset(node) - node.metadata["start"]
        pooled += [  # a table row is embedded as its labelled text, not pooled as written
            None if "quote" in m else node_states.pool(m["start"] + shift, m["end"] + shift)
            for _, _, m in recs
        ]
    missing = [i for i, vec in enumerate(pooled) if vec is None]
    if missing:  # table rows, or no token of the sentence made it into the pass
        found = embedder.embed_passages([sentences[i][1] for i in missing])
        for i, vec in zip(missing, found, strict=True):
            pooled[i] = vec
    chunk_vectors = np.stack([node_states.pooled for node_states in states])
    sentence_vectors = np.stack(pooled) if pooled else np.zeros((0, embedder.dim), np.float32)
    return chunk_vectors, sentences, sentence_vectors


class _Progress:
    """Source bytes indexed, for the terminal bar and the caller's callback (the chat's bar)."""

    def __init__(self, total: int, bar: tqdm, callback: ProgressFn | None) -> None:
        self.total, self.done, self.bar, self.callback = total, 0, bar, callback

    def advance(self, count: int, chunks: int) -> None:
        self.done += count
        self.bar.update(count)
        self.bar.set_postfix_str(f"{chunks} chunks", refresh=False)
        if self.callback and self.total:  # files of 0 bytes fail as empty: nothing to show
            self.callback(self.done, self.total)


def _embed_and_store(
    batches: Iterable[Batch],
    store: Store,
    embedder: Embedder,
    late: bool,
    report: IngestReport,
    target: tuple[_Stamp, str],
    progress: _Progress,
) -> None:
    """Embed chunks and their sentences batch by batch; record each file once it is whole.

    One store thread writes batch k while this thread embeds batch k + 1 (ONNX Runtime
    releases the GIL): the Chroma writes took 7 % of a PIAF ingest (1.4 of 19.6 s) on top
    of the embedding. Writes stay in order, one batch in flight, so the write order the
    module docstring relies on holds; progress is reported here, once a batch is stored.
    """

    def stored(write: Future[None], batch: Batch) -> None:
        write.result()  # a failed write raises here, before anything else is embedded
        report.chunks_embedded += len(batch.nodes)
        progress.advance(batch.progress, report.chunks_embedded)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rag-store") as writer:
        in_flight: tuple[Future[None], Batch] | None = None
        for batch in batches:
            embedded = embed_batch(batch.nodes, embedder, late)
            if in_flight:
                stored(*in_flight)
            in_flight = writer.submit(_store_batch, store, batch, embedded, target), batch
        if in_flight:
            stored(*in_flight)


def _store_batch(
    store: Store, batch: Batch, embedded: Embedded, target: tuple[_Stamp, str]
) -> None:
    """Old chunks of the files starting here, then the new chunks, their sentences, and
    the records of the files this batch completes, each labelled with the workspace."""
    stamp, workspace = target
    if batch.starting:
        stamp.renew()
        store.forget_files(batch.starting)
    vectors, sentences, sentence_vectors = embedded
    if batch.nodes:
        for node, vec in zip(batch.nodes, vectors, strict=True):
            node.embedding = vec.tolist()
            node.metadata[WORKSPACE_KEY] = workspace
        store.add_chunks(batch.nodes)
        for node in batch.nodes:  # a file's nodes live until its last batch; vectors need not:
            node.embedding = None  # 384 Python floats, 12 KB a chunk
    if sentences:
        ids, texts, metas = map(list, zip(*sentences, strict=True))
        metas = [{**meta, WORKSPACE_KEY: workspace} for meta in metas]
        store.add_sentences(ids, texts, sentence_vectors.tolist(), metas)
    store.record_files([replace(rec, workspace=workspace) for rec in batch.finished])
