"""Chroma access: the chunk collection, its sentences, its file manifest, the embedder guard.

Three collections per corpus, all in Chroma so an embedded store and a Chroma server behave
the same: ``<name>`` holds the chunks (through LlamaIndex's ``ChromaVectorStore``),
``<name>__sentences`` one vector per sentence of those chunks (retrieval at two
granularities, and cross-lingual sentence choice for the extractive answer), and
``<name>__files`` one record per fully ingested file (its content hash and chunk count).
A file's manifest record is written only after all of its chunks are stored, so an ingest
killed half-way leaves that file unrecorded and the next run redoes it.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import chromadb
from chromadb.config import Settings as ChromaSettings
from llama_index.vector_stores.chroma import ChromaVectorStore

from rag.config import Settings

SCHEMA_VERSION = 1
_MANIFEST_SUFFIX = "__files"
_SENTENCES_SUFFIX = "__sentences"
# The manifest needs no vectors, but Chroma requires one per record.
_NO_VECTOR = [0.0]


class StoreError(Exception):
    """A problem with the index the user can fix; the message says how."""


@dataclass(frozen=True)
class FileRecord:
    """What the manifest knows about one ingested file."""

    source: str
    sha256: str
    chunks: int
    title: str


def open_client(settings: Settings) -> Any:
    """Embedded ``PersistentClient`` by default, ``HttpClient`` when a server URL is set."""
    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if settings.chroma_url:
        url = urlparse(settings.chroma_url)
        return chromadb.HttpClient(
            host=url.hostname or "localhost",
            port=url.port or 8000,
            ssl=url.scheme == "https",
            settings=chroma_settings,
        )
    path = settings.data_dir / "chroma"
    _check_data_dir(settings.data_dir)
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=chroma_settings)


def _check_data_dir(data_dir: Path) -> None:
    """Refuse data dirs written by another program or another version of this one."""
    marker = data_dir / "rag-data.json"
    if not data_dir.exists() or not any(data_dir.iterdir()):
        data_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"schema_version": SCHEMA_VERSION}))
        return
    try:
        version = json.loads(marker.read_text())["schema_version"]
    except (OSError, ValueError, KeyError, TypeError):
        raise StoreError(
            f"{data_dir} is not a data directory of this program (missing or corrupt "
            f"{marker.name}); point RAG_DATA_DIR elsewhere or delete that directory."
        ) from None
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{data_dir} was written by index format {version}, this version reads "
            f"{SCHEMA_VERSION}; run `rag ingest --rebuild` or point RAG_DATA_DIR elsewhere."
        )


class Store:
    """The chunk collection and its manifest for one corpus."""

    def __init__(self, client: Any, name: str, embed_model: str, dim: int) -> None:
        self.client = client
        self.name = name
        self.embed_model = embed_model
        self.dim = dim
        self._open_collections()

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
        for coll in (self.name, self.name + _SENTENCES_SUFFIX, self.name + _MANIFEST_SUFFIX):
            # An absent collection is fine; Chroma's error type for it varies by version.
            with contextlib.suppress(Exception):
                self.client.delete_collection(coll)
        self._open_collections()

    def count(self) -> int:
        return self.chunks.count()

    def file_records(self) -> dict[str, FileRecord]:
        """All fully ingested files, by source path."""
        got = self.files.get(include=["metadatas"])
        return {
            m["source"]: FileRecord(m["source"], m["sha256"], int(m["chunks"]), m["title"])
            for m in got["metadatas"] or []
        }

    def record_file(self, rec: FileRecord) -> None:
        self.files.upsert(
            ids=[rec.source],
            embeddings=[_NO_VECTOR],
            metadatas=[
                {
                    "source": rec.source,
                    "sha256": rec.sha256,
                    "chunks": rec.chunks,
                    "title": rec.title,
                }
            ],
        )

    def forget_file(self, source: str) -> None:
        """Remove a file's manifest record first, then its chunks (crash-safe order)."""
        self.files.delete(ids=[source])
        self.chunks.delete(where={"source": source})
        self.sentences.delete(where={"source": source})

    def add_sentences(
        self,
        ids: list[str],
        texts: list[str],
        vectors: list[list[float]],
        metadatas: list[dict[str, Any]],
    ) -> None:
        """Sentence vectors: the fine-grained dense arm and the answer's sentence scores."""
        self.sentences.upsert(ids=ids, documents=texts, embeddings=vectors, metadatas=metadatas)

    def all_chunks(self) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """Every chunk id, text and metadata (to rebuild the lexical index)."""
        got = self.chunks.get(include=["documents", "metadatas"])
        return got["ids"], got["documents"], got["metadatas"]

    def ids_fingerprint(self) -> str:
        """Cheap identity of the stored chunk set, to tell if the lexical index is in sync."""
        import hashlib

        ids = sorted(self.chunks.get(include=[])["ids"])
        return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def open_store(settings: Settings, embed_model: str, dim: int, name: str | None = None) -> Store:
    """The store for ``name`` (default: the configured collection)."""
    return Store(open_client(settings), name or settings.collection, embed_model, dim)
