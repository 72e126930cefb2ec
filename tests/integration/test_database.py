"""The app database itself: versioned migrations on SQLite and PostgreSQL, the copy from
SQLite into PostgreSQL (`rag db migrate`), and the errors of an unreachable database."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from rag.accounts import db as app_db
from rag.accounts.conversations import Conversations
from rag.accounts.db import DatabaseError, connect, migrations
from rag.accounts.users import Accounts
from tests.conftest import make_settings, run_cli
from tests.pg import Cluster
from tests.procs import free_port

PASSWORD = "correct horse battery"
# The schema every SQLite app database had before the migration files (users and
# conversations columns named `user`, unquoted; times as REAL).
UNVERSIONED = """
CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
    created REAL NOT NULL);
CREATE TABLE api_keys (key_sha256 TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE, created REAL NOT NULL);
CREATE TABLE sign_in_failures (user TEXT NOT NULL, client TEXT NOT NULL,
    failures INTEGER NOT NULL, locked_until REAL NOT NULL, PRIMARY KEY (user, client));
CREATE TABLE conversations (id TEXT PRIMARY KEY, user TEXT NOT NULL, title TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX conversations_by_user ON conversations (user, updated);
CREATE TABLE messages (conversation TEXT NOT NULL REFERENCES conversations(id)
    ON DELETE CASCADE, position INTEGER NOT NULL, message TEXT NOT NULL,
    PRIMARY KEY (conversation, position));
"""


def versions(settings) -> list[int]:
    with connect(settings) as db:
        return [r["version"] for r in db.execute("SELECT version FROM schema_version")]


def together(target, n: int = 8) -> None:
    """``target`` run by ``n`` threads at once (it waits on its own barrier), all joined."""
    threads = [threading.Thread(target=target) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_connections_switching_a_new_file_to_wal_together_all_succeed(tmp_path: Path) -> None:
    """SQLite answers "database is locked" without waiting to a connection asking for WAL
    while another switches the file (about 1 in 100 before the retry): 40 new files opened
    by eight connections at once."""
    errors: list[Exception] = []
    for round_ in range(40):
        path, gate = tmp_path / f"{round_}.sqlite3", threading.Barrier(8)

        def first_use(path: Path = path, gate: threading.Barrier = gate) -> None:
            conn = sqlite3.connect(path, timeout=app_db.BUSY_TIMEOUT_MS / 1000)
            gate.wait()
            try:
                app_db.use_wal(conn)
            except sqlite3.Error as exc:  # the outcome under test
                errors.append(exc)
            finally:
                conn.close()

        together(first_use)
    assert errors == []


def test_processes_starting_together_apply_each_migration_once(
    tmp_path: Path, database_url: str | None
) -> None:
    """Eight connections open a new database at once (as replicas starting together): the
    schema lock lets one apply the migrations; none fails."""
    settings = make_settings(tmp_path / "data", database_url=database_url)
    gate, errors = threading.Barrier(8), []

    def first_use() -> None:
        gate.wait()
        try:
            Conversations(settings, "ann").list()
        except Exception as exc:  # the outcome under test
            errors.append(exc)

    app_db._migrated.clear()  # as new processes, none has checked the schema yet
    together(first_use)
    assert errors == []
    assert versions(settings) == [v for v, _, _ in migrations()]


def test_a_database_from_before_the_migrations_is_adopted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Accounts(make_settings(data)).enabled()  # marks the data dir as ours
    (data / "app.sqlite3").unlink()
    with sqlite3.connect(data / "app.sqlite3") as old:
        old.executescript(UNVERSIONED)
        old.execute("INSERT INTO users VALUES ('ann', 'admin', 'x', 1.5)")
        old.execute("INSERT INTO conversations VALUES ('c1', 'ann', 'Kursk', 1.5, 2.5)")
    app_db._migrated.clear()
    settings = make_settings(data)
    # adopted as version 1, unchanged; the later files are applied on top
    assert versions(settings) == [v for v, _, _ in migrations()]
    assert [u.name for u in Accounts(settings).list()] == ["ann"]
    assert [c.title for c in Conversations(settings, "ann").list()] == ["Kursk"]


def test_a_newer_schema_is_refused(tmp_path: Path, database_url: str | None) -> None:
    settings = make_settings(tmp_path / "data", database_url=database_url)
    with connect(settings) as db:
        db.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (9999, "9999_future.sql", 0.0))
    app_db._migrated.clear()
    with pytest.raises(DatabaseError, match="schema version 9999, newer than this release"):
        Accounts(settings).list()


def test_rows_read_by_name_or_position_and_question_marks_in_text(
    tmp_path: Path, database_url: str | None
) -> None:
    settings = make_settings(tmp_path / "data", database_url=database_url)
    with connect(settings) as db:
        row = db.execute("SELECT ? AS a, '?' AS b, 'x%y' AS c", ("one",)).fetchone()
    assert (row["a"], row[1], row["c"]) == ("one", "?", "x%y")
    assert tuple(row) == ("one", "?", "x%y")


@pytest.fixture
def filled_sqlite(tmp_path: Path) -> tuple[Path, str]:
    """A SQLite app database with an account, its key and a conversation; the key."""
    data = tmp_path / "data"
    settings = make_settings(data)
    accounts = Accounts(settings)
    accounts.add("ann", PASSWORD, "admin")
    key = accounts.new_key("ann")
    store = Conversations(settings, "ann")
    conv = store.create("Où est Koursk ?")
    store.append(conv.id, [{"role": "user", "content": "Où est Koursk ?"}])
    return data, key


def test_db_migrate_copies_sqlite_into_postgresql_once(
    filled_sqlite: tuple[Path, str], pg_cluster: Cluster
) -> None:
    data, key = filled_sqlite
    url = pg_cluster.new_database()
    done = run_cli("db", "migrate", "--to", url, data_dir=data)
    assert done.returncode == 0, done.stderr
    assert "users\t1" in done.stdout and "messages\t1" in done.stdout
    assert pg_cluster.password not in done.stdout + done.stderr
    on_pg = make_settings(data, database_url=url)
    assert Accounts(on_pg).user_for_key(key).name == "ann"
    assert Accounts(on_pg).sign_in("ann", PASSWORD, "test").role == "admin"
    [conv] = Conversations(on_pg, "ann").list()
    assert Conversations(on_pg, "ann").messages(conv.id)[0]["content"] == "Où est Koursk ?"
    again = run_cli("db", "migrate", "--to", url, data_dir=data)
    assert again.returncode == 2 and "is not empty (table users has rows)" in again.stderr
    status = run_cli("db", "status", data_dir=data, env={"RAG_DATABASE_URL": url})
    latest = migrations()[-1][0]
    assert (
        status.returncode == 0
        and f"schema version {latest} (this release: {latest})" in status.stdout
    )
    assert pg_cluster.password not in status.stdout


def test_an_unreachable_database_is_one_clear_line(
    filled_sqlite: tuple[Path, str], pg_cluster: Cluster
) -> None:
    data, _ = filled_sqlite
    wrong = pg_cluster.url(password="not-the-password")
    down = f"postgresql://rag:secret@127.0.0.1:{free_port()}/postgres"
    cases = {
        wrong: "password authentication failed",
        down: "Connection refused",
        "postgresql://rag:secret@[bad": "IPv6",
        "mysql://rag@db/app": "must start with postgresql://",
    }
    for url, reason in cases.items():
        for args in (("user", "list"), ("db", "status")):
            done = run_cli(*args, data_dir=data, env={"RAG_DATABASE_URL": url})
            assert done.returncode == 2, (url, done.stderr)
            assert done.stderr.startswith("error: ") and reason in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
            assert "not-the-password" not in done.stderr and "secret" not in done.stderr
    refused = run_cli("db", "migrate", "--to", down, data_dir=data)
    assert refused.returncode == 2 and "Connection refused" in refused.stderr
