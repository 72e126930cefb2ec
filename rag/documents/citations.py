"""Citations: character spans into source texts, checked against the text before shown.

A citation is only ever produced by ``verify_span``, which re-reads the text the offsets
point into (the file itself for .txt/.md, the stored extracted text for PDF pages and HTML)
with the same decoding as ingest and requires the quoted text to be exactly there. If it has
changed or vanished since indexing, the citation is dropped rather than shown wrong.

A citation's ``source`` is the indexed file's absolute path: the index reads through it and
nobody else sees it. Users see ``path``, the file's path relative to the folder it was
indexed from (recorded at ingest; the URL for a web page), or the file's name for an index
older than that (``Citation.shown``); ``public_json`` is a citation as it leaves the server.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rag.documents.formats import FormatError, decode, read_text

DOCUMENT_ID_CHARS = 32


@dataclass(frozen=True)
class Citation:
    """A verified quote: ``text[start:end] == quote``, where ``text`` is the file's own text
    (``extracted`` is None) or the stored extracted text (PDF page, HTML/Word/ODT text).
    ``ocr``: the text was machine-read from a scanned page, so the quote may differ from the
    printed words."""

    n: int
    source: str
    start: int
    end: int
    line: int | None
    quote: str
    title: str = ""
    verified: bool = True
    page: int | None = None
    section: str | None = None
    extracted: str | None = None
    ocr: bool = False
    # Asked words the quoted sentence does not state ("Not in this passage: ...").
    missing: tuple[str, ...] = ()
    # For an LLM's citation: whether the answer verifier finds that its sentence answers
    # the question (None: not checked, as for extractive quotes, which it chose).
    supported: bool | None = None
    # A web article's page (the link to the original) and its outlet.
    url: str | None = None
    outlet: str | None = None
    # The document's own date, YYYY-MM-DD (None: indexed before documents were dated).
    date: str | None = None
    # The file as users know it: relative to its indexed folder, or a web page's URL ("":
    # indexed before this was recorded).
    path: str = ""

    @property
    def shown(self) -> str:
        """What users see of the file: ``path``, or the file's name for an older index."""
        return self.path or Path(self.source).name

    @property
    def ref(self) -> str:
        """The text the offsets point into (what ``document_id`` names)."""
        return self.extracted or self.source

    def to_json(self) -> dict[str, Any]:
        """Everything, absolute paths included: what the server keeps (saved conversations)."""
        return asdict(self)


def source_label(cite: dict[str, Any]) -> str:
    """``Citation.shown`` for a citation kept as JSON (``Citation.to_json``)."""
    return cite.get("path") or Path(cite["source"]).name


def document_id(ref: str) -> str:
    """The public id of the text at ``ref`` (a path: hashed, so the id reveals nothing)."""
    return hashlib.sha256(ref.encode()).hexdigest()[:DOCUMENT_ID_CHARS]


def public_json(citation: Citation, *, absolute: bool = False) -> dict[str, Any]:
    """A citation as a client receives it: ``source`` is the path users know and its text
    is reached through ``document_id`` (``GET /v1/documents/{id}``), so no server path
    leaves the server; ``absolute`` keeps the paths (``rag ask --absolute``)."""
    data = citation.to_json()
    data["document_id"] = document_id(citation.ref)
    if not absolute:
        del data["extracted"], data["path"]
        data["source"] = citation.shown
    return data


@dataclass(frozen=True)
class Span:
    """A sentence inside a source text, by absolute character offsets."""

    source: str
    start: int
    end: int
    text: str
    page: int | None = None
    section: str | None = None
    extracted: str | None = None
    ocr: bool = False
    url: str | None = None
    outlet: str | None = None
    date: str | None = None
    path: str = ""

    @property
    def ref(self) -> str:
        """The file the offsets point into."""
        return self.extracted or self.source


def indexed_text(path: Path, sha256: str) -> str | None:
    """The text of a source file if it is still exactly the file that was indexed.

    None when its bytes no longer hash to ``sha256`` or when a symbolic link is anywhere on
    its path (ingest records resolved paths, so a link there now was put in since): a file
    replaced by a link to a private file is never read, let alone served.
    """
    if os.path.realpath(path) != str(path):
        return None
    try:
        data = read_unlinked(path)
        if hashlib.sha256(data).hexdigest() != sha256:
            return None
        return decode(data)[0]
    except (OSError, FormatError):
        return None


def document_text(ref: str, extracted: Path, sha256: str | None) -> str | None:
    """The indexed text citation offsets point into: a citation's ``extracted`` file (under
    ``extracted``/<hash>/), or its ``source`` for plain text and Markdown whose manifest
    hash is ``sha256``.

    None when ``ref`` is neither a text the index stored nor an indexed file whose bytes
    still hash as recorded: the API and the page's viewer show what was indexed, never what
    a path points to now (``indexed_text``).
    """
    path = Path(ref)
    folder = path.parent
    if folder.parent == extracted:  # <hash>/<part>.txt
        hashed = re.fullmatch("[0-9a-f]{24}", folder.name) and ".." not in path.parts
        return stored_text(path) if hashed else None
    return indexed_text(path, sha256) if sha256 else None


def stored_text(path: Path) -> str | None:
    """A text ingest stored (a PDF page's, an HTML or Word file's), if it is there."""
    try:
        return read_unlinked(path).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def read_unlinked(path: Path) -> bytes:
    """The bytes of ``path``; ``OSError`` if its last component is a symbolic link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


class SourceCache:
    """Decoded source texts, read once per answer (files can be large)."""

    def __init__(self) -> None:
        self._texts: dict[str, str | None] = {}

    def text(self, source: str) -> str | None:
        if source not in self._texts:
            try:
                self._texts[source] = read_text(Path(source)).text
            except (OSError, FormatError):
                self._texts[source] = None
        return self._texts[source]

    def verify_span(self, n: int, span: Span, title: str = "") -> Citation | None:
        """A citation for ``span`` if the file still holds exactly that text there."""
        text = self.text(span.ref)
        if text is None or text[span.start : span.end] != span.text:
            return None
        line = text.count("\n", 0, span.start) + 1
        return Citation(
            n,
            span.source,
            span.start,
            span.end,
            line,
            span.text,
            title,
            page=span.page,
            section=span.section,
            extracted=span.extracted,
            ocr=span.ocr,
            url=span.url,
            outlet=span.outlet,
            date=span.date,
            path=span.path,
        )
