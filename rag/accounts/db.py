"""The app's own database (accounts, API keys, sign-in failures, conversations): SQLite or
PostgreSQL.

``RAG_DATABASE_URL`` picks it: unset, one SQLite file, ``RAG_DATA_DIR/app.sqlite3``, beside
the index but independent of it (a rebuilt index keeps its users and their conversations);
``postgresql://…``, a PostgreSQL database that several app processes share (docs/deployment.md).

Invariants:
- Callers write one SQL for both: ``?`` placeholders (sent to psycopg as ``%s``), portable
  types and statements (docs/accounts.md), rows read by column name or position.
- Each caller takes a connection per operation (``with connect(settings) as db``), committed
  on success and rolled back on error, so threads (the API's threadpool, Streamlit sessions)
  and processes (``rag user add`` while ``rag serve`` runs) never share one at once: a new
  SQLite one, or one lent by the process's PostgreSQL pool (``POOL_SIZE``) and given back.
  SQLite runs in WAL mode (readers run while one writer commits) and a second writer waits
  up to ``BUSY_TIMEOUT_MS`` instead of failing.
- The schema is the numbered files of ``migrations/`` (adding a migration is adding a file),
  each applied once, in order, in one transaction with its row in ``schema_version``, under
  a lock (``BEGIN IMMEDIATE`` in SQLite, an advisory transaction lock in PostgreSQL), so
  processes starting together never apply one twice. A process checks each database once;
  a database newer than the files it knows is refused rather than written to.
- Every error reaching or opening the database is a ``DatabaseError`` whose message names the
  database (its password hidden) and says what failed.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.datadir import check_data_dir
from rag.errors import RagError

DB_NAME = "app.sqlite3"
# A writer holds the lock for milliseconds; 10 s covers a busy disk without hanging forever.
BUSY_TIMEOUT_MS = 10_000
# A PostgreSQL server that does not answer in 10 s is down or unreachable, not slow; a
# request that waits as long for a pooled connection is refused the same way.
CONNECT_TIMEOUT_S = 10
# Connections each process keeps open to PostgreSQL: a caller holds one for one short
# transaction. A new connection per operation cost 52 ms against 1.1 ms for SQLite (key
# check, loaded shared machine); two replicas and two pages at 10 each stay well under
# PostgreSQL's default max_connections of 100.
POOL_SIZE = 10
MIGRATIONS = Path(__file__).with_name("migrations")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

# Tables added since the last migration file, applied (``CREATE TABLE IF NOT EXISTS``) after
# the migrations; they move into a new numbered file when a release is cut.
SCHEMA = ""

_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied DOUBLE PRECISION NOT NULL
)
"""
_migrated: set[str] = set()
_pools: dict[str, Any] = {}
# Held while a pool is created or a new data dir is marked (once per process, each).
_setup_lock = threading.Lock()


class DatabaseError(RagError):
    """The app database cannot be reached, opened or written; the message says which and why."""


class Row(tuple):
    """A PostgreSQL row read by column name or by position, as ``sqlite3.Row`` is."""

    columns: dict[str, int]

    def __new__(cls, values: Iterable[Any], columns: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row.columns = columns
        return row

    def __getitem__(self, key):  # type: ignore[override]
        return super().__getitem__(self.columns[key] if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self.columns)


def _pg_rows(cursor):
    """psycopg's row factory for ``Row``: column positions computed once per result."""
    columns = {c.name: i for i, c in enumerate(cursor.description or ())}
    return lambda values: Row(values, columns)


_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|%")


@functools.lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s``, a ``?`` in quotes kept; every ``%`` doubled
    (psycopg reads placeholders inside quotes too)."""
    return _TOKENS.sub(lambda m: "%s" if m.group() == "?" else m.group().replace("%", "%%"), sql)


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name`` (Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Database:
    """One open connection, in one transaction, to either backend."""

    def __init__(self, conn: Any, postgres: bool) -> None:
        self.conn = conn
        self.postgres = postgres

    def execute(self, sql: str, params: Sequence[Any] = ()):
        if self.postgres:
            return self.conn.execute(to_pyformat(sql), tuple(params))
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.postgres:
            self.conn.cursor().executemany(to_pyformat(sql), list(rows))
        else:
            self.conn.executemany(sql, rows)

    def transaction(self):
        """A block committed on success and rolled back on error (psycopg runs in autocommit
        mode outside such blocks; sqlite3's connection is itself this block)."""
        return self.conn.transaction() if self.postgres else self.conn

    def write_lock(self, name: str) -> None:
        """Serialise this transaction with every other one taking the same lock, until it ends.

        SQLite has one writer lock for the whole file (``BEGIN IMMEDIATE``, which must then
        be the transaction's first statement); PostgreSQL takes an advisory lock on ``name``.
        """
        if self.postgres:
            self.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(name),))
        else:
            self.conn.execute("BEGIN IMMEDIATE")

    def script(self, sql: str) -> None:
        """Run several statements (a migration file) inside the current transaction."""
        if self.postgres:
            self.conn.execute(sql)
            return
        statement = ""
        for line in sql.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                self.conn.execute(statement)
                statement = ""


def is_postgres(settings: Settings) -> bool:
    return (settings.database_url or "").startswith(POSTGRES_SCHEMES)


def db_path(settings: Settings) -> Path:
    return settings.data_dir / DB_NAME


def shown_url(url: str) -> str:
    """The URL with its password (``user:password@`` or ``?password=``) shown as ``***``."""
    url = re.sub(r"(//[^/:@]*):[^/@]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def describe(settings: Settings) -> str:
    """Which database ``settings`` point to, as messages name it."""
    return shown_url(settings.database_url) if is_postgres(settings) else str(db_path(settings))


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every ``migrations/NNNN_name.sql``, in version order."""
    files = sorted(MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    return [(int(f.name[:4]), f.name, f.read_text(encoding="utf-8")) for f in files]


def migrate(db: Database) -> int:
    """Apply the migrations this database lacks (under the schema lock); its version then."""
    db.write_lock("rag schema")
    db.execute(_VERSIONS)
    done = {row[0] for row in db.execute("SELECT version FROM schema_version").fetchall()}
    known = migrations()
    if done and max(done) > known[-1][0]:
        raise DatabaseError(
            f"The app database is at schema version {max(done)}, newer than this release "
            f"knows ({known[-1][0]}): upgrade rag, or point RAG_DATABASE_URL elsewhere."
        )
    for version, name, sql in known:
        if version not in done:
            db.script(sql)
            db.execute(
                "INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                (version, name, time.time()),
            )
    db.script(SCHEMA)
    return known[-1][0]


def _pool(settings: Settings):
    """This process's connection pool for ``settings.database_url``, opened on first use.

    A first connection is made directly, so an unreachable server, a wrong password or a bad
    URL fails at once with libpq's own reason rather than after the pool's wait. The pool
    checks each connection as it lends it, so a server restarted since is reconnected to.
    """
    import psycopg
    from psycopg_pool import ConnectionPool

    url = settings.database_url
    with _setup_lock:
        if url not in _pools:
            options = {"autocommit": True, "row_factory": _pg_rows}
            try:
                psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, **options).close()
            except psycopg.Error as exc:
                raise _unreachable(settings, exc) from None
            _pools[url] = ConnectionPool(
                url,
                kwargs={**options, "connect_timeout": CONNECT_TIMEOUT_S},
                min_size=1,
                max_size=POOL_SIZE,
                timeout=CONNECT_TIMEOUT_S,
                check=ConnectionPool.check_connection,
                name="rag-app-db",
                open=True,
            )
            atexit.register(_pools[url].close)
        return _pools[url]


@contextlib.contextmanager
def _connection(settings: Settings) -> Iterator[Database]:
    """A connection (no transaction yet): lent by the pool, or a new SQLite one."""
    if is_postgres(settings):
        from psycopg_pool import PoolTimeout

        try:
            with _pool(settings).connection() as conn:
                yield Database(conn, postgres=True)
        except PoolTimeout as exc:
            raise _unreachable(settings, exc) from None
        return
    if settings.database_url:
        url = shown_url(settings.database_url)
        raise DatabaseError(
            f"RAG_DATABASE_URL must start with postgresql:// (got {url!r}); leave it unset "
            "for the SQLite file in RAG_DATA_DIR."
        )
    if not (settings.data_dir / "rag-data.json").exists():
        with _setup_lock:  # threads marking one new data dir at once raced on its draft file
            check_data_dir(settings.data_dir)
    if not db_path(settings).exists():
        _migrated.discard(str(db_path(settings)))
    conn = sqlite3.connect(db_path(settings), timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys=ON")
        yield Database(conn, postgres=False)
    finally:
        conn.close()


def use_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode (it stays so), waiting out other connections doing the same.

    Switching a new file to WAL needs its exclusive lock, and SQLite answers "database is
    locked" at once, without its busy handler, to a connection that asks while another is
    switching: 15 failures in 1,600 connections opened eight at a time on new files. So the
    switch is retried for as long as a writer would wait.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _unreachable(settings: Settings, exc: Exception) -> DatabaseError:
    """The error as one line; libpq quotes a URL it cannot parse, so its password is hidden."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if settings.database_url:
        reason = reason.replace(settings.database_url, describe(settings))
    return DatabaseError(f"Cannot use the app database {describe(settings)}: {reason}")


@contextlib.contextmanager
def connect(settings: Settings) -> Iterator[Database]:
    """A connection to an up-to-date schema, committed on success, rolled back on error.

    With SQLite, a data dir without the index's marker is first checked (``check_data_dir``):
    a new one is marked as ours, as the index would do (holding only this database, it would
    look foreign to the index), and a foreign one is refused before anything is written to it.
    """
    import psycopg

    with _connection(settings) as db:
        try:
            if not db.postgres:
                use_wal(db.conn)
            target = describe(settings)
            if target not in _migrated:
                with db.transaction():  # committed before the caller's transaction starts
                    migrate(db)
                _migrated.add(target)
            with db.transaction():
                yield db
        except (sqlite3.OperationalError, psycopg.OperationalError) as exc:
            raise _unreachable(settings, exc) from exc
