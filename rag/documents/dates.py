"""A document's own date, read from the file: what a news analyst filters and sorts by.

The date a document states about itself comes first: a PDF's info dictionary
(``/CreationDate``) or XMP ``xmp:CreateDate``; a Word or OpenDocument file's core properties
(``dcterms:created``, ``meta:creation-date``, then ``dc:date``); an HTML page's ``<meta>``
publication date (``article:published_time``, ``date``, ``dc.date``…) or its first ``<time
datetime>``;
a Markdown file's front matter ``date:``. A file stating none (plain text, most scans) is
dated by its modification time.

Invariant: a date is a ``YYYY-MM-DD`` string of a real calendar day, or None; a file whose
metadata cannot be read is never refused for it (its modification time dates it).
"""

from __future__ import annotations

import io
import re
import zipfile
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from xml.etree import ElementTree

# The first ten characters of an ISO date or date-time: "2024-03-05", "2024-03-05T10:00Z".
_ISO_DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
# PDF dates: "D:20240305101500+01'00'" (the "D:" and all but the year are optional).
_PDF_DAY = re.compile(r"^(?:D:)?(\d{4})(\d{2})?(\d{2})?")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S)
_FRONT_DATE = re.compile(r"^date[ \t]*:[ \t]*['\"]?([^'\"\r\n]+)", re.M | re.I)
# Core property elements, most specific first (their namespaces differ between formats).
_DOCX_DATES = ("created", "date", "modified")
_ODT_DATES = ("creation-date", "date")
# Publication-date ``<meta>`` names and properties news sites use (Open Graph, Dublin Core,
# schema.org, Parsely, sailthru), the original publication before any update.
HTML_META = (
    "article:published_time",
    "og:published_time",
    "datepublished",
    "date",
    "dc.date",
    "dc.date.issued",
    "dc.date.created",
    "dcterms.created",
    "dcterms.date",
    "dcterms.issued",
    "pubdate",
    "publishdate",
    "publication_date",
    "parsely-pub-date",
    "sailthru.date",
    "article.published",
    "datecreated",
)


def document_date(suffix: str, data: bytes) -> str | None:
    """The date the file's own metadata gives it, or None (then its mtime dates it)."""
    reader = _READERS.get(suffix.lower())
    if reader is None:
        return None
    try:
        return reader(data)
    except Exception:  # metadata is a bonus: a broken header never costs the file
        return None


def day(text: str | None) -> str | None:
    """The leading ISO date of ``text`` (``2024-03-05``, ``2024-03-05T10:00Z``), if a real day."""
    match = _ISO_DAY.match(text.strip()) if text else None
    return _checked(*map(int, match.groups())) if match else None


def date_int(text: str) -> int:
    """``2024-03-05`` as ``20240305``: Chroma's range operators compare numbers only."""
    return int(text.replace("-", ""))


def mtime_day(mtime: float) -> str:
    """A modification time as the UTC day it falls on."""
    return datetime.fromtimestamp(mtime, UTC).date().isoformat()


def _checked(year: int, month: int, dom: int) -> str | None:
    try:
        return date(year, month, dom).isoformat() if year >= 1000 else None
    except ValueError:
        return None


def _pdf_date(data: bytes) -> str | None:
    """XMP ``xmp:CreateDate`` (what the authoring tool wrote last), else ``/CreationDate``."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    xmp = reader.xmp_metadata
    created = xmp.xmp_create_date if xmp is not None else None
    if created is not None:
        return created.date().isoformat()
    raw = (reader.metadata or {}).get("/CreationDate")
    match = _PDF_DAY.match(str(raw).strip()) if raw else None
    if not match:
        return None
    year, month, dom = (int(g) if g else 1 for g in match.groups())
    return _checked(year, month, dom)


def _zip_xml_date(data: bytes, member: str, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` (element local names, in that order) dated in ``member``."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        root = ElementTree.fromstring(archive.read(member))
    found = {el.tag.rpartition("}")[2]: el.text for el in root.iter()}
    return next((d for name in names if (d := day(found.get(name)))), None)


def _docx_date(data: bytes) -> str | None:
    return _zip_xml_date(data, "docProps/core.xml", _DOCX_DATES)


def _odt_date(data: bytes) -> str | None:
    return _zip_xml_date(data, "meta.xml", _ODT_DATES)


def _html_date(data: bytes) -> str | None:
    """The page's publication date from its markup only: a ``<meta>`` of ``HTML_META``
    (first listed first), else its first ``<time datetime>``; never a date read in its text
    (htmldate's fast mode still took "2016-03-03" from a paragraph)."""
    found = _DateMarkup()
    found.feed(data.decode("utf-8", errors="replace"))
    found.close()
    metas = (day(found.meta.get(name)) for name in HTML_META)
    return next((d for d in metas if d), None) or day(found.time)


class _DateMarkup(HTMLParser):
    """The ``<meta>`` contents by lower-cased name/property, and the first ``<time datetime>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.time: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        if tag == "meta" and values.get("content"):
            for key in ("property", "name", "itemprop"):
                if values.get(key):
                    self.meta.setdefault(values[key].strip().lower(), values["content"])
        elif tag == "time" and self.time is None and values.get("datetime"):
            self.time = values["datetime"]


def front_matter_end(text: str) -> int:
    """Where a Markdown file's text starts after its front matter (0 when it has none)."""
    front = _FRONT_MATTER.match(text)
    return front.end() if front else 0


def _markdown_date(data: bytes) -> str | None:
    front = _FRONT_MATTER.match(data.decode("utf-8", errors="replace"))
    found = _FRONT_DATE.search(front.group(1)) if front else None
    return day(found.group(1)) if found else None


_READERS = {
    ".pdf": _pdf_date,
    ".docx": _docx_date,
    ".odt": _odt_date,
    ".html": _html_date,
    ".htm": _html_date,
    ".md": _markdown_date,
}
