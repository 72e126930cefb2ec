"""Local accounts, roles, API keys and the failed sign-in limit.

Invariants:
- Sign-in is on as soon as one account exists (``Accounts.enabled``); with none, callers
  stay open as a single-user tool.
- Passwords are stored only as Argon2id hashes (argon2-cffi's ``PasswordHasher``, its RFC
  9106 low-memory profile: 3 passes over 64 MiB; 0.3 s per hash or check measured on
  this project's shared 2-core machine); hashes are re-computed when those parameters change.
- API keys are 256-bit random strings shown once; only their SHA-256 is stored (a key is
  random, so a fast hash is enough: there is nothing to guess from it).
- Failed sign-ins are counted per user name and client in the database, so a restart does
  not reset them: after ``FREE_FAILURES`` failures each further one locks that pair out for
  twice as long as the last, from ``BASE_LOCK_S`` up to ``MAX_LOCK_S``. A success clears
  the count. Unknown names are counted too, and cost a hash check, so neither the answer
  nor its timing tells whether a name exists.
- Every error raised here is an ``AccountError`` whose message is safe to show as is.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import time
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
BASE_LOCK_S = 30.0
MAX_LOCK_S = 3600.0


_hasher = PasswordHasher()


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


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    created: float

    def can(self, role: Role) -> bool:
        """Whether this user has ``role`` or a role above it."""
        return _RANK[self.role] >= _RANK[role]


def lock_seconds(failures: int) -> float:
    """How long a pair is locked out after its ``failures``-th failure (0: not locked)."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(MAX_LOCK_S, BASE_LOCK_S * 2 ** (failures - FREE_FAILURES))


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
        check_name(name)
        if role not in ROLES:
            raise AccountError(f"Unknown role {role!r}: choose one of {', '.join(ROLES)}.")
        check_password(password)
        user = User(name, role, time.time())  # type: ignore[arg-type]
        password_hash = _hasher.hash(password)
        with self._db() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AccountError(f"User {name!r} already exists.")
            db.execute(
                "INSERT INTO users (name, role, password_hash, created) VALUES (?, ?, ?, ?)",
                (user.name, user.role, password_hash, user.created),
            )
        return user

    def remove(self, name: str) -> None:
        """Delete the user, its API keys and its failure counts."""
        with self._db() as db:
            if db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise AccountError(f"No user named {name!r}.")
            db.execute("DELETE FROM sign_in_failures WHERE user = ?", (name,))

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

    def new_key(self, name: str) -> str:
        """A new API key for ``name``; only its hash is kept, so it is shown once."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._db() as db:
            if not db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AccountError(f"No user named {name!r}.")
            db.execute(
                "INSERT INTO api_keys (key_sha256, user, created) VALUES (?, ?, ?)",
                (key_digest(key), name, time.time()),
            )
        return key

    def user_for_key(self, key: str) -> User | None:
        """The user an API key belongs to, or None for an unknown or revoked key."""
        with self._db() as db:
            row = db.execute(
                "SELECT u.name, u.role, u.created FROM api_keys k JOIN users u "
                "ON u.name = k.user WHERE k.key_sha256 = ?",
                (key_digest(key),),
            ).fetchone()
        return User(row["name"], row["role"], row["created"]) if row else None

    def sign_in(self, name: str, password: str, client: str) -> User:
        """The user, if ``password`` is right and this name and client are not locked out."""
        now = time.time()
        with self._db() as db:
            locked = db.execute(
                "SELECT locked_until FROM sign_in_failures WHERE user = ? AND client = ?",
                (name, client),
            ).fetchone()
            if locked and locked["locked_until"] > now:
                raise LockedOut(locked["locked_until"] - now)
            row = db.execute(
                "SELECT name, role, created, password_hash FROM users WHERE name = ?", (name,)
            ).fetchone()
        if row is None or len(password) > MAX_PASSWORD_CHARS:
            _verify(_dummy_hash(), password[:MAX_PASSWORD_CHARS])
            self._failed(name, client)
        elif not _verify(row["password_hash"], password):
            self._failed(name, client)
        with self._db() as db:
            db.execute("DELETE FROM sign_in_failures WHERE user = ? AND client = ?", (name, client))
            if _hasher.check_needs_rehash(row["password_hash"]):
                db.execute(
                    "UPDATE users SET password_hash = ? WHERE name = ?",
                    (_hasher.hash(password), name),
                )
        return User(row["name"], row["role"], row["created"])

    def _failed(self, name: str, client: str) -> None:
        """Count a failure, lock the pair out if it has failed too often, and raise."""
        with self._db() as db:
            row = db.execute(
                "SELECT failures FROM sign_in_failures WHERE user = ? AND client = ?",
                (name, client),
            ).fetchone()
            failures = (row["failures"] if row else 0) + 1
            wait = lock_seconds(failures)
            db.execute(
                "INSERT OR REPLACE INTO sign_in_failures VALUES (?, ?, ?, ?)",
                (name, client, failures, time.time() + wait),
            )
        raise LockedOut(wait) if wait else SignInError()


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
