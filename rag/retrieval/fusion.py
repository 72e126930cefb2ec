"""Rank fusion: the dense rankings and BM25 combined by weighted reciprocal rank.

BM25's weight scales with its coverage of the question (the share of the question's content
words found in the corpus vocabulary): a French question gets the full lexical weight, an
English one over a French corpus mostly the dense rankings. Pure functions over chunk ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag.index.lexical import LexicalHits

# Calibrated on the PIAF dev sets (benchmarks/retrieval.py, docs/benchmarks.md).
RRF_K = 5
LEXICAL_WEIGHT = 0.75
COVERAGE_POWER = 1.0


@dataclass
class Ranking:
    """One arm's chunk ids, best first."""

    ids: list[str]
    scores: list[float] = field(default_factory=list)


def lexical_weight(coverage: float) -> float:
    """How far to trust BM25 for this question (0 = not at all)."""
    return LEXICAL_WEIGHT * coverage**COVERAGE_POWER


def fuse(rankings: list[Ranking], weights: list[float], k: int) -> list[tuple[str, float]]:
    """Weighted reciprocal-rank fusion; the best ``k`` (chunk id, score) pairs."""
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, cid in enumerate(ranking.ids):
            scores[cid] = scores.get(cid, 0.0) + weight / (RRF_K + rank + 1)
    return ordered(scores)[:k]


def ordered(scores: dict[str, float]) -> list[tuple[str, float]]:
    """(id, score) pairs best first, equal scores by id: a ranking that is the same in every
    process (set and dict orders, and Chroma's among equal distances, are not)."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def ranking(scores: dict[str, float]) -> Ranking:
    """The ranking of these scores (see ``ordered``)."""
    pairs = ordered(scores)
    return Ranking([cid for cid, _ in pairs], [score for _, score in pairs])


def hybrid(dense: Ranking, lex: LexicalHits, k: int) -> list[tuple[str, float]]:
    """The dense ranking fused with BM25, weighted by BM25's coverage of the question."""
    return fuse([dense, Ranking(lex.ids)], [1.0, lexical_weight(lex.coverage)], k)
