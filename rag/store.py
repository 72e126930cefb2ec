"""Chroma access: the chunk collection, its sentences, its file manifest, the embedder guard.

Four collections per corpus, all in Chroma so an embedded store and a Chroma server behave
the same: ``<name>`` holds the chunks (through LlamaIndex's ``ChromaVectorStore``),
``<name>__sentences`` one vector per sentence of those chunks (retrieval at two
granularities, and cross-lingual sentence choice for the extractive answer),
``<name>__files`` one record per fully ingested file (its content hash and chunk count), and
``<name>__stamp`` one token, renewed by every ingest that changes chunks (app instances
sharing a Chroma server check it, not the whole id list, before each question).
A file's manifest record is written only after all of its chunks are stored, so an ingest
killed half-way leaves that file unrecorded and the next run redoes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import chromadb
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import ChromaError
from llama_index.vector_stores.chroma import ChromaVectorStore

from rag.config import Settings
from rag.errors import RagError

SCHEMA_VERSION = 1
_MANIFEST_SUFFIX = "__files"
_SENTENCES_SUFFIX = "__sentences"
_STAMP_SUFFIX = "__stamp"
_STAMP_ID = "chunks"
# The manifest needs no vectors, but Chroma requires one per record.
_NO_VECTOR = [0.0]
# Sources per delete request when forgetting many files at once.
_FORGET_BATCH = 500
WRITE_LOCK = "write.lock"
DATA_LOCK = "chroma.lock"
GENERATION = "chroma.generation"

try:  # POSIX advisory locks; elsewhere writers are not serialised (use a Chroma server)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


class StoreError(RagError):
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
        try:
            return chromadb.HttpClient(
                host=url.hostname or "localhost",
                port=url.port or 8000,
                ssl=url.scheme == "https",
                settings=chroma_settings,
            )
        except (ChromaError, ValueError) as exc:
            raise StoreError(
                f"cannot use the Chroma server at {settings.chroma_url} ({exc}); start it "
                "(`chroma run --path DIR --port PORT`) or unset RAG_CHROMA_URL to use the "
                "embedded store."
            ) from None
    return _open_embedded(settings, chroma_settings)[0]


def _open_embedded(settings: Settings, chroma_settings: ChromaSettings) -> tuple[Any, View]:
    """A ``PersistentClient`` whose System has seen every write made before it was opened."""
    path = settings.data_dir / "chroma"
    check_data_dir(settings.data_dir)
    path.mkdir(parents=True, exist_ok=True)
    key = str(path)
    with _views_lock:
        generation = LocalSync(settings.data_dir).generation()
        view = _views.get(key)
        if view is None or view.stale(generation):
            # Chroma keeps one System per path and process, with the vector index in memory;
            # after another process wrote, it is out of date. Dropping it from Chroma's cache
            # (not stopping it: calls in flight finish) makes this client read the disk anew.
            SharedSystemClient._identifier_to_system.pop(key, None)
            view = None
        try:
            client = chromadb.PersistentClient(path=key, settings=chroma_settings)
        except ChromaError as exc:
            # The half-started System stays cached by path; drop it so a retry reads the disk.
            SharedSystemClient._identifier_to_system.pop(key, None)
            _views.pop(key, None)
            raise StoreError(
                f"{path} cannot be opened as a Chroma database ({exc}): it is corrupt or was "
                "written by an incompatible Chroma version. Restore it from a backup, or delete "
                f"{settings.data_dir} (or point RAG_DATA_DIR elsewhere) and run `rag ingest` to "
                "rebuild the index from your documents."
            ) from None
        if view is None:
            view = _views[key] = View(uuid.uuid4().hex, generation)
        return client, view


def check_data_dir(data_dir: Path) -> None:
    """Refuse data dirs written by another program or another version of this one."""
    marker = data_dir / "rag-data.json"
    draft = marker.with_suffix(".tmp")
    if not data_dir.exists() or all(p == draft for p in data_dir.iterdir()):
        # Written aside then renamed: a process killed here leaves no half-written marker.
        data_dir.mkdir(parents=True, exist_ok=True)
        draft.write_text(json.dumps({"schema_version": SCHEMA_VERSION}))
        draft.replace(marker)
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
            f"{SCHEMA_VERSION}; point RAG_DATA_DIR elsewhere, or delete that directory and "
            "run `rag ingest` to rebuild the index from your documents."
        )


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` (created if missing); yields whether it is held.

    Every call opens its own file description, so threads of one process exclude each other
    as well as other processes. Without ``blocking`` it yields False instead of waiting.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        if fcntl is None:
            yield True
            return
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def write_lock(settings: Settings) -> Iterator[None]:
    """One writer at a time on an embedded store, across processes and threads.

    Chroma's embedded store is not process-safe: two processes adding vectors at the same
    time can lose some of them from the vector index (seen here: 70 of 1,500 missing from
    query results while ``count()`` had them all). A Chroma server serialises writes itself.
    Open the store first: the lock file must not be the first thing in a new data dir.
    """
    if settings.chroma_url:
        yield
        return
    lock = settings.data_dir / WRITE_LOCK
    with file_lock(lock, blocking=False) as held:
        if held:
            yield
            return
    log.warning("waiting for another ingest into %s to finish", settings.data_dir)
    with file_lock(lock):
        yield


@dataclass(frozen=True)
class View:
    """This process's Chroma System for one embedded path, and the disk it has seen."""

    token: str  # names the System in generation stamps it writes
    generation: str  # the stamp on disk when the System was opened

    def stale(self, generation: str) -> bool:
        """Whether something other than this System wrote since it was opened."""
        return generation != self.generation and not generation.startswith(self.token + ":")


# The current View per embedded Chroma path in this process.
_views: dict[str, View] = {}
_views_lock = threading.Lock()
# Locks each thread holds, by lock file: [depth, exclusive].
_held = threading.local()


class LocalSync:
    """Readers and writers of one embedded store, across processes, through two files.

    Chroma's embedded store is not process-safe: each process holds the vector index in
    memory and neither sees nor survives another process's writes (queries fail with
    "Error finding id" or miss vectors; concurrent writers lose vectors). So every write
    holds ``chroma.lock`` exclusively and first changes the ``chroma.generation`` stamp;
    every read holds it shared, and a reader whose System predates the stamp reopens Chroma
    first (``RagService``). A Chroma server needs none of this.
    """

    def __init__(self, data_dir: Path) -> None:
        self.lock_path = data_dir / DATA_LOCK
        self.stamp_path = data_dir / GENERATION

    def generation(self) -> str:
        try:
            return self.stamp_path.read_text()
        except OSError:
            return ""

    @contextlib.contextmanager
    def hold(self, *, exclusive: bool, token: str = "") -> Iterator[None]:
        """Shared or exclusive hold, re-entrant in a thread; an exclusive one re-stamps."""
        key = str(self.lock_path)
        held = getattr(_held, "locks", None)
        if held is None:
            held = _held.locks = {}
        if key in held:
            if exclusive and not held[key][1]:
                raise RuntimeError("cannot write to the store while reading it")
            held[key][0] += 1
            try:
                yield
            finally:
                held[key][0] -= 1
            return
        with open(self.lock_path, "a") as fh:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            held[key] = [1, exclusive]
            try:
                if exclusive:  # before writing: a writer killed half-way still re-stamps
                    tmp = self.stamp_path.with_name(f"{GENERATION}.{os.getpid()}")
                    tmp.write_text(f"{token}:{uuid.uuid4().hex}")
                    os.replace(tmp, self.stamp_path)
                yield
            finally:
                del held[key]
                if fcntl is not None:
                    fcntl.flock(fh, fcntl.LOCK_UN)


def writer_active(settings: Settings) -> bool:
    """Whether an ingest holds the embedded store's write lock right now."""
    lock = settings.data_dir / WRITE_LOCK
    if settings.chroma_url or not lock.exists():
        return False
    with file_lock(lock, blocking=False) as held:
        return not held


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

    def file_records(self) -> dict[str, FileRecord]:
        """All fully ingested files, by source path."""
        got = self.files.get(include=["metadatas"])
        return {
            m["source"]: FileRecord(m["source"], m["sha256"], int(m["chunks"]), m["title"])
            for m in got["metadatas"] or []
        }

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

    def all_chunks(self) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """Every chunk id, text and metadata (to rebuild the lexical index)."""
        got = self.chunks.get(include=["documents", "metadatas"])
        return got["ids"], got["documents"], got["metadatas"]

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

    def ids_fingerprint(self) -> str:
        """Cheap identity of the stored chunk set, to tell if the lexical index is in sync."""
        import hashlib

        ids = sorted(self.chunks.get(include=[])["ids"])
        return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def open_store(settings: Settings, embed_model: str, dim: int, name: str | None = None) -> Store:
    """The store for ``name`` (default: the configured collection)."""
    name = name or settings.collection
    if settings.chroma_url:
        return Store(open_client(settings), name, embed_model, dim)
    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    client, view = _open_embedded(settings, chroma_settings)
    return Store(client, name, embed_model, dim, LocalSync(settings.data_dir), view)
