"""Hybrid retrieval: dense (Chroma) + lexical (BM25), fused with a language-aware weight.

Plain reciprocal-rank fusion trusts BM25 as much on an English question as on a French one,
yet BM25 over a French corpus only understands the words the question shares with it
(names, numbers, cognates). So the lexical arm is weighted by its *coverage*: the share of
the question's content words that exist in the corpus vocabulary. A French question gets
the full lexical weight, an English one mostly the dense ranking. This needs no language
detector and works for any query/corpus language pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag.embeddings import Embedder
from rag.lexical import LexicalHits, LexicalIndex
from rag.store import Store

# Calibrated on the PIAF dev sets (see benchmarks/retrieval.py and the README).
RRF_K = 60
LEXICAL_WEIGHT = 1.0
COVERAGE_POWER = 2.0
CANDIDATES = 50


@dataclass
class Ranking:
    """One arm's ranked chunk ids with their raw scores."""

    ids: list[str]
    scores: list[float]


def lexical_weight(coverage: float) -> float:
    """How far to trust BM25 for this question (0 = not at all)."""
    return LEXICAL_WEIGHT * coverage**COVERAGE_POWER


def fuse(dense: Ranking, lexical: Ranking, weight: float, k: int) -> list[tuple[str, float]]:
    """Weighted reciprocal-rank fusion of the two arms; best ``k`` (id, score) pairs."""
    scores: dict[str, float] = {}
    for rank, cid in enumerate(dense.ids):
        scores[cid] = scores.get(cid, 0.0) + 1.0 / (RRF_K + rank + 1)
    for rank, cid in enumerate(lexical.ids):
        scores[cid] = scores.get(cid, 0.0) + weight / (RRF_K + rank + 1)
    return sorted(scores.items(), key=lambda kv: -kv[1])[:k]


@dataclass
class Evidence:
    """Per-question retrieval facts the answer step uses to decide whether to abstain."""

    dense_top: float
    coverage: float


class HybridRetriever(BaseRetriever):
    """A LlamaIndex retriever, so chat engines can use it like any other."""

    def __init__(
        self, store: Store, embedder: Embedder, lexical: LexicalIndex, top_k: int = 5
    ) -> None:
        super().__init__()
        self.store = store
        self.embedder = embedder
        self.lexical = lexical
        self.top_k = top_k
        self.last_evidence = Evidence(0.0, 0.0)

    def dense(self, query: str, n: int = CANDIDATES) -> tuple[Ranking, dict[str, Any]]:
        """Chroma nearest neighbours: ranking (cosine similarities) and the records."""
        vec = self.embedder.embed_queries([query])[0].tolist()
        n = min(n, self.store.count())
        if n == 0:
            return Ranking([], []), {}
        got = self.store.chunks.query(
            query_embeddings=[vec], n_results=n, include=["documents", "metadatas", "distances"]
        )
        ids = got["ids"][0]
        records = {
            cid: (doc, meta)
            for cid, doc, meta in zip(ids, got["documents"][0], got["metadatas"][0])
        }
        return Ranking(ids, [1.0 - d for d in got["distances"][0]]), records

    def lexical_search(self, query: str, n: int = CANDIDATES) -> LexicalHits:
        return self.lexical.search(query, n)

    def search(self, query: str, k: int | None = None) -> list[NodeWithScore]:
        """Top ``k`` chunks for ``query`` as scored nodes (also records the evidence)."""
        k = k or self.top_k
        dense, records = self.dense(query)
        lex = self.lexical_search(query)
        fused = fuse(dense, Ranking(lex.ids, lex.scores), lexical_weight(lex.coverage), k)
        missing = [cid for cid, _ in fused if cid not in records]
        if missing:
            got = self.store.chunks.get(ids=missing, include=["documents", "metadatas"])
            records.update(
                {
                    cid: (doc, meta)
                    for cid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"])
                }
            )
        dense_score = dict(zip(dense.ids, dense.scores))
        self.last_evidence = Evidence(dense.scores[0] if dense.scores else 0.0, lex.coverage)
        out = []
        for cid, score in fused:
            if cid not in records:  # deleted by a concurrent ingest since the search
                continue
            doc, meta = records[cid]
            node = TextNode(id_=cid, text=doc, metadata=dict(meta))
            node.metadata["dense_score"] = dense_score.get(cid, 0.0)
            out.append(NodeWithScore(node=node, score=score))
        return out

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.search(query_bundle.query_str)
