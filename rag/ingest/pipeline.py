"""Ingestion: files -> chunks with exact character offsets -> embeddings -> Chroma + BM25.

Incremental by content hash. The order of writes makes a killed ingest safe to re-run: a
changed or new file first loses its manifest record and old chunks, then its new chunks are
stored under deterministic ids, and only then is its manifest record written. A file whose
record is missing is therefore always redone from scratch, never duplicated.

Files are read and chunked only as the embedder reaches them, so memory holds the files of
the batch in flight rather than the corpus; progress is counted in source bytes for the
same reason (a file's chunk count is known once it is read).

Exact repeats inside one file are indexed once (``drop_repeats``): a repeated chunk is not
stored, a repeated sentence gets no vector and is never scored.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from llama_index.core import Document
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import TextNode
from tqdm import tqdm

from rag.documents.formats import (
    SUPPORTED_LABEL,
    SUPPORTED_SUFFIXES,
    FormatError,
    Part,
    Sections,
    extract,
    is_temporary,
)
from rag.embedding.embedders import Embedder
from rag.errors import RagError
from rag.index.lexical import sync_lexical
from rag.index.store import FileRecord, Store

# Bookkeeping a retrieved chunk carries but neither the embedder nor the LLM should read;
# "headings" are the (offset, title) pairs of the headings inside the chunk, as JSON, so a
# sentence's section is known from its chunk alone (the answer step cuts short ones again).
# "repeats" lists, as JSON, the chunk's sentences that repeat earlier text of the file, and
# "copies" counts a chunk's exact repeats in the file (``drop_repeats``).
_INTERNAL_KEYS = (
    "source",
    "start",
    "end",
    "file_sha256",
    "text_ref",
    "headings",
    "repeats",
    "copies",
)
_TITLE_MAX = 200
MB = 1024 * 1024
_UPLOAD_NAME_MAX = 200

# (done, total) in bytes of the source files being indexed: a file's chunk count is known
# only once it is read, and files are read one at a time as the embedder reaches them.
ProgressFn = Callable[[int, int], None]

# Sentence boundaries: end punctuation (optionally closed by a quote or bracket) and then
# whitespace, or a line break. Offsets matter more than linguistic finesse here.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[»\"”’)\]]*\s+|\n+")
# Sentences shorter than this are stored without a vector of their own: they never rank
# chunks (titles and fragments such as "Biographie" match too many questions), and in
# novels they are 35 % of the sentences (CIDRE: dialogue, "— Oui."), about 0.8 GB of the
# whole corpus's index in memory. The answer step embeds the few of its top chunks when it
# needs them (``rag.retrieval.hybrid.HybridRetriever.score_sentences``).
MIN_VECTOR_SENTENCE_CHARS = 30


class IngestError(RagError):
    """A file that cannot be indexed; the message names it and says why."""


@dataclass
class LoadedFile:
    """A source file turned into the text parts its citations will point into."""

    source: str
    parts: list[Part]
    sha256: str
    encoding: str

    @property
    def title(self) -> str:
        lines = (line.strip().lstrip("#").strip() for line in self.parts[0].text.splitlines())
        return next((line for line in lines if line), "")[:_TITLE_MAX] or Path(self.source).name

    def text_ref(self, part: Part, root: Path) -> Path:
        """Where an extracted part's text is stored (PDF pages, HTML/Word/ODT text)."""
        name = f"page-{part.page:05d}.txt" if part.page else "text.txt"
        return root / self.sha256[:24] / name


class Failure(NamedTuple):
    """A file (or upload name) that was not indexed, and why, for a ``failed:`` line."""

    path: str
    reason: str


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


def load_file(path: Path, max_text_chars: int = 0) -> LoadedFile:
    """Read, hash and extract one file, turning OS and format problems into ``IngestError``.

    A file yielding over ``max_text_chars`` characters of text (0: no limit) is refused as
    too large, before the rest of it is extracted (``rag.documents.formats.extract``).
    """
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise IngestError(f"{path}: unsupported file type (supported: {SUPPORTED_LABEL})")
    try:
        data = path.read_bytes()
        parts, encoding = extract(suffix, data, max_text_chars)
    except OSError as exc:
        raise IngestError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except FormatError as exc:
        raise IngestError(f"{path}: {exc}") from None
    except ImportError as exc:
        raise IngestError(f"{path}: {missing_dependency(exc)}") from None
    except Exception as exc:  # a format library's crash costs this file, never the run
        raise IngestError(f"{path}: cannot extract text ({one_line(exc)})") from None
    parts = [part for part in parts if part.text.strip()]
    if not parts:
        raise IngestError(f"{path}: empty file")
    return LoadedFile(str(path.resolve()), parts, hashlib.sha256(data).hexdigest(), encoding)


def one_line(exc: BaseException) -> str:
    """An exception as one short line for a ``failed:`` report (type, then first line)."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def missing_dependency(exc: ImportError) -> str:
    """Why a format library could not load, naming the package to install.

    Some libraries raise ``ImportError`` themselves with the package in the message
    (lxml: "lxml.html.clean module is now a separate project lxml_html_clean"), others
    leave only the module name, whose top-level package is what pip installs.
    """
    package = exc.name.split(".")[0] if exc.name else None
    fix = f"`pip install {package}`" if package else "the package it names"
    return (
        f"missing dependency ({one_line(exc)}); install {fix} or reinstall the project "
        "with `pip install -e .`"
    )


def store_extracted(loaded: LoadedFile, root: Path) -> None:
    """Keep the extracted text of PDF/HTML/Word/ODT parts: their citations point into it."""
    for part in loaded.parts:
        if part.extracted:
            target = loaded.text_ref(part, root)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_text(part.text, encoding="utf-8")
            os.replace(tmp, target)


def too_large(size: int, max_file_mb: float | None) -> str | None:
    """Why a file of ``size`` bytes is refused under the limit, or None when it fits."""
    if not max_file_mb or max_file_mb <= 0 or size <= max_file_mb * MB:
        return None
    mb = size / MB
    shown = f"{mb:.1f}" if mb >= 1 else f"{mb:.2g}"
    return f"too large ({shown} MB > {max_file_mb:g} MB limit, RAG_MAX_FILE_MB)"


def discover(
    paths: Iterable[Path], *, max_file_mb: float | None = None
) -> tuple[list[Path], list[Failure]]:
    """Supported files under ``paths`` (sorted, deduplicated) and the paths that failed.

    Editors' temporary files inside folders are skipped (``rag.documents.formats.is_temporary``).
    Folders are walked without following directory symlinks (a link to a parent cannot
    loop); file symlinks are followed and deduplicated by their resolved path. Files over
    ``max_file_mb`` are reported as failed without being read.
    """
    found: dict[Path, None] = {}
    failed: list[Failure] = []
    for path in paths:
        if not path.exists():
            failed.append(Failure(str(path), "no such file or directory"))
        elif path.is_dir():
            for sub in sorted(path.rglob("*")):
                if (
                    sub.is_file()
                    and sub.suffix.lower() in SUPPORTED_SUFFIXES
                    and not is_temporary(sub.name)
                ):
                    found[sub.resolve()] = None
        else:
            found[path.resolve()] = None
    files: list[Path] = []
    for path in found:
        try:
            reason = too_large(path.stat().st_size, max_file_mb)
        except OSError:
            reason = None  # load_file reports an unreadable file with its OS error
        if reason:
            failed.append(Failure(str(path), reason))
        else:
            files.append(path)
    return files, failed


def sentence_spans(text: str, offset: int = 0) -> list[tuple[int, int]]:
    """``(start, end)`` of each non-blank sentence of ``text``, shifted by ``offset``."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for match in _SENTENCE_END.finditer(text):
        _append_trimmed(spans, text, pos, match.start(), offset)
        pos = match.end()
    _append_trimmed(spans, text, pos, len(text), offset)
    return spans


def _append_trimmed(
    spans: list[tuple[int, int]], text: str, start: int, end: int, offset: int
) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if stripped:
        lead = len(piece) - len(piece.lstrip())
        spans.append((offset + start + lead, offset + start + lead + len(stripped)))


def safe_upload_path(folder: Path, name: str) -> Path:
    """Where an uploaded file may be saved: its base name only, inside ``folder``.

    ``../../etc/passwd`` becomes ``folder/passwd``; names that reduce to nothing or to a
    hidden file are refused, so an upload can never write outside the upload folder.
    """
    base = re.sub(r"[^\w.\- ]", "_", Path(name.replace("\\", "/")).name).strip(" .")
    if not base:
        raise IngestError(f"{name!r}: not a usable file name")
    stem, suffix = os.path.splitext(base)
    if len(base.encode()) > _UPLOAD_NAME_MAX:  # file systems allow 255 bytes per name
        keep = _UPLOAD_NAME_MAX - len(suffix.encode())
        base = stem.encode()[:keep].decode(errors="ignore").rstrip(" .") + suffix
    return folder / base


def save_uploads(
    folder: Path, uploads: list[tuple[str, bytes]], max_file_mb: float | None
) -> tuple[list[Path], list[Failure]]:
    """Save uploaded files (name, bytes) under ``folder``: the paths saved, and the failures.

    Names are reduced to a safe base name (``safe_upload_path``); unsupported types and files
    over the size limit are refused before anything is written.
    """
    saved: list[Path] = []
    failed: list[Failure] = []
    for name, data in uploads:
        try:
            saved.append(save_upload(folder, name, data, max_file_mb))
        except IngestError as exc:
            failed.append(Failure(name, str(exc).removeprefix(f"{name}: ")))
        except OSError as exc:
            failed.append(Failure(name, f"cannot save ({exc.strerror or exc})"))
    return saved, failed


def save_upload(folder: Path, name: str, data: bytes, max_file_mb: float | None) -> Path:
    """Write one upload where ``safe_upload_path`` says, or raise ``IngestError`` saying why.

    Written beside, then renamed: a symlink planted at the target is replaced, never written
    through, and a half-written upload is never indexed.
    """
    path = safe_upload_path(folder, name)
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise IngestError(f"{name}: unsupported file type (supported: {SUPPORTED_LABEL})")
    reason = too_large(len(data), max_file_mb)
    if reason:
        raise IngestError(f"{name}: {reason}")
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    os.replace(partial, path)
    return path


def file_chunk_id(loaded: LoadedFile, index: int) -> str:
    """Deterministic id: a re-run rewrites the same ids; new content gets new ones."""
    path_hash = hashlib.sha1(loaded.source.encode()).hexdigest()[:16]
    return f"{path_hash}-{loaded.sha256[:12]}-{index:06d}"


def make_splitter(chunk_size: int, chunk_overlap: int) -> SentenceSplitter:
    """Paragraph-first sentence splitter; one line is one paragraph in our corpora.

    Its sentence step is ours (``split_sentences``), not NLTK's Punkt: chunks then end on
    the same boundaries as the sentences we index and cite, and an ingest no longer pays
    the 2.0-2.4 s of importing NLTK (and SciPy, which it pulls in) on its first long
    paragraph. Measured on the 1,518 PIAF passages: the same 1,717 chunks, 7 passages cut
    at another place, chunking 0.34 s instead of 2.0 s.
    """
    return SentenceSplitter(
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        paragraph_separator="\n",
        chunking_tokenizer_fn=split_sentences,
    )


def split_sentences(text: str) -> list[str]:
    """``text`` cut after each sentence end, whitespace kept: the pieces join back to it."""
    cuts = [m.end() for m in _SENTENCE_END.finditer(text) if 0 < m.end() < len(text)]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def chunk_file(loaded: LoadedFile, splitter: SentenceSplitter, root: Path) -> list[TextNode]:
    """Split each part into nodes whose ``[start, end)`` is verified against the part text."""
    nodes: list[TextNode] = []
    for part in loaded.parts:
        sections = Sections(part.headings)
        where: dict[str, int | str | bool] = {"page": part.page} if part.page else {}
        if part.extracted:
            where["text_ref"] = str(loaded.text_ref(part, root))
        if part.ocr:
            where["ocr"] = True
        for start, end in _chunk_spans(part.text, splitter):
            section = sections.at(start)
            inner = [[at, title] for at, title in part.headings if start < at < end]
            nodes.append(
                TextNode(
                    id_=file_chunk_id(loaded, len(nodes)),
                    text=part.text[start:end],
                    start_char_idx=start,
                    end_char_idx=end,
                    metadata={
                        "source": loaded.source,
                        "title": loaded.title,
                        "line": part.text.count("\n", 0, start) + 1,
                        "start": start,
                        "end": end,
                        "file_sha256": loaded.sha256,
                        **where,
                        **({"section": section} if section else {}),
                        **({"headings": json.dumps(inner)} if inner else {}),
                    },
                    excluded_embed_metadata_keys=[
                        *_INTERNAL_KEYS,
                        "line",
                        "page",
                        "section",
                        "ocr",
                    ],
                    excluded_llm_metadata_keys=list(_INTERNAL_KEYS),
                )
            )
    return drop_repeats(nodes)


def drop_repeats(nodes: list[TextNode]) -> list[TextNode]:
    """One file's chunks with exact repeats kept once: a repeated chunk is dropped (its
    first copy counts it in ``copies``) and a repeated sentence gets no vector or score
    (its chunk lists it in ``repeats``).

    2,300 identical lines in one file were 2,300 identical vectors: they filled the
    nearest-neighbour candidates, hid the other documents, and their ties were broken
    differently in each process (an answer in 1 of 4 runs). Kept once, they rank once.
    """
    kept: dict[str, TextNode] = {}
    seen: set[str] = set()
    for node in nodes:
        first = kept.get(node.text)
        if first is not None:
            first.metadata["copies"] = first.metadata.get("copies", 1) + 1
            continue
        kept[node.text] = node
        repeats = []
        for j, (start, end) in enumerate(sentence_spans(node.text)):
            if node.text[start:end] in seen:
                repeats.append(j)
            seen.add(node.text[start:end])
        if repeats:
            node.metadata["repeats"] = json.dumps(repeats)
    return list(kept.values())


def repeated_chunks(nodes: list[TextNode]) -> int:
    """How many chunks ``drop_repeats`` left out of these (for the ingest note)."""
    return sum(node.metadata.get("copies", 1) - 1 for node in nodes)


def _chunk_spans(text: str, splitter: SentenceSplitter) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of the splitter's chunks, located in ``text`` and checked."""
    cursor = 0
    for node in splitter.get_nodes_from_documents([Document(text=text)]):
        start = node.start_char_idx
        if start is None or text[start : start + len(node.text)] != node.text:
            start = text.find(node.text, cursor)
        if start < 0:  # the splitter rewrote whitespace: no verifiable span, skip it
            continue
        cursor = start + 1
        yield start, start + len(node.text)


@dataclass
class ChunkedFile:
    """One file's chunks as the embedder reaches it; ``loaded`` is None when the file
    failed or turned out unchanged, and then only its ``size`` (progress) counts."""

    loaded: LoadedFile | None
    nodes: list[TextNode]
    size: int


@dataclass
class Batch:
    """Chunks embedded and stored together, with the bookkeeping of the files they touch.

    ``starting``: files whose first chunk (or empty record) is here: their old chunks go
    before this batch is written. ``finished``: files whose last chunk is here: their
    manifest records go after it. ``progress``: source bytes this batch completes.
    """

    nodes: list[TextNode] = field(default_factory=list)
    starting: list[str] = field(default_factory=list)
    finished: list[FileRecord] = field(default_factory=list)
    progress: int = 0


def chunk_batches(files: Iterable[ChunkedFile], size: int) -> Iterator[Batch]:
    """Batches of ``size`` chunks across files, pulled from ``files`` only as needed."""
    batch = Batch()
    for item in files:
        if item.loaded is None:
            batch.progress += item.size
            continue
        batch.starting.append(item.loaded.source)
        count = len(item.nodes)
        for i, node in enumerate(item.nodes):
            batch.nodes.append(node)
            batch.progress += item.size * (i + 1) // count - item.size * i // count
            if len(batch.nodes) == size:
                yield batch
                batch = Batch()
        if not count:
            batch.progress += item.size
        loaded = item.loaded
        batch.finished.append(FileRecord(loaded.source, loaded.sha256, count, loaded.title))
    if batch.nodes or batch.starting or batch.finished or batch.progress:
        yield batch


def embed_text(node: TextNode) -> str:
    """What the embedder sees: the document title, then the chunk."""
    return f"{node.metadata['title']}\n{node.text}"


def embed_text_offset(node: TextNode) -> int:
    """Where the chunk's own text starts in ``embed_text(node)``."""
    return len(node.metadata["title"]) + 1


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
) -> IngestReport:
    """Bring the index in line with ``paths``; returns counts for the summary line."""
    report = IngestReport()
    if rebuild:
        store.drop()
    elif store.count():
        store.check_embedder()
    files, report.failed = discover(paths, max_file_mb=max_file_mb)
    known = store.file_records()
    todo = _changed_files(files, known, report)
    gone = [source for source in known if not Path(source).exists()] if prune else []
    report.pruned = len(gone)
    stamp = _Stamp(store)
    if gone:
        stamp.renew()
        store.forget_files(gone)
    chunked = _chunk_files(
        todo, known, report, extracted_root, (chunk_size, chunk_overlap), max_text_chars
    )
    total = sum(_size(path) for path in todo)
    bar = tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc="Indexing",
        disable=not show_progress or not total,
    )
    with bar:
        _embed_and_store(
            chunk_batches(chunked, batch_size),
            store,
            embedder,
            late,
            report,
            stamp,
            _Progress(total, bar, progress),
        )
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
    files: list[Path], known: dict[str, FileRecord], report: IngestReport
) -> list[Path]:
    """The files whose bytes differ from their manifest record; the others count as unchanged
    (not re-read: OCR takes seconds a page)."""
    todo = []
    for path in files:
        if _unchanged(path, known.get(str(path))):
            report.unchanged += 1
        else:
            todo.append(path)
    return todo


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _chunk_files(
    todo: list[Path],
    known: dict[str, FileRecord],
    report: IngestReport,
    extracted_root: Path,
    chunking: tuple[int, int],
    max_text_chars: int,
) -> Iterator[ChunkedFile]:
    """Each file loaded and chunked only when the embedder reaches it.

    Memory then holds the text and chunks of the files in the current batch, not the
    corpus's: loading all 94 CIDRE novels before embedding held 62,773 chunk nodes, 390 MB.
    """
    splitter = None  # built on first use: its token counter takes a while to load
    for path in todo:
        loaded = _load_changed(path, known, report, max_text_chars)
        if loaded is None:
            yield ChunkedFile(None, [], _size(path))
            continue
        store_extracted(loaded, extracted_root)
        if splitter is None:
            splitter = make_splitter(*chunking)
        nodes = chunk_file(loaded, splitter, extracted_root)
        if repeated := repeated_chunks(nodes):
            report.notes.append(f"{path}: {repeated} chunks repeat earlier text; stored once")
        yield ChunkedFile(loaded, nodes, _size(path))


def _load_changed(
    path: Path, known: dict[str, FileRecord], report: IngestReport, max_text_chars: int
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
    if previous and previous.sha256 == loaded.sha256:
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


def sentence_records(node: TextNode) -> list[tuple[str, str, dict]]:
    """(id, text, metadata) for each sentence of a chunk, with absolute offsets; a sentence
    repeating earlier text of its file is left out (``drop_repeats``).

    A heading inside the chunk (its ``headings`` metadata) starts a new section for the
    sentences after it; the others are in the chunk's section.
    """
    meta = node.metadata
    inner = Sections(tuple(map(tuple, json.loads(meta.get("headings", "[]")))))
    repeats = set(json.loads(meta.get("repeats", "[]")))
    out = []
    for j, (start, end) in enumerate(sentence_spans(node.text, meta["start"])):
        if j in repeats:  # the file's first copy of this sentence stands for it
            continue
        local = start - meta["start"]
        text = node.text[local : end - meta["start"]]
        line = meta["line"] + node.text.count("\n", 0, local)
        carried = {key: meta[key] for key in ("page", "text_ref", "ocr") if key in meta}
        section = inner.at(start) or meta.get("section")
        if section:
            carried["section"] = section
        out.append(
            (
                f"{node.id_}-s{j:03d}",
                text,
                {
                    "source": meta["source"],
                    "chunk_id": node.id_,
                    "start": start,
                    "end": end,
                    "line": line,
                    "chars": end - start,
                    **carried,
                },
            )
        )
    return out


# Chunk vectors, the chunks' sentence records and the sentences' vectors.
Embedded = tuple[np.ndarray, list[tuple[str, str, dict]], np.ndarray]


def has_vector(meta: dict) -> bool:
    """Whether a sentence with this record metadata gets a stored vector (long enough)."""
    return meta["chars"] >= MIN_VECTOR_SENTENCE_CHARS


def vector_sentences(node: TextNode) -> list[tuple[str, str, dict]]:
    """The sentence records of a chunk that get a stored vector."""
    return [rec for rec in sentence_records(node) if has_vector(rec[2])]


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
        pooled += [node_states.pool(m["start"] + shift, m["end"] + shift) for _, _, m in recs]
    missing = [i for i, vec in enumerate(pooled) if vec is None]
    if missing:  # no token of the sentence made it into the pass (cannot happen with E5)
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
    stamp: _Stamp,
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
            in_flight = writer.submit(_store_batch, store, batch, embedded, stamp), batch
        if in_flight:
            stored(*in_flight)


def _store_batch(store: Store, batch: Batch, embedded: Embedded, stamp: _Stamp) -> None:
    """Old chunks of the files starting here, then the new chunks, their sentences, and
    the records of the files this batch completes."""
    if batch.starting:
        stamp.renew()
        store.forget_files(batch.starting)
    vectors, sentences, sentence_vectors = embedded
    if batch.nodes:
        for node, vec in zip(batch.nodes, vectors, strict=True):
            node.embedding = vec.tolist()
        store.add_chunks(batch.nodes)
        for node in batch.nodes:  # a file's nodes live until its last batch; vectors need not:
            node.embedding = None  # 384 Python floats, 12 KB a chunk
    if sentences:
        ids, texts, metas = map(list, zip(*sentences, strict=True))
        store.add_sentences(ids, texts, sentence_vectors.tolist(), metas)
    store.record_files(batch.finished)
