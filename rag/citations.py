"""Citations: character spans into source files, checked against the file before shown.

A citation is only ever produced by ``verify_span``, which re-reads the source with the
same decoding as ingest and requires the quoted text to be exactly there. If the file has
changed or vanished since indexing, the citation is dropped rather than shown wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rag.ingest import IngestError, read_text


@dataclass(frozen=True)
class Citation:
    """A verified quote: ``open(source).read()[start:end] == quote``."""

    n: int
    source: str
    start: int
    end: int
    line: int | None
    quote: str
    title: str = ""
    verified: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Span:
    """A sentence inside a source file, by absolute character offsets."""

    source: str
    start: int
    end: int
    text: str


class SourceCache:
    """Decoded source texts, read once per answer (files can be large)."""

    def __init__(self) -> None:
        self._texts: dict[str, str | None] = {}

    def text(self, source: str) -> str | None:
        if source not in self._texts:
            try:
                self._texts[source] = read_text(Path(source))[0]
            except (OSError, IngestError):
                self._texts[source] = None
        return self._texts[source]

    def verify_span(self, n: int, span: Span, title: str = "") -> Citation | None:
        """A citation for ``span`` if the file still holds exactly that text there."""
        text = self.text(span.source)
        if text is None or text[span.start : span.end] != span.text:
            return None
        line = text.count("\n", 0, span.start) + 1
        return Citation(n, span.source, span.start, span.end, line, span.text, title)
