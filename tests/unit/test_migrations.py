"""The app database's migration files and placeholder translation, read without a database."""

from __future__ import annotations

import re

from rag.accounts.db import MIGRATIONS, migrations, shown_url, to_pyformat


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [version for version, _, _ in migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert all(p.name[:4].isdigit() for p in MIGRATIONS.glob("*.sql"))


def test_migrations_use_only_portable_types() -> None:
    """PostgreSQL's REAL is a 4-byte float (a time in seconds off by up to a minute), and
    AUTOINCREMENT and an unquoted `user` column are SQLite-only."""
    for _, name, sql in migrations():
        code = re.sub(r"--[^\n]*", "", sql)
        assert not re.search(r"\bREAL\b|AUTOINCREMENT", code, re.IGNORECASE), name
        assert not re.search(r"(?<![\"\w])user\s+TEXT", code, re.IGNORECASE), name


def test_placeholders_become_psycopg_ones_outside_quotes() -> None:
    assert to_pyformat("SELECT ? WHERE a = ?") == "SELECT %s WHERE a = %s"
    assert to_pyformat("SELECT '?', \"a?\" LIKE 'x%'") == "SELECT '?', \"a?\" LIKE 'x%%'"
    assert to_pyformat("SELECT 'it''s ?', ?") == "SELECT 'it''s ?', %s"


def test_messages_never_show_the_database_password() -> None:
    assert shown_url("postgresql://rag:s3cret@db:5432/rag") == "postgresql://rag:***@db:5432/rag"
    assert shown_url("postgresql://db/rag?password=s3cret&x=1") == (
        "postgresql://db/rag?password=***&x=1"
    )
