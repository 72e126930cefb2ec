"""Opening Chroma: a server client, or an embedded client that has seen every write.

Chroma keeps one System per path and process, with the vector index in memory; after another
process wrote to the same embedded store that System is out of date. ``open_embedded``
compares the data dir's generation stamp with the one this process's System was opened at
(``rag.datadir.View``) and drops the stale System from Chroma's cache, so the new client
reads the disk anew.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlparse

import chromadb
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import ChromaError

from rag.config import Settings
from rag.datadir import VIEWS, VIEWS_LOCK, LocalSync, StoreError, View, check_data_dir


def chroma_settings() -> ChromaSettings:
    """Telemetry off, resets refused."""
    return ChromaSettings(anonymized_telemetry=False, allow_reset=False)


def open_client(settings: Settings) -> Any:
    """Embedded ``PersistentClient`` by default, ``HttpClient`` when a server URL is set.

    Either way the data dir is checked, or marked as ours when new: in server mode it still
    holds the BM25 index, extracted texts and the account database.
    """
    if settings.chroma_url:
        check_data_dir(settings.data_dir)
        url = urlparse(settings.chroma_url)
        try:
            return chromadb.HttpClient(
                host=url.hostname or "localhost",
                port=url.port or 8000,
                ssl=url.scheme == "https",
                settings=chroma_settings(),
            )
        except (ChromaError, ValueError) as exc:
            raise StoreError(
                f"cannot use the Chroma server at {settings.chroma_url} ({exc}); start it "
                "(`chroma run --path DIR --port PORT`) or unset RAG_CHROMA_URL to use the "
                "embedded store."
            ) from None
    return open_embedded(settings)[0]


def open_embedded(settings: Settings) -> tuple[Any, View]:
    """A ``PersistentClient`` whose System has seen every write made before it was opened."""
    path = settings.data_dir / "chroma"
    check_data_dir(settings.data_dir)
    path.mkdir(parents=True, exist_ok=True)
    key = str(path)
    with VIEWS_LOCK:
        generation = LocalSync(settings.data_dir).generation()
        view = VIEWS.get(key)
        if view is None or view.stale(generation):
            # Chroma keeps one System per path and process, with the vector index in memory;
            # after another process wrote, it is out of date. Dropping it from Chroma's cache
            # (not stopping it: calls in flight finish) makes this client read the disk anew.
            SharedSystemClient._identifier_to_system.pop(key, None)
            view = None
        try:
            client = chromadb.PersistentClient(path=key, settings=chroma_settings())
        except ChromaError as exc:
            # The half-started System stays cached by path; drop it so a retry reads the disk.
            SharedSystemClient._identifier_to_system.pop(key, None)
            VIEWS.pop(key, None)
            raise StoreError(
                f"{path} cannot be opened as a Chroma database ({exc}): it is corrupt or was "
                "written by an incompatible Chroma version. Restore it from a backup, or delete "
                f"{settings.data_dir} (or point RAG_DATA_DIR elsewhere) and run `rag ingest` to "
                "rebuild the index from your documents."
            ) from None
        if view is None:
            view = VIEWS[key] = View(uuid.uuid4().hex, generation)
        return client, view
