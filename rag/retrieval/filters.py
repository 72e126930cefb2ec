"""A question's filters: which documents, which dates, which folder it may be answered from.

A user states ``Filters`` (documents by id or path, an inclusive ``since``/``until`` day range,
a folder path prefix); ``Filters.resolve`` turns them, against the manifest, into a
``Selection`` that every retrieval arm applies *inside* its search, never after it: the dense
arms as a Chroma ``where`` (``Selection.where``), the BM25 arm as a mask over its documents
before its top-k (``Selection.admits``, the same rule over a metadata dict). So a filtered
question still gets k passages when k exist inside the filter, and none from outside it.

Invariants: ``where()`` and ``admits()`` select the same records (a record without a date is
outside any date range); a bad date, a range that ends before it starts, or a document or
folder that matches nothing indexed is a ``FilterError`` saying which, never an empty answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.documents.dates import date_int, day
from rag.errors import RagError
from rag.index.records import FileRecord

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class FilterError(RagError):
    """A filter that cannot be applied; the message says which value and why."""


@dataclass(frozen=True)
class Filters:
    """What a person asked to search: documents (ids or paths), days, a folder."""

    documents: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    folder: str | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and not (_DAY.fullmatch(value) and day(value)):
                raise FilterError(f"{name}: {value!r} is not a date (use YYYY-MM-DD)")
        if self.since and self.until and self.since > self.until:
            raise FilterError(f"since {self.since} is after until {self.until}: no day is in it")

    @classmethod
    def of(
        cls,
        documents: Iterable[str] | None = None,
        since: str | None = None,
        until: str | None = None,
        folder: str | None = None,
    ) -> Filters | None:
        """Filters from form or command-line values (blanks ignored); None when there are none."""
        docs = tuple(d.strip() for d in documents or () if d and d.strip())
        since, until = (v.strip() if v and v.strip() else None for v in (since, until))
        folder = folder.strip() if folder and folder.strip() else None
        if not (docs or since or until or folder):
            return None
        return cls(docs, since, until, folder)

    def resolve(self, records: Iterable[FileRecord]) -> Selection:
        """The indexed documents these filters keep, as the arms apply them."""
        records = list(records)
        sources: set[str] | None = None
        if self.documents:
            sources = set()
            for wanted in self.documents:
                found = {r.source for r in records if names_document(r, wanted)}
                if not found:
                    raise FilterError(f"no indexed document matches {wanted!r}")
                sources |= found
        if self.folder:
            inside = {r.source for r in records if in_folder(r.source, self.folder)}
            if not inside:
                raise FilterError(f"no indexed document is in the folder {self.folder!r}")
            sources = inside if sources is None else sources & inside
            if not sources:
                raise FilterError(f"none of the chosen documents is in the folder {self.folder!r}")
        return Selection(
            frozenset(sources) if sources is not None else None,
            date_int(self.since) if self.since else None,
            date_int(self.until) if self.until else None,
        )


def names_document(record: FileRecord, wanted: str) -> bool:
    """Whether ``wanted`` names this document: its id, its path (absolute, relative to the
    working directory, or the tail of its path as citations may show it)."""
    if wanted in (record.id, record.source):
        return True
    if str(Path(wanted).expanduser().resolve()) == record.source:
        return True
    tail = wanted.replace("\\", "/").lstrip("./")
    return bool(tail) and record.source.endswith("/" + tail)


def in_folder(source: str, folder: str) -> bool:
    """Whether ``source`` is under ``folder``: a path prefix (as given or resolved), or a
    folder name anywhere in its path (``--folder lemonde`` keeps ``…/lemonde/…``)."""
    prefix = str(Path(folder).expanduser().resolve()).rstrip("/") + "/"
    name = "/" + folder.replace("\\", "/").strip("/") + "/"
    return source.startswith((prefix, folder.rstrip("/") + "/")) or (
        name != "//" and name in source
    )


@dataclass(frozen=True)
class Selection:
    """Filters resolved to what a record's metadata must hold: its ``source`` among
    ``sources`` (None: any) and its ``date_int`` within ``[since, until]`` (inclusive)."""

    sources: frozenset[str] | None = None
    since: int | None = None
    until: int | None = None

    def where(self) -> dict[str, Any] | None:
        """The Chroma ``where`` of this selection (None: everything)."""
        clauses: list[dict[str, Any]] = []
        if self.sources is not None:
            clauses.append({"source": {"$in": sorted(self.sources)}})
        if self.since is not None:
            clauses.append({"date_int": {"$gte": self.since}})
        if self.until is not None:
            clauses.append({"date_int": {"$lte": self.until}})
        if len(clauses) > 1:
            return {"$and": clauses}
        return clauses[0] if clauses else None

    def admits(self, meta: Mapping[str, Any]) -> bool:
        """Whether a record with this metadata is inside the selection (as ``where`` says)."""
        if self.sources is not None and meta.get("source") not in self.sources:
            return False
        if self.since is None and self.until is None:
            return True
        when = meta.get("date_int")
        if not isinstance(when, int):
            return False
        return (self.since is None or when >= self.since) and (
            self.until is None or when <= self.until
        )
