"""The data directory: its ownership marker, file locks, and coordination across processes.

Chroma's embedded store is not process-safe, so processes sharing one data dir coordinate
here, through plain files beside it: ``rag-data.json`` marks the directory as ours (and its
format version), ``write.lock`` lets one ingest write at a time, ``chroma.lock`` excludes
readers while a write is under way, and ``chroma.generation`` is renewed by every write so a
reader can tell that its in-memory view of the store is out of date (``View``). None of this
imports Chroma (2 s), so the account database can vet a data dir cheaply. A Chroma server
needs none of the locks: it serialises writes itself.
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

from rag.config import Settings
from rag.errors import RagError

SCHEMA_VERSION = 1
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
VIEWS: dict[str, View] = {}
VIEWS_LOCK = threading.Lock()
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
