"""Chroma access: the chunk collection, its sentences, its file manifest, the embedder guard.

Four collections per corpus, all in Chroma so an embedded store and a Chroma server behave
the same: ``<name>`` holds the chunks (through LlamaIndex's ``ChromaVectorStore``),
``<name>__sentences`` one vector per sentence of those chunks (retrieval at two
granularities, and cross-lingual sentence choice for the extractive answer),
``<name>__files`` one record per fully ingested file (its content hash and chunk count), and
``<name>__stamp`` one token, renewed by every ingest that changes chunks, before and after
its writes: the one freshness token of the index's state. Every reader (this process, other
processes, app instances sharing a Chroma server) compares it with the token its BM25 index
was built at before each question (``rag.index.lexical.LexicalCache``).
Every chunk, sentence and manifest record names its workspace (``WORKSPACE_KEY``); the
nearest-record queries take a Chroma ``where`` (``rag.retrieval.scope``), so a scoped
search never ranks another workspace's records.
A file's manifest record is written only after all of its chunks are stored, so an ingest
killed half-way leaves that file unrecorded and the next run redoes it.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

from llama_index.vector_stores.chroma import ChromaVectorStore

from rag.config import DEFAULT_WORKSPACE, Settings
from rag.datadir import (
    SCHEMA_VERSION,
    LocalSync,
    StoreError,
    View,
)
from rag.index.chroma import open_client, open_embedded
from rag.index.records import WORKSPACE_KEY, FileRecord, Hit, Stored

_MANIFEST_SUFFIX = "__files"
_SENTENCES_SUFFIX = "__sentences"
_STAMP_SUFFIX = "__stamp"
_STAMP_ID = "chunks"
# The manifest needs no vectors, but Chroma requires one per record.
_NO_VECTOR = [0.0]
# Records per ``get`` when reading a whole collection (see ``_get_all``).
GET_PAGE = 5_000
# Sources per delete request when forgetting many files at once.
_FORGET_BATCH = 500
log = logging.getLogger(__name__)


class Store:
    """The chunk collection and its manifest for one corpus."""

    def __init__(
        self,
        client: Any,
        name: str,
        embed_model: str,
        dim: int,
        sync: LocalSync | None = None,
        view: View | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.embed_model = embed_model
        self.dim = dim
        self.sync = sync  # None for a Chroma server
        self.view = view
        self._open_collections()

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """Hold off writers of an embedded store while reading (see ``LocalSync``)."""
        return self.sync.hold(exclusive=False) if self.sync else contextlib.nullcontext()

    def writing(self) -> contextlib.AbstractContextManager[None]:
        """Exclude readers and other writers of an embedded store while writing."""
        if self.sync is None or self.view is None:
            return contextlib.nullcontext()
        return self.sync.hold(exclusive=True, token=self.view.token)

    def is_stale(self) -> bool:
        """Whether another process wrote since this store's Chroma System was opened."""
        if self.sync is None or self.view is None:
            return False
        return self.view.stale(self.sync.generation())

    def _open_collections(self) -> None:
        self.chunks = self.client.get_or_create_collection(
            self.name,
            metadata={
                "embed_model": self.embed_model,
                "dim": self.dim,
                "schema_version": SCHEMA_VERSION,
            },
            configuration={"hnsw": {"space": "cosine"}},
        )
        self.sentences = self.client.get_or_create_collection(
            self.name + _SENTENCES_SUFFIX, configuration={"hnsw": {"space": "cosine"}}
        )
        self.files = self.client.get_or_create_collection(self.name + _MANIFEST_SUFFIX)
        self.stamps = self.client.get_or_create_collection(self.name + _STAMP_SUFFIX)
        self.vector_store = ChromaVectorStore(chroma_collection=self.chunks)

    def check_embedder(self) -> None:
        """Vectors from two models are not comparable: fail loudly instead of ranking noise."""
        meta = self.chunks.metadata or {}
        stored, dim = meta.get("embed_model"), meta.get("dim")
        if (stored, dim) != (self.embed_model, self.dim):
            raise StoreError(
                f"The index was built with {stored} ({dim} dims) but the configured "
                f"embedder is {self.embed_model} ({self.dim} dims); "
                "run `rag ingest --rebuild` to re-embed the corpus."
            )

    def drop(self) -> None:
        """Delete the collections (``--rebuild``) and recreate them empty."""
        with self.writing():
            for suffix in ("", _SENTENCES_SUFFIX, _MANIFEST_SUFFIX, _STAMP_SUFFIX):
                # An absent collection is fine; Chroma's error type for it varies by version.
                with contextlib.suppress(Exception):
                    self.client.delete_collection(self.name + suffix)
            self._open_collections()

    def count(self) -> int:
        return self.chunks.count()

    def file_records(self, where: dict[str, Any] | None = None) -> dict[str, FileRecord]:
        """All fully ingested files (those ``where`` selects), by source path."""
        got = _get_all(self.files, ["metadatas"], where)
        return {m["source"]: _record(m) for m in got["metadatas"] or []}

    def file_record(self, source: str) -> FileRecord | None:
        """The manifest record of one file, if it is fully ingested (one small read)."""
        got = self.files.get(ids=[source], include=["metadatas"])
        metas = got["metadatas"] or []
        return _record(metas[0]) if metas else None

    def record_file(self, rec: FileRecord) -> None:
        self.record_files([rec])

    def record_files(self, recs: list[FileRecord]) -> None:
        """Manifest records for files whose chunks are all stored (one request)."""
        if not recs:
            return
        with self.writing():
            self._upsert_records(recs)

    def _upsert_records(self, recs: list[FileRecord]) -> None:
        self.files.upsert(
            ids=[rec.source for rec in recs],
            embeddings=[_NO_VECTOR] * len(recs),
            metadatas=[
                {
                    "source": rec.source,
                    "sha256": rec.sha256,
                    "chunks": rec.chunks,
                    "title": rec.title,
                    "date": rec.date,
                    "size": rec.size,
                    "added_by": rec.added_by,
                    "added_at": rec.added_at,
                    "path": rec.path,
                    WORKSPACE_KEY: rec.workspace,
                }
                for rec in recs
            ],
        )

    def forget_file(self, source: str) -> None:
        self.forget_files([source])

    def forget_files(self, sources: list[str]) -> None:
        """Remove manifest records first, then chunks and sentences (crash-safe order)."""
        for i in range(0, len(sources), _FORGET_BATCH):
            group = sources[i : i + _FORGET_BATCH]
            with self.writing():
                self.files.delete(ids=group)
                where = {"source": {"$in": group}}
                self.chunks.delete(where=where)
                self.sentences.delete(where=where)

    def add_chunks(self, nodes: list[Any]) -> None:
        """Chunk nodes with their embeddings (through LlamaIndex's Chroma vector store)."""
        with self.writing():
            self.vector_store.add(nodes)

    def add_sentences(
        self,
        ids: list[str],
        texts: list[str],
        vectors: list[list[float]],
        metadatas: list[dict[str, Any]],
    ) -> None:
        """Sentence vectors: the fine-grained dense arm and the answer's sentence scores."""
        with self.writing():
            self.sentences.upsert(ids=ids, documents=texts, embeddings=vectors, metadatas=metadatas)

    def all_chunks(self) -> list[Stored]:
        """Every chunk with its text and metadata (to rebuild the lexical index)."""
        return _stored(_get_all(self.chunks, ["documents", "metadatas"]))

    def all_sentences(self) -> list[Stored]:
        """Every sentence with its text, metadata and vector (for checks and benchmarks)."""
        got = _get_all(self.sentences, ["documents", "metadatas", "embeddings"])
        return _stored(got, vectors=True)

    def nearest_chunks(
        self, vector: list[float], n: int, where: dict[str, Any] | None = None
    ) -> list[Hit]:
        """The ``n`` chunks nearest to ``vector`` (at most as many as there are) among those
        matching ``where`` (a Chroma filter, applied inside the search)."""
        return _nearest(self.chunks, vector, n, include_meta=False, where=where)

    def nearest_sentences(
        self, vector: list[float], n: int, where: dict[str, Any] | None = None
    ) -> list[Hit]:
        """The ``n`` sentences nearest to ``vector`` among those matching ``where``, with
        their metadata."""
        return _nearest(self.sentences, vector, n, include_meta=True, where=where)

    def chunks_by_id(self, ids: list[str]) -> list[Stored]:
        """The chunks with these ids that are still stored."""
        if not ids:
            return []
        return _stored(self.chunks.get(ids=ids, include=["documents", "metadatas"]))

    def sentences_of(self, chunk_ids: list[str]) -> list[Stored]:
        """Every stored sentence of these chunks, with its vector."""
        if not chunk_ids:
            return []
        got = self.sentences.get(
            where={"chunk_id": {"$in": chunk_ids}},
            include=["documents", "metadatas", "embeddings"],
        )
        return _stored(got, vectors=True)

    def sentences_by_id(self, ids: list[str]) -> list[Stored]:
        """The stored sentences with these ids, with their vectors (absent ids are skipped)."""
        if not ids:
            return []
        got = self.sentences.get(ids=ids, include=["documents", "metadatas", "embeddings"])
        return _stored(got, vectors=True)

    def change_stamp(self) -> str | None:
        """The token of the last chunk change (None before the first one): one small read."""
        got = self.stamps.get(ids=[_STAMP_ID], include=["metadatas"])
        return str(got["metadatas"][0]["token"]) if got["ids"] else None

    def renew_stamp(self) -> None:
        """Mark the chunks as changed (before and after an ingest writes them)."""
        with self.writing():
            self.stamps.upsert(
                ids=[_STAMP_ID], embeddings=[_NO_VECTOR], metadatas=[{"token": uuid.uuid4().hex}]
            )


def _record(meta: dict[str, Any]) -> FileRecord:
    return FileRecord(
        meta["source"],
        meta["sha256"],
        int(meta["chunks"]),
        meta["title"],
        str(meta.get("date", "")),
        int(meta.get("size", 0)),
        str(meta.get("added_by", "")),
        float(meta.get("added_at", 0.0)),
        str(meta.get("path", "")),
        meta.get(WORKSPACE_KEY) or DEFAULT_WORKSPACE,
    )


def _get_all(
    collection: Any, include: list[str], where: dict[str, Any] | None = None
) -> dict[str, list]:
    """Every record of ``collection``, read ``GET_PAGE`` at a time.

    One unpaged ``get`` fails past about 32,000 records ("too many SQL variables": the
    embedded Chroma reads their metadata with one bound variable each, and SQLite allows
    32,766); found at 62,773 chunks, the whole CIDRE corpus.
    """
    got: dict[str, list] = {key: [] for key in ("ids", *include)}
    offset = 0
    while True:
        page = collection.get(include=include, limit=GET_PAGE, offset=offset, where=where)
        for key in got:
            got[key].extend(page[key] if page[key] is not None else [])
        if len(page["ids"]) < GET_PAGE:
            return got
        offset += GET_PAGE


def _stored(got: dict[str, Any], *, vectors: bool = False) -> list[Stored]:
    """Chroma's ``get`` result as records."""
    found = vectors and got["ids"]
    return [
        Stored(cid, doc, meta, got["embeddings"][i] if found else None)
        for i, (cid, doc, meta) in enumerate(zip(got["ids"], got["documents"], got["metadatas"]))
    ]


def _nearest(
    collection: Any,
    vector: list[float],
    n: int,
    *,
    include_meta: bool,
    where: dict[str, Any] | None = None,
) -> list[Hit]:
    """Chroma's ``query`` result for one vector as hits (cosine similarity = 1 - distance)."""
    n = min(n, collection.count())
    if n <= 0:
        return []
    include = ["metadatas", "distances"] if include_meta else ["distances"]
    got = collection.query(query_embeddings=[vector], n_results=n, include=include, where=where)
    metas = got["metadatas"][0] if include_meta else [{}] * len(got["ids"][0])
    return [
        Hit(cid, 1.0 - dist, meta)
        for cid, dist, meta in zip(got["ids"][0], got["distances"][0], metas)
    ]


def open_store(settings: Settings, embed_model: str, dim: int, name: str | None = None) -> Store:
    """The store for ``name`` (default: the configured collection)."""
    name = name or settings.collection
    if settings.chroma_url:
        return Store(open_client(settings), name, embed_model, dim)
    client, view = open_embedded(settings)
    return Store(client, name, embed_model, dim, LocalSync(settings.data_dir), view)
