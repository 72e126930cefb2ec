"""The language rules every layer shares: word folding, stop words, stemmed tokens, sentences.

Retrieval (BM25), the answer decision and the reply check must cut and compare words the
same way, and the ingest and the citations must cut sentences the same way: one module holds
those rules so they cannot drift apart. Pure functions; the stemmer and stop-word lists load
on first use, so importing this module costs nothing.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import Stemmer

_WORD = re.compile(r"\w+", re.UNICODE)


def fold(text: str) -> str:
    """Lower-case and strip accents, so "Élysée" matches "elysee"."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN, STOPWORDS_FRENCH

    extra = {"quel", "quelle", "quels", "quelles", "combien", "comment", "pourquoi", "quand"}
    return frozenset(fold(w) for w in (*STOPWORDS_FRENCH, *STOPWORDS_EN, *extra))


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    import Stemmer

    # The corpus is French; English query words rarely collide with French stems.
    return Stemmer.Stemmer("french")


def tokenize(text: str) -> list[str]:
    """Folded, stop-word-free, stemmed tokens (French elision ``l'``/``d'`` split off)."""
    words = [w for w in _WORD.findall(fold(text).replace("'", " ").replace("’", " "))]
    stop = stopwords()
    return _stemmer().stemWords([w for w in words if len(w) > 1 and w not in stop])


# Sentence boundaries: end punctuation (optionally closed by a quote or bracket) and then
# whitespace, or a line break. Offsets matter more than linguistic finesse here.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[»\"”’)\]]*\s+|\n+")


def sentence_spans(text: str, offset: int = 0) -> list[tuple[int, int]]:
    """``(start, end)`` of each non-blank sentence of ``text``, shifted by ``offset``."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for match in _SENTENCE_END.finditer(text):
        _append_trimmed(spans, text, pos, match.start(), offset)
        pos = match.end()
    _append_trimmed(spans, text, pos, len(text), offset)
    return spans


def _append_trimmed(
    spans: list[tuple[int, int]], text: str, start: int, end: int, offset: int
) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if stripped:
        lead = len(piece) - len(piece.lstrip())
        spans.append((offset + start + lead, offset + start + lead + len(stripped)))


def split_sentences(text: str) -> list[str]:
    """``text`` cut after each sentence end, whitespace kept: the pieces join back to it."""
    cuts = [m.end() for m in _SENTENCE_END.finditer(text) if 0 < m.end() < len(text)]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]
