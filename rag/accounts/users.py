"""Local accounts, roles, API keys and the failed sign-in limit.

Invariants:
- Sign-in is on as soon as one account exists (``Accounts.enabled``); with none, callers
  stay open as a single-user tool.
- Passwords are stored only as Argon2id hashes (argon2-cffi's ``PasswordHasher``, its RFC
  9106 low-memory profile: 3 passes over 64 MiB; 0.3 s per hash or check measured on
  this project's shared 2-core machine); hashes are re-computed when those parameters change.
- API keys are 256-bit random strings shown once; only their SHA-256 is stored (a key is
  random, so a fast hash is enough: there is nothing to guess from it).
- Failed sign-ins are counted per user name and client, and per user name from any client,
  in the database, so a restart does not reset them: after ``FREE_FAILURES`` failures of a
  pair (``ACCOUNT_FREE_FAILURES`` of a name) each further one locks it out for twice as
  long as the last, from ``BASE_LOCK_S`` up to ``MAX_LOCK_S``. A success clears both
  counts. Unknown names are counted too, and cost a hash check, so neither the answer nor
  its timing tells whether a name exists.
- An attempt is counted before its password is checked, in the same write transaction as
  the lock check, under the name's write lock (``Database.write_lock``: SQLite's
  ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock, so every app process sharing the database
  takes the same one): simultaneous attempts are serialised there, so once a lock is due no
  further attempt reaches a password check, and no count is lost. A success then clears the
  count it added.
- Nothing about users or keys is cached in the process: every check reads the database, so
  a removed user or key is refused by every app process at once.
- At most ``MAX_HASHING`` Argon2 computations run at once in a process; a sign-in that
  finds no free slot within ``HASHING_WAIT_S`` is refused (``Busy``, not counted).
- Removing an account deletes its API keys, failure counts and saved conversations, so a
  new account of the same name starts with none of them.
- The first admin account takes over the conversations saved before there were accounts
  (owner ``LOCAL_USER``): once sign-in is on nobody could open them otherwise.
- Every error raised here is an ``AccountError`` whose message is safe to show as is.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from rag.accounts.db import connect
from rag.config import Settings
from rag.errors import RagError

Role = Literal["reader", "editor", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
# Each role may do what the roles before it may: readers ask and read sources, editors also
# upload and re-index, admins also manage users.
_RANK = {role: rank for rank, role in enumerate(ROLES)}

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD_CHARS = 8
# Passwords longer than this are refused rather than hashed: Argon2 takes any length, but a
# megabyte "password" posted to the sign-in form would be hashed in full.
MAX_PASSWORD_CHARS = 1024
KEY_PREFIX = "rag_"
FREE_FAILURES = 5
# Per name from any client: enough for a few people mistyping at once, few enough that
# guessing from many addresses gets 20 tries before the name is locked for everyone.
ACCOUNT_FREE_FAILURES = 20
# The client column of a name's count over all clients (a client is an address or a word).
ANY_CLIENT = ""
BASE_LOCK_S = 30.0
MAX_LOCK_S = 3600.0
# Each Argon2 computation holds 64 MiB: 4 at once bound them to 256 MiB per process (30
# simultaneous sign-ins took about 1.5 GB before), and keep both cores of the shared
# machine busy. A queued sign-in waits up to 30 s, about 100 checks at 0.3 s each, 4 at once.
MAX_HASHING = 4
HASHING_WAIT_S = 30.0


_hasher = PasswordHasher()
_hashing = threading.BoundedSemaphore(MAX_HASHING)


class AccountError(RagError):
    """A refused account operation; the message is safe to show the user as is."""


class SignInError(AccountError):
    """Wrong name or password (one message for both: names are not disclosed)."""

    def __init__(self) -> None:
        super().__init__("Wrong user name or password.")


class LockedOut(AccountError):
    """Too many failed sign-ins from this client for this name."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"Too many failed sign-ins: try again in {max(1, round(retry_after))} s.")


class Busy(AccountError):
    """Every password-checking slot stayed taken for ``HASHING_WAIT_S``."""

    def __init__(self) -> None:
        super().__init__("Too many sign-ins at once: try again in a few seconds.")


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    created: float

    def can(self, role: Role) -> bool:
        """Whether this user has ``role`` or a role above it."""
        return _RANK[self.role] >= _RANK[role]


def lock_seconds(failures: int, free: int = FREE_FAILURES) -> float:
    """How long a count is locked out after its ``failures``-th failure (0: not locked);
    ``free``: ``FREE_FAILURES`` for a name and client, ``ACCOUNT_FREE_FAILURES`` for a name."""
    if failures < free:
        return 0.0
    return min(MAX_LOCK_S, BASE_LOCK_S * 2 ** (failures - free))


@contextlib.contextmanager
def hashing_slot() -> Iterator[None]:
    """One of the ``MAX_HASHING`` Argon2 slots, or ``Busy``."""
    if not _hashing.acquire(timeout=HASHING_WAIT_S):
        raise Busy()
    try:
        yield
    finally:
        _hashing.release()


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Accounts:
    """The accounts of one data dir; every method opens its own connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _db(self):
        return connect(self.settings)

    def enabled(self) -> bool:
        """Sign-in is required as soon as one account exists."""
        with self._db() as db:
            return db.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None

    def add(self, name: str, password: str, role: str) -> User:
        """A new account; the first admin also gets the conversations saved without one."""
        check_name(name)
        if role not in ROLES:
            raise AccountError(f"Unknown role {role!r}: choose one of {', '.join(ROLES)}.")
        check_password(password)
        user = User(name, role, time.time())  # type: ignore[arg-type]
        with hashing_slot():
            password_hash = _hasher.hash(password)
        with self._db() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AccountError(f"User {name!r} already exists.")
            first_admin = (
                role == "admin"
                and not db.execute("SELECT 1 FROM users WHERE role = 'admin' LIMIT 1").fetchone()
            )
            db.execute(
                "INSERT INTO users (name, role, password_hash, created) VALUES (?, ?, ?, ?)",
                (user.name, user.role, password_hash, user.created),
            )
            if first_admin:  # conversations saved before sign-in existed: nobody else's
                db.execute(
                    """UPDATE conversations SET "user" = ? WHERE "user" = ''""", (user.name,)
                )
        return user

    def remove(self, name: str) -> None:
        """Delete the user, its API keys, failure counts and conversations (one transaction).

        Conversations are kept by user name: left behind, they would be a new account's of
        the same name.
        """
        with self._db() as db:
            if db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise AccountError(f"No user named {name!r}.")
            db.execute('DELETE FROM sign_in_failures WHERE "user" = ?', (name,))
            db.execute('DELETE FROM conversations WHERE "user" = ?', (name,))  # messages cascade

    def list(self) -> list[User]:
        with self._db() as db:
            rows = db.execute("SELECT name, role, created FROM users ORDER BY name").fetchall()
        return [User(r["name"], r["role"], r["created"]) for r in rows]

    def get(self, name: str) -> User | None:
        with self._db() as db:
            row = db.execute(
                "SELECT name, role, created FROM users WHERE name = ?", (name,)
            ).fetchone()
        return User(row["name"], row["role"], row["created"]) if row else None

    def new_key(self, name: str, workspace: str | None = None) -> str:
        """A new API key for ``name``, limited to ``workspace`` if given (in the same
        transaction: never an unlimited key by accident); only its hash is kept, so it is
        shown once."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._db() as db:
            if not db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AccountError(f"No user named {name!r}.")
            db.execute(
                """INSERT INTO api_keys (key_sha256, "user", created) VALUES (?, ?, ?)""",
                (key_digest(key), name, time.time()),
            )
            if workspace is not None:
                db.execute(
                    "INSERT INTO key_workspaces (key_sha256, workspace) VALUES (?, ?)",
                    (key_digest(key), workspace),
                )
        return key

    def user_for_key(self, key: str) -> User | None:
        """The user an API key belongs to, or None for an unknown or revoked key."""
        with self._db() as db:
            row = db.execute(
                "SELECT u.name, u.role, u.created FROM api_keys k JOIN users u "
                'ON u.name = k."user" WHERE k.key_sha256 = ?',
                (key_digest(key),),
            ).fetchone()
        return User(row["name"], row["role"], row["created"]) if row else None

    def sign_in(self, name: str, password: str, client: str) -> User:
        """The user, if ``password`` is right and neither this name and client nor this name
        is locked out; the attempt is counted before the password is checked."""
        client = client or "unknown"  # "" is ANY_CLIENT
        with self._db() as db:
            wait = _lock_wait(db, name, client, time.time())
        if wait > 0:  # refused at once, without queueing for a hashing slot
            raise LockedOut(wait)
        with hashing_slot():
            lock = self._count_attempt(name, client)
            with self._db() as db:
                row = db.execute(
                    "SELECT name, role, created, password_hash FROM users WHERE name = ?",
                    (name,),
                ).fetchone()
            if row is None or len(password) > MAX_PASSWORD_CHARS:
                _verify(_dummy_hash(), password[:MAX_PASSWORD_CHARS])
                row = None
            elif not _verify(row["password_hash"], password):
                row = None
            if row is None:
                raise LockedOut(lock) if lock else SignInError()
            self._succeeded(name, client, row["password_hash"], password)
        return User(row["name"], row["role"], row["created"])

    def _count_attempt(self, name: str, client: str) -> float:
        """Check the locks and count this attempt as a failure, atomically; the lock it set
        (0: none). Raises ``LockedOut`` when a lock is due (the attempt is then not counted).
        """
        now = time.time()
        with self._db() as db:
            db.write_lock(f"sign-in {name}")  # no other attempt reads them until commit
            wait = _lock_wait(db, name, client, now)
            if wait > 0:
                raise LockedOut(wait)
            lock = 0.0
            for key, free in ((client, FREE_FAILURES), (ANY_CLIENT, ACCOUNT_FREE_FAILURES)):
                row = db.execute(
                    'SELECT failures FROM sign_in_failures WHERE "user" = ? AND client = ?',
                    (name, key),
                ).fetchone()
                failures = (row["failures"] if row else 0) + 1
                lock = max(lock, lock_seconds(failures, free))
                db.execute(
                    'INSERT INTO sign_in_failures ("user", client, failures, locked_until) '
                    'VALUES (?, ?, ?, ?) ON CONFLICT ("user", client) DO UPDATE SET '
                    "failures = excluded.failures, locked_until = excluded.locked_until",
                    (name, key, failures, now + lock_seconds(failures, free)),
                )
        return lock

    def _succeeded(self, name: str, client: str, password_hash: str, password: str) -> None:
        """Clear the counts of a right password, and re-hash it if the parameters changed."""
        with self._db() as db:
            db.execute(
                'DELETE FROM sign_in_failures WHERE "user" = ? AND client IN (?, ?)',
                (name, client, ANY_CLIENT),
            )
            if _hasher.check_needs_rehash(password_hash):
                db.execute(
                    "UPDATE users SET password_hash = ? WHERE name = ?",
                    (_hasher.hash(password), name),
                )


def _lock_wait(db, name: str, client: str, now: float) -> float:
    """Seconds until this name and client, and this name, are both free to try (0: now)."""
    rows = db.execute(
        'SELECT locked_until FROM sign_in_failures WHERE "user" = ? AND client IN (?, ?)',
        (name, client, ANY_CLIENT),
    ).fetchall()
    return max([r["locked_until"] - now for r in rows] + [0.0])


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the name is unknown, so that case costs the same time."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise AccountError(
            "A user name is 1 to 64 letters, digits or . _ @ -, starting with a letter or digit."
        )


def check_password(password: str) -> None:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise AccountError(
            f"A password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters."
        )
