"""Citations: character spans into source texts, checked against the text before shown.

A citation is only ever produced by ``verify_span``, which re-reads the text the offsets
point into (the file itself for .txt/.md, the stored extracted text for PDF pages and HTML)
with the same decoding as ingest and requires the quoted text to be exactly there. If it has
changed or vanished since indexing, the citation is dropped rather than shown wrong.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rag.documents.formats import FormatError, decode, read_text


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
        )
