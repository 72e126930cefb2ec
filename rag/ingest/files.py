"""Finding and loading source files: which files an ingest covers, their text and hash.

A file that cannot be read or extracted costs that file only: it becomes a ``Failure`` with a
one-line reason, never an exception out of the run. Files over ``RAG_MAX_FILE_MB`` are refused
from their size alone, before a byte is read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from rag.documents.dates import document_date, front_matter_end, mtime_day
from rag.documents.formats import (
    SUPPORTED_LABEL,
    SUPPORTED_SUFFIXES,
    FormatError,
    Part,
    extract,
    is_temporary,
)
from rag.errors import RagError

# A document's title is its first non-blank line, cut here: a file without line breaks would
# otherwise make its whole text the title shown on every citation card.
_TITLE_MAX = 200
MB = 1024 * 1024  # RAG_MAX_FILE_MB counts MiB


class IngestError(RagError):
    """A file that cannot be indexed; the message names it and says why."""


@dataclass
class LoadedFile:
    """A source file turned into the text parts its citations will point into.

    ``date``: the file's own date (``YYYY-MM-DD``, ``rag.documents.dates``), else its
    modification day; ``added_by``: who uploaded it ("" for a file ingested from a folder).
    """

    source: str
    parts: list[Part]
    sha256: str
    encoding: str
    date: str = ""
    size: int = 0
    added_by: str = ""
    # Metadata every chunk of the file carries (a web article's url, outlet, date, title).
    meta: dict[str, str | int] = field(default_factory=dict)
    # The path users see: relative to the folder it was indexed from (``shown_path``).
    path: str = ""

    @property
    def title(self) -> str:
        if self.meta.get("title"):
            return str(self.meta["title"])[:_TITLE_MAX]
        text = self.parts[0].text
        text = text[front_matter_end(text) :]  # a Markdown file's front matter is no title
        lines = (line.strip().lstrip("#").strip() for line in text.splitlines())
        return next((line for line in lines if line), "")[:_TITLE_MAX] or Path(self.source).name

    def text_ref(self, part: Part, root: Path) -> Path:
        """Where an extracted part's text is stored (PDF pages, HTML/Word/ODT text)."""
        name = f"page-{part.page:05d}.txt" if part.page else "text.txt"
        return root / self.sha256[:24] / name


class Failure(NamedTuple):
    """A file (or upload name) that was not indexed, and why, for a ``failed:`` line."""

    path: str
    reason: str


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
        mtime = path.stat().st_mtime
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
    dated = document_date(suffix, data) or mtime_day(mtime)
    digest = hashlib.sha256(data).hexdigest()
    return LoadedFile(str(path.resolve()), parts, digest, encoding, dated, len(data))


def shown_path(file: Path, roots: Iterable[Path]) -> str:
    """``file`` (resolved) as users know it: relative to the first of the folders ``roots``
    (resolved) that holds it, else its name. Citations show this, never the server's path."""
    for root in roots:
        if file.is_relative_to(root):
            return file.relative_to(root).as_posix()
    return file.name


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
