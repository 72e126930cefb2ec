"""Chunking: a loaded file's parts cut into chunks whose character spans are verified.

Every chunk's ``[start, end)`` is checked against its part's text (a chunk whose text cannot
be found verbatim is dropped), so every citation built from it points at real characters.
Chunks are grouped into embedding batches across files, pulled from the files only as the
embedder reaches them.

Exact repeats inside one file are indexed once (``drop_repeats``): a repeated chunk is not
stored, a repeated sentence gets no vector and is never scored.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llama_index.core import Document
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import TextNode

from rag.documents.dates import date_int
from rag.documents.formats import Sections
from rag.index.records import FileRecord, node_sentences
from rag.ingest.files import LoadedFile
from rag.text import split_sentences

# Bookkeeping a retrieved chunk carries but neither the embedder nor the LLM should read;
# "path" is the file as users see it (``rag.ingest.files.shown_path``); "headings" are the
# (offset, title) pairs of the headings inside the chunk, as JSON, so a sentence's section
# is known from its chunk alone (the answer step cuts short ones again). "repeats" lists, as
# JSON, the chunk's sentences that repeat earlier text of the file, and "copies" counts a
# chunk's exact repeats in the file (``drop_repeats``). "rows" lists, as
# JSON, the table rows inside the chunk with their header-labelled text (``Part.rows``).
_INTERNAL_KEYS = (
    "source",
    "path",
    "start",
    "end",
    "file_sha256",
    "text_ref",
    "headings",
    "repeats",
    "copies",
    "rows",
    "date_int",
    "added_by",
)


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
            rows = [[r.start, r.end, r.labelled] for r in part.rows if start <= r.start < end]
            rows = [row for row in rows if row[1] <= end]
            nodes.append(
                TextNode(
                    id_=file_chunk_id(loaded, len(nodes)),
                    text=part.text[start:end],
                    start_char_idx=start,
                    end_char_idx=end,
                    metadata={
                        "source": loaded.source,
                        "path": loaded.path or Path(loaded.source).name,
                        "title": loaded.title,
                        "line": part.text.count("\n", 0, start) + 1,
                        "start": start,
                        "end": end,
                        "file_sha256": loaded.sha256,
                        **document_keys(loaded),
                        **where,
                        **({"section": section} if section else {}),
                        **({"headings": json.dumps(inner)} if inner else {}),
                        **({"rows": json.dumps(rows, ensure_ascii=False)} if rows else {}),
                        **loaded.meta,
                    },
                    excluded_embed_metadata_keys=[
                        *_INTERNAL_KEYS,
                        "date",
                        "line",
                        "page",
                        "section",
                        "ocr",
                    ],
                    excluded_llm_metadata_keys=list(_INTERNAL_KEYS),
                )
            )
    return drop_repeats(nodes)


def document_keys(loaded: LoadedFile) -> dict[str, str | int]:
    """What every chunk of a file says about its document: its date, as shown and as a
    number for range filters, and who uploaded it; no date key for a file without one."""
    keys: dict[str, str | int] = {"added_by": loaded.added_by}
    if loaded.date:
        keys.update(date=loaded.date, date_int=date_int(loaded.date))
    return keys


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
        for j, (_, _, text, _) in enumerate(node_sentences(node)):
            if text in seen:
                repeats.append(j)
            seen.add(text)
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
        batch.finished.append(file_record(loaded, count))
    if batch.nodes or batch.starting or batch.finished or batch.progress:
        yield batch


def file_record(loaded: LoadedFile, chunks: int) -> FileRecord:
    """The manifest record of a file whose ``chunks`` are all stored, indexed now."""
    return FileRecord(
        loaded.source,
        loaded.sha256,
        chunks,
        loaded.title,
        loaded.date,
        loaded.size,
        loaded.added_by,
        time.time(),
        loaded.path,
    )


def embed_text(node: TextNode) -> str:
    """What the embedder sees: the document title, then the chunk."""
    return f"{node.metadata['title']}\n{node.text}"


def embed_text_offset(node: TextNode) -> int:
    """Where the chunk's own text starts in ``embed_text(node)``."""
    return len(node.metadata["title"]) + 1
