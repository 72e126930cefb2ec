"""Text extraction per file type, keeping what a citation must point into.

Plain text and Markdown are cited in the file itself. PDF and HTML are cited in the text
extracted from them (pypdf per page, trafilatura's main-text extraction), which ingest
stores beside the index so a citation can always be checked and highlighted against exactly
what was indexed. Markdown headings become section titles.
"""

from __future__ import annotations

import io
import logging
import re
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".md")
EXTRACTED_SUFFIXES = (".pdf", ".html", ".htm")
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + EXTRACTED_SUFFIXES
SUPPORTED_LABEL = ", ".join(SUPPORTED_SUFFIXES)

_MD_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


class FormatError(Exception):
    """The file's format is unusable (encrypted, corrupt, no text); the message says why."""


@dataclass(frozen=True)
class Part:
    """A unit of text citations point into: a whole file, or one page of a PDF."""

    text: str
    page: int | None = None
    extracted: bool = False


def decode(data: bytes) -> tuple[str, str]:
    """UTF-8, falling back to Latin-1 (which never fails); NUL bytes mean binary."""
    if b"\x00" in data:
        raise FormatError("looks binary (contains NUL bytes)")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def extract(suffix: str, data: bytes) -> tuple[list[Part], str]:
    """The parts of a file and the encoding used (``"pdf"`` for PDFs)."""
    if suffix == ".pdf":
        return _pdf_pages(data), "pdf"
    text, encoding = decode(data)
    if suffix in (".html", ".htm"):
        return [Part(_html_main_text(text), extracted=True)], encoding
    return [Part(text)], encoding


def _pdf_pages(data: bytes) -> list[Part]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise FormatError("encrypted PDF (password required)")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise FormatError(f"corrupt or unreadable PDF ({exc})") from None
    parts = [Part(text, page=n, extracted=True) for n, text in enumerate(pages, 1) if text.strip()]
    if not parts:
        raise FormatError("PDF has no extractable text (scanned images?)")
    return parts


def _html_main_text(html: str) -> str:
    import trafilatura

    text = trafilatura.extract(html, include_comments=False, include_tables=True, favor_recall=True)
    if not text or not text.strip():
        raise FormatError("no main text found in the HTML")
    return text


class Sections:
    """Markdown section titles by character offset (the nearest heading above)."""

    def __init__(self, text: str, markdown: bool) -> None:
        found = list(_MD_HEADING.finditer(text)) if markdown else []
        self._starts = [m.start() for m in found]
        self._titles = [m.group(1).strip() for m in found]

    def at(self, offset: int) -> str | None:
        i = bisect_right(self._starts, offset) - 1
        return self._titles[i] if i >= 0 else None


def is_markdown(path: Path) -> bool:
    return path.suffix.lower() == ".md"
