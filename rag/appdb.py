"""The app's own small SQLite database (accounts, API keys, sign-in failures, conversations).

One file, ``RAG_DATA_DIR/app.sqlite3``, beside the index but independent of it: a rebuilt
index keeps its users and their conversations. Each caller opens a short-lived connection
per operation, so threads (the API's threadpool, Streamlit sessions) and processes (``rag
user add`` while ``rag serve`` runs) never share one; WAL mode lets readers run while one
writer commits, and ``busy_timeout`` makes a second writer wait instead of failing.
Each module creates its own tables (``CREATE TABLE IF NOT EXISTS``) on first use.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from rag.config import Settings
from rag.datadir import check_data_dir

DB_NAME = "app.sqlite3"
# A writer holds the lock for milliseconds; 10 s covers a busy disk without hanging forever.
BUSY_TIMEOUT_MS = 10_000


def db_path(settings: Settings) -> Path:
    return settings.data_dir / DB_NAME


@contextlib.contextmanager
def connect(settings: Settings, schema: str) -> Iterator[sqlite3.Connection]:
    """A connection with ``schema`` applied, committed on success, rolled back on error.

    A data dir without the index's marker is first checked (``check_data_dir``): a new one
    is marked as ours, as the index would do (holding only this database, it would look
    foreign to the index), and a foreign one is refused before anything is written to it.
    """
    if not (settings.data_dir / "rag-data.json").exists():
        check_data_dir(settings.data_dir)
    conn = sqlite3.connect(db_path(settings), timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(schema)
        with conn:
            yield conn
    finally:
        conn.close()
