"""Copying the app's SQLite database into PostgreSQL (``rag db migrate --to URL``).

Invariants:
- Both ends are first brought to this release's schema (``connect`` migrates them), so their
  tables and columns are the same; rows are copied table by table in creation order (a
  table is created after the tables it references), in ``BATCH_ROWS`` batches.
- The copy is one transaction in the target, under the schema lock: it is all there or,
  on any error, nothing is.
- The target must hold no row in any table (``schema_version`` aside): a second run, or a
  run into a database already in use, is refused with the table it found rows in, never
  merged into it.
"""

from __future__ import annotations

from rag.accounts.db import DatabaseError, connect, db_path, describe, is_postgres, migrations
from rag.config import Settings

# Rows held in memory at once; a message row is a few KB, so a batch is a few MB at most.
BATCH_ROWS = 1000


def _tables(db) -> list[str]:
    """The SQLite database's own tables, in creation order (``schema_version`` aside)."""
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND name <> 'schema_version' ORDER BY rowid"
    ).fetchall()
    return [row[0] for row in rows]


def _copy_table(source, target, table: str) -> int:
    cursor = source.execute(f'SELECT * FROM "{table}"')
    columns = ", ".join(f'"{d[0]}"' for d in cursor.description)
    marks = ", ".join("?" for _ in cursor.description)
    insert = f'INSERT INTO "{table}" ({columns}) VALUES ({marks})'
    copied = 0
    while rows := cursor.fetchmany(BATCH_ROWS):
        target.executemany(insert, [tuple(row) for row in rows])
        copied += len(rows)
    return copied


def copy_sqlite_to(settings: Settings, url: str) -> dict[str, int]:
    """Copy the SQLite app database of ``settings``' data dir into the empty PostgreSQL
    database at ``url``; the rows copied per table."""
    source = settings.model_copy(update={"database_url": None})
    target = settings.model_copy(update={"database_url": url})
    if not is_postgres(target):
        raise DatabaseError("`rag db migrate --to` takes a postgresql:// URL.")
    if not db_path(settings).exists():
        raise DatabaseError(f"No app database to copy: {describe(source)} does not exist.")
    with connect(source) as src, connect(target) as dst:
        dst.write_lock("rag schema")
        tables = _tables(src)
        for table in tables:
            if dst.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone():
                raise DatabaseError(
                    f"{describe(target)} is not empty (table {table} has rows): "
                    "`rag db migrate` copies into an empty database only."
                )
        return {table: _copy_table(src, dst, table) for table in tables}


def schema_version(settings: Settings) -> tuple[int, int]:
    """(the database's schema version, the newest this release knows)."""
    with connect(settings) as db:
        current = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    return current, migrations()[-1][0]
