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
-- rag.accounts.workspaces: named workspaces (the default one is not stored), their members,
-- and the API keys limited to one workspace
CREATE TABLE IF NOT EXISTS workspaces (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS workspace_members (
    workspace TEXT NOT NULL REFERENCES workspaces(name) ON DELETE CASCADE,
    username TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    role TEXT NOT NULL,
    PRIMARY KEY (workspace, username)
);
CREATE TABLE IF NOT EXISTS key_workspaces (
    key_sha256 TEXT PRIMARY KEY REFERENCES api_keys(key_sha256) ON DELETE CASCADE,
    workspace TEXT NOT NULL
);
"""
# Columns added to existing tables, each added when a database lacks it (``add_columns``):
# (table, column, its definition).
COLUMNS = [
    # rag.accounts.conversations: the workspace a conversation belongs to
    ("conversations", "workspace", "TEXT NOT NULL DEFAULT 'default'"),
]


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
        add_columns(conn)
        with conn:
            yield conn
    finally:
        conn.close()


def add_columns(conn: sqlite3.Connection) -> None:
    """Add each of ``COLUMNS`` its table lacks (a database made before the column existed).

    Whether a column exists is asked with a query naming it, which fails without it:
    portable SQL, where a catalogue query is not.
    """
    for table, column, definition in COLUMNS:
        try:
            conn.execute(f"SELECT {column} FROM {table} LIMIT 0")
        except sqlite3.OperationalError:
            # Another connection may add it first: its "duplicate column" is no failure.
            with contextlib.suppress(sqlite3.OperationalError):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                conn.commit()
