"""The shapes of what the index stores: chunk and sentence records, file records, hits.

A sentence record's ``start``/``end`` are absolute offsets in its part's text, so a citation
made from it is verifiable against the source; the ingest writes these records and retrieval
reads them, and both take the shape from here. Imports nothing heavy (a chunk is only read
through ``.metadata``, ``.text`` and ``.id_``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import DEFAULT_WORKSPACE
from rag.documents.citations import document_id
from rag.documents.formats import Sections
from rag.text import sentence_spans

if TYPE_CHECKING:
    from llama_index.core.schema import TextNode

# Sentences shorter than this are stored without a vector of their own: they never rank
# chunks (titles and fragments such as "Biographie" match too many questions), and in
# novels they are 35 % of the sentences (CIDRE: dialogue, "— Oui."), about 0.8 GB of the
# whole corpus's index in memory. The answer step embeds the few of its top chunks when it
# needs them (``rag.retrieval.hybrid.HybridRetriever.score_sentences``).
MIN_VECTOR_SENTENCE_CHARS = 30
# Chunk metadata each of its sentences carries, so a filter reads the same keys on both:
# where the text is and the path users see, for its citation; a web article's page, outlet and date
# (``rag.ingest.feeds``); the date and workspace the filters read.
SENTENCE_CARRIED = (
    "page",
    "text_ref",
    "ocr",
    "path",
    "url",
    "outlet",
    "date",
    "date_int",
    "workspace",
)
# The metadata key naming the workspace of a chunk, a sentence and a manifest record; a
# record without it (indexed before workspaces existed) is in ``DEFAULT_WORKSPACE``.
WORKSPACE_KEY = "workspace"


@dataclass(frozen=True)
class Hit:
    """A stored record near a question vector: its id, cosine similarity and metadata."""

    id: str
    similarity: float
    meta: dict[str, Any]


@dataclass(frozen=True)
class Stored:
    """A stored chunk or sentence: its id, text, metadata and (when asked for) vector."""

    id: str
    text: str
    meta: dict[str, Any]
    vector: Any = None


@dataclass(frozen=True)
class FileRecord:
    """What the manifest knows about one ingested file (the documents list shows it).

    ``date`` is the document's own (``rag.documents.dates``); ``added_by`` who uploaded it
    ("" for a file ingested from a folder), ``added_at`` when this version was indexed
    (seconds since the epoch); ``size`` its bytes; ``path`` the file as users know it
    (``rag.ingest.files.shown_path``: relative to its indexed folder, or a web page's URL).
    Records written before these existed read as "" and 0: unknown.
    """

    source: str
    sha256: str
    chunks: int
    title: str
    date: str = ""
    size: int = 0
    added_by: str = ""
    added_at: float = 0.0
    path: str = ""
    workspace: str = DEFAULT_WORKSPACE

    @property
    def id(self) -> str:
        """The document's public id (``document_id`` of its source path)."""
        return document_id(self.source)

    def to_json(self) -> dict[str, Any]:
        """The documents list's entry: id, title, source, date, type, size, chunks, who
        added it and when (ISO 8601, UTC; None when unknown)."""
        added = datetime.fromtimestamp(self.added_at, UTC) if self.added_at else None
        return {
            "id": self.id,
            "title": self.title,
            "source": self.path or Path(self.source).name,  # never a server path
            "date": self.date or None,
            "type": Path(self.source).suffix.lstrip(".").lower(),
            "size": self.size,
            "chunks": self.chunks,
            "added_by": self.added_by,
            "added_at": added.isoformat(timespec="seconds") if added else None,
        }


def sentence_records(node: TextNode) -> list[tuple[str, str, dict]]:
    """(id, text, metadata) for each sentence of a chunk, with absolute offsets; a sentence
    repeating earlier text of its file is left out (``rag.ingest.chunking.drop_repeats``).

    A heading inside the chunk (its ``headings`` metadata) starts a new section for the
    sentences after it; the others are in the chunk's section. A table row's text is its
    labelled cells and its ``quote`` the row as written (``node_sentences``).
    """
    meta = node.metadata
    inner = Sections(tuple(map(tuple, json.loads(meta.get("headings", "[]")))))
    repeats = set(json.loads(meta.get("repeats", "[]")))
    out = []
    for j, (start, end, text, quote) in enumerate(node_sentences(node)):
        if j in repeats:  # the file's first copy of this sentence stands for it
            continue
        local = start - meta["start"]
        line = meta["line"] + node.text.count("\n", 0, local)
        carried = {key: meta[key] for key in SENTENCE_CARRIED if key in meta}
        section = inner.at(start) or meta.get("section")
        if section:
            carried["section"] = section
        if quote is not None:
            carried["quote"] = quote
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
                    "chars": len(text),
                    **carried,
                },
            )
        )
    return out


def node_sentences(node: TextNode) -> list[tuple[int, int, str, str | None]]:
    """``(start, end, text, quote)`` of each sentence of a chunk (absolute offsets).

    A table row inside the chunk (its ``rows`` metadata, ``rag.documents.formats.Row``) is
    one sentence whose text is the row labelled by its header, and whose ``quote`` is the
    row as written, what a citation shows; other sentences have ``quote`` None.
    """
    offset = node.metadata["start"]
    rows = [tuple(row) for row in json.loads(node.metadata.get("rows", "[]"))]
    found: list[tuple[int, int, str, str | None]] = [
        (start, end, node.text[start - offset : end - offset], None)
        for start, end in sentence_spans(node.text, offset)
        if not any(r_start <= start < r_end for r_start, r_end, _ in rows)
    ]
    for start, end, labelled in rows:
        found.append((start, end, labelled, node.text[start - offset : end - offset]))
    return sorted(found)


def has_vector(meta: dict) -> bool:
    """Whether a sentence with this record metadata gets a stored vector (long enough)."""
    return meta["chars"] >= MIN_VECTOR_SENTENCE_CHARS


def vector_sentences(node: TextNode) -> list[tuple[str, str, dict]]:
    """The sentence records of a chunk that get a stored vector."""
    return [rec for rec in sentence_records(node) if has_vector(rec[2])]


def document_refs(records: Iterable[FileRecord], extracted: Path) -> list[str]:
    """Every text the citations of these files can point into: a plain text or Markdown file
    is its own text; a PDF, HTML or office file's texts are its extracted parts, stored under
    ``extracted`` in a folder named after the file's hash (``rag.ingest.files.LoadedFile``)."""
    refs = []
    for rec in records:
        parts = sorted((extracted / rec.sha256[:24]).glob("*.txt"))
        refs += [str(p) for p in parts] or [rec.source]
    return refs
