"""The app's own small SQLite database (accounts, API keys, sign-in failures, conversations).

One file, ``RAG_DATA_DIR/app.sqlite3``, beside the index but independent of it: a rebuilt
index keeps its users and their conversations. Each caller opens a short-lived connection
per operation, so threads (the API's threadpool, Streamlit sessions) and processes (``rag
user add`` while ``rag serve`` runs) never share one; WAL mode lets readers run while one
writer commits, and ``busy_timeout`` makes a second writer wait instead of failing.
All tables are declared here, in one schema applied (``CREATE TABLE IF NOT EXISTS``) by
every connection.
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

SCHEMA = """
-- rag.accounts.users: users, their API keys (SHA-256 only), failed sign-ins per client
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_sha256 TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sign_in_failures (
    user TEXT NOT NULL,
    client TEXT NOT NULL,
    failures INTEGER NOT NULL,
    locked_until REAL NOT NULL,
    PRIMARY KEY (user, client)
);
-- rag.accounts.conversations: saved conversations per user, their messages in order
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_user ON conversations (user, updated);
CREATE TABLE IF NOT EXISTS messages (
    conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (conversation, position)
);
-- rag.ui.session: the chat page's sign-ins kept across reloads (SHA-256 of tokens only)
CREATE TABLE IF NOT EXISTS page_sessions (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    account_created REAL NOT NULL,
    issued REAL NOT NULL,
    expires REAL NOT NULL,
    code_sha256 TEXT,
    token_sha256 TEXT UNIQUE
);
-- rag.ingest.feeds: the feeds `rag ingest --watch` and the app follow, their validators
CREATE TABLE IF NOT EXISTS feeds (
    url TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    added REAL NOT NULL,
    etag TEXT,
    last_modified TEXT,
    checked REAL,
    status TEXT
);
"""


def db_path(settings: Settings) -> Path:
    return settings.data_dir / DB_NAME


@contextlib.contextmanager
def connect(settings: Settings) -> Iterator[sqlite3.Connection]:
    """A connection with ``SCHEMA`` applied, committed on success, rolled back on error.

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
        conn.executescript(SCHEMA)
        with conn:
            yield conn
    finally:
        conn.close()
