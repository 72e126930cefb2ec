"""A throwaway PostgreSQL cluster for the tests: ``initdb`` in a temporary folder, ``postgres``
on a free loopback port, removed at the end of the session.

The binaries come from PATH or from Debian's ``/usr/lib/postgresql/<version>/bin`` (the
``postgresql`` package, which ``.ci/run`` installs); without them the tests that need the
cluster are skipped with that reason. ``initdb`` refuses to run as root: as root the cluster
runs as Debian's ``postgres`` user (else ``nobody``), owning its folder. Connections use a
password over TCP (scram-sha-256), as a deployment would. ``fsync`` is off: the cluster
dies with the session, and the tests kill app processes, never the database.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.procs import free_port

SUPERUSER = "rag"
# A fresh cluster accepts connections in about a second here; 60 s covers a loaded machine.
START_TIMEOUT_S = 60


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``: PATH first, then the newest Debian one."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(os.path.realpath(found)).parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return debian[-1].parent if debian else None


def run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run the cluster as when we are root (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a `postgres` nor a `nobody` account exists")


class Cluster:
    """One running cluster; ``new_database()`` gives each test (or module) its own database."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.user = run_as()
        self.root = Path(tempfile.mkdtemp(prefix="rag-pg-"))
        self.password = secrets.token_hex(16)
        self.port = free_port()
        self.count = 0
        self.proc: subprocess.Popen | None = None
        if self.user:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{SUPERUSER}:{secret}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, **kwargs) -> subprocess.Popen:
        user = {"user": self.user.pw_uid, "group": self.user.pw_gid} if self.user else {}
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8", "TZ": "UTC"}
        return subprocess.Popen(args, env=env, cwd=self.root, **user, **kwargs)

    def start(self) -> None:
        (self.root / "pwfile").write_text(self.password + "\n")
        if self.user:
            os.chown(self.root / "pwfile", self.user.pw_uid, self.user.pw_gid)
        data, log = self.root / "data", (self.root / "initdb.log").open("w")
        done = self._run(
            str(self.bin_dir / "initdb"),
            *("-D", str(data), "-U", SUPERUSER, "--pwfile", str(self.root / "pwfile")),
            *("--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8"),
            stdout=log,
            stderr=subprocess.STDOUT,
        ).wait()
        log.close()
        if done != 0:
            raise RuntimeError((self.root / "initdb.log").read_text())
        self.proc = self._run(
            str(self.bin_dir / "postgres"),
            *("-D", str(data), "-k", str(self.root), "-p", str(self.port)),
            *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"),
            stdout=(self.root / "server.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.root / "server.log").read_text()) from None
                time.sleep(0.2)

    def new_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        self.count += 1
        name = f"test_{self.count}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown (SIGTERM waits for clients)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
