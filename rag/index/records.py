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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import DEFAULT_WORKSPACE
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
    """What the manifest knows about one ingested file."""

    source: str
    sha256: str
    chunks: int
    title: str
    workspace: str = DEFAULT_WORKSPACE


def sentence_records(node: TextNode) -> list[tuple[str, str, dict]]:
    """(id, text, metadata) for each sentence of a chunk, with absolute offsets; a sentence
    repeating earlier text of its file is left out (``rag.ingest.chunking.drop_repeats``).

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
