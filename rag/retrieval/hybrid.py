"""Hybrid retrieval: chunk vectors + sentence vectors (Chroma) + BM25, rank-fused.

Measured on PIAF dev (benchmarks/retrieval.py): with multilingual-e5-small, a question
matches a whole chunk in some cases and one sentence of it in others, so the dense side
searches both granularities. BM25 over a French corpus only understands the words an
English question shares with it (names, numbers, cognates), so its weight in the fusion
scales with its *coverage*: the share of the question's content words found in the corpus
vocabulary. A French question gets the full lexical weight, an English one mostly the dense
rankings; no language detector is needed.

A retriever given a workspace ``Scope`` (``rag.retrieval.scope``) applies it inside each arm:
Chroma's ``where`` in both dense queries, a score mask in BM25, before any top-k.

Every ranking breaks equal scores by chunk id (``ordered``) and a chunk's sentences keep
their order, so one question gets the same passages in every process.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle, TextNode

from rag.documents.citations import Span
from rag.embedding.embedders import Embedder
from rag.index.lexical import LexicalHits, LexicalIndex
from rag.index.records import MIN_VECTOR_SENTENCE_CHARS, Stored, has_vector, sentence_records
from rag.index.store import Store
from rag.retrieval.filters import Selection
from rag.retrieval.fusion import Ranking, hybrid, ranking
from rag.retrieval.scope import Scope, where_of

# Calibrated on the PIAF dev sets (see benchmarks/retrieval.py and docs/benchmarks.md).
SENTENCE_WEIGHT = 1.5
CHUNK_CANDIDATES = 100
SENTENCE_CANDIDATES = 300
# Nearest sentences fetched per kept candidate: short ones (dialogue, titles) are skipped.
SENTENCE_OVERFETCH = 2
# Titles and fragments ("Aboiteau", "Biographie") repeat across the chunks of one document
# and match too many questions to say which chunk is meant; they do not rank chunks (an
# index built before they were left without vectors still holds some).
MIN_RANKING_SENTENCE_CHARS = MIN_VECTOR_SENTENCE_CHARS
# Chunk metadata worth keeping on a retrieved node (the rest is LlamaIndex bookkeeping).
_KEEP = (
    "source",
    "path",
    "title",
    "line",
    "start",
    "end",
    "page",
    "section",
    "headings",
    "text_ref",
    "ocr",
    "repeats",
    "rows",
    "url",
    "outlet",
    "date",
)


@dataclass
class SentenceScore:
    """A sentence of a retrieved chunk and its cosine similarity to the question."""

    chunk_id: str
    text: str
    similarity: float
    meta: dict[str, Any]
    vector: np.ndarray | None = None  # the stored sentence vector (the answer step reuses it)

    @property
    def line(self) -> int:
        return int(self.meta["line"])

    def span(self) -> Span:
        """Where the sentence is, for citation: a table row's is the row as written (its
        ``text`` is the row labelled by its header, ``rag.index.records.node_sentences``)."""
        m = self.meta
        return Span(
            m["source"],
            m["start"],
            m["end"],
            m.get("quote", self.text),
            m.get("page"),
            m.get("section"),
            m.get("text_ref"),
            bool(m.get("ocr")),
            m.get("url"),
            m.get("outlet"),
            m.get("date"),
            m.get("path", ""),
        )


@dataclass
class Retrieval:
    """What one search found, with the facts the answer step needs."""

    nodes: list[NodeWithScore]
    sentences: list[SentenceScore]
    coverage: float
    # The best chunk's dense score (its cosine + SENTENCE_WEIGHT x its best sentence's).
    dense_top: float = 0.0


class HybridRetriever(BaseRetriever):
    """A LlamaIndex retriever, so chat engines can use it like any other."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        lexical: LexicalIndex,
        top_k: int = 5,
        scope: Scope | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.embedder = embedder
        self.lexical = lexical
        self.top_k = top_k
        self.scope = scope  # None: every workspace (evaluation, benchmarks)
        self.where = where_of(scope)

    def embed(self, query: str) -> np.ndarray:
        return self.embedder.embed_queries([query])[0]

    def within(self, where: dict[str, Any] | None) -> dict[str, Any] | None:
        """The workspace scope's ``where`` and ``where`` (a user's filters), both applied."""
        clauses = [w for w in (self.where, where) if w]
        return {"$and": clauses} if len(clauses) > 1 else (clauses[0] if clauses else None)

    def chunk_ranking(self, qvec: np.ndarray, where: dict[str, Any] | None = None) -> Ranking:
        """Chunks nearest to the question (cosine similarity scores), among those the
        workspace scope and ``where`` (a user's filters) select."""
        hits = self.store.nearest_chunks(qvec.tolist(), CHUNK_CANDIDATES, self.within(where))
        return ranking({hit.id: hit.similarity for hit in hits})

    def sentence_ranking(self, qvec: np.ndarray, where: dict[str, Any] | None = None) -> Ranking:
        """Chunks ordered by their best sentence's similarity to the question (among the
        sentences ``where`` selects: a user's filters).

        Short sentences are dropped from the nearest ones here rather than by a Chroma
        ``where`` filter: a filtered vector query scans the metadata first and took 0.5 s
        on 116k sentences, the plain one 30 ms.
        """
        wanted = SENTENCE_OVERFETCH * SENTENCE_CANDIDATES
        hits = self.store.nearest_sentences(qvec.tolist(), wanted, self.within(where))
        kept = [
            (hit.meta["chunk_id"], hit.similarity)
            for hit in hits
            if hit.meta.get("chars", 0) >= MIN_RANKING_SENTENCE_CHARS
        ][:SENTENCE_CANDIDATES]
        best: dict[str, float] = {}
        for chunk_id, similarity in kept:
            best[chunk_id] = max(similarity, best.get(chunk_id, similarity))
        return ranking(best)

    def dense_ranking(self, qvec: np.ndarray, where: dict[str, Any] | None = None) -> Ranking:
        """Chunk similarity plus its best sentence's, each floored at the arm's last score.

        Adding the scores (rather than fusing ranks) keeps how much better one candidate
        is; the floor stands in for candidates an arm did not return.
        """
        chunks, sentences = self.chunk_ranking(qvec, where), self.sentence_ranking(qvec, where)
        chunk_score = dict(zip(chunks.ids, chunks.scores))
        sentence_score = dict(zip(sentences.ids, sentences.scores))
        chunk_floor = min(chunks.scores, default=0.0)
        sentence_floor = min(sentences.scores, default=0.0)
        combined = {
            cid: chunk_score.get(cid, chunk_floor)
            + SENTENCE_WEIGHT * sentence_score.get(cid, sentence_floor)
            for cid in chunk_score.keys() | sentence_score.keys()
        }
        ranked = ranking(combined)
        return Ranking(ranked.ids[:CHUNK_CANDIDATES], ranked.scores[:CHUNK_CANDIDATES])

    def lexical_search(self, query: str, selection: Selection | None = None) -> LexicalHits:
        """BM25's hits inside the workspace scope and ``selection``, equal scores in id order
        (see ``ordered``)."""
        tests = [t for t in (self.scope, selection) if t is not None]
        admits = (lambda meta: all(t.admits(meta) for t in tests)) if tests else None
        hits = self.lexical.search(query, CHUNK_CANDIDATES, admits)
        ranked = ranking(dict(zip(hits.ids, hits.scores)))
        return LexicalHits(ranked.ids, ranked.scores, hits.coverage)

    def rankings(
        self, query: str, selection: Selection | None = None
    ) -> tuple[np.ndarray, Ranking, LexicalHits]:
        """Question vector, the dense ranking, and BM25's hits with their coverage, each
        arm searching only inside ``selection`` (a user's filters)."""
        qvec = self.embed(query)
        where = selection.where() if selection is not None else None
        return qvec, self.dense_ranking(qvec, where), self.lexical_search(query, selection)

    def search(
        self,
        query: str,
        k: int | None = None,
        exclude: Collection[str] = (),
        selection: Selection | None = None,
    ) -> Retrieval:
        """Top ``k`` chunks, each with its sentences scored against the question.

        ``exclude``: chunk ids that must not be found (evaluation's near-miss questions: the
        passages holding the answer are taken out, the rest of the corpus stays).
        ``selection``: the user's filters, applied inside each arm (``rag.retrieval.filters``).
        """
        qvec, dense, lex = self.rankings(query, selection)
        if exclude:
            dense, lex = _without(dense, exclude), _lexical_without(lex, exclude)
        fused = hybrid(dense, lex, k or self.top_k)
        records = {
            chunk.id: chunk
            for chunk in self.store.chunks_by_id([c for c, _ in fused])
            if self.scope is None or self.scope.admits(chunk.meta)  # moved meanwhile
        }
        nodes = [
            NodeWithScore(node=_node(records[cid]), score=score)
            for cid, score in fused
            if cid in records  # a concurrent ingest may have replaced it since the search
        ]
        sentences = self.score_sentences(qvec, [n.node for n in nodes])
        return Retrieval(nodes, sentences, lex.coverage, dense.scores[0] if dense.scores else 0.0)

    def score_sentences(self, qvec: np.ndarray, chunks: list[BaseNode]) -> list[SentenceScore]:
        """Every sentence of the given chunks with its cosine to the question.

        The chunks are cut into sentences again, as ingest cut them, so the stored ones are
        read by id: on the whole CIDRE corpus (728k sentences) Chroma's ``chunk_id`` filter
        took 75-85 ms a question, reading by id 4 ms. Were a stored sentence not found by its
        id (an index cut by other rules), the filter reads them all. Short sentences have no
        stored vector (``rag.ingest.pipeline.MIN_VECTOR_SENTENCE_CHARS``): they are embedded here in
        one call (a few per chunk: about 5 ms a question on PIAF, 45 ms on novels).
        """
        records = [rec for chunk in chunks for rec in sentence_records(chunk)]
        stored = self.store.sentences_by_id([sid for sid, _, _ in records])
        have = {s.id for s in stored}
        if any(sid not in have and has_vector(meta) for sid, _, meta in records):
            stored = self.store.sentences_of([chunk.node_id for chunk in chunks])
            have = {s.id for s in stored}
        short = [
            Stored(sid, text, meta)
            for sid, text, meta in records
            if sid not in have and not has_vector(meta)
        ]
        if not stored and not short:
            return []
        vectors = np.asarray([s.vector for s in stored], dtype=np.float32).reshape(-1, qvec.size)
        if short:
            embedded = self.embedder.embed_passages([s.text for s in short])
            vectors = np.vstack([vectors, np.asarray(embedded, dtype=np.float32)])
        place = {sid: i for i, (sid, _, _) in enumerate(records)}
        scored = sorted(  # in the chunks' order, whatever order Chroma returned them in
            zip(stored + short, vectors @ qvec, vectors),
            key=lambda found: (place.get(found[0].id, len(place)), found[0].id),
        )
        return [
            SentenceScore(s.meta["chunk_id"], s.text, float(sim), s.meta, vector)
            for s, sim, vector in scored
        ]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.search(query_bundle.query_str).nodes


def _without(ranking: Ranking, exclude: Collection[str]) -> Ranking:
    kept = [(i, s) for i, s in zip(ranking.ids, ranking.scores) if i not in exclude]
    return Ranking([i for i, _ in kept], [s for _, s in kept])


def _lexical_without(hits: LexicalHits, exclude: Collection[str]) -> LexicalHits:
    kept = [(i, s) for i, s in zip(hits.ids, hits.scores) if i not in exclude]
    return LexicalHits([i for i, _ in kept], [s for _, s in kept], hits.coverage)


def _node(chunk: Stored) -> TextNode:
    """A retrieved chunk as a LlamaIndex node, with only the metadata worth keeping."""
    meta = {key: chunk.meta[key] for key in _KEEP if key in chunk.meta}
    return TextNode(id_=chunk.id, text=chunk.text, metadata=meta)
