"""Workspaces: named sets of documents, their members and each member's role.

Invariants:
- ``DEFAULT_WORKSPACE`` always exists and is never stored: every account reads it, and
  writes to it with its own role (readers read, editors and admins also upload), so a
  corpus from before workspaces, and the single-user case without accounts, behave as
  before. It cannot be removed, granted or revoked.
- A named workspace is read only by its members (role ``reader`` or ``editor``) and by
  admins, who manage every workspace; with sign-in off (no account) everyone reads and
  edits every workspace, as everyone may do everything then.
- An API key may be limited to one workspace (``key_workspaces``): it then reads that one
  only, and only while its user may.
- A workspace that is not there and one the caller may not read are refused with the same
  ``NoSuchWorkspace`` message, so a refusal does not tell whether the name exists.
- Removing a workspace removes its members, the keys limited to it and the conversations
  held in it; its documents are removed from the index by the caller first
  (``RagService.forget_workspace``), so no chunk is ever left labelled with a workspace
  that no longer exists (``rag.retrieval.scope`` relies on it).
"""

from __future__ import annotations

import time
from typing import Literal, get_args

from rag.accounts.db import connect
from rag.accounts.users import AccountError, User, check_name, key_digest
from rag.config import DEFAULT_WORKSPACE, Settings

MemberRole = Literal["reader", "editor"]
MEMBER_ROLES: tuple[MemberRole, ...] = get_args(MemberRole)


class NoSuchWorkspace(AccountError):
    """Unknown, or not readable by this caller: one message for both."""

    def __init__(self) -> None:
        super().__init__("No such workspace.")


class Workspaces:
    """The workspaces of one data dir; every method opens its own connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _db(self):
        return connect(self.settings)

    def names(self) -> list[str]:
        """Every workspace, the default one first, the others by name."""
        with self._db() as db:
            rows = db.execute("SELECT name FROM workspaces ORDER BY name").fetchall()
        return [DEFAULT_WORKSPACE, *(r["name"] for r in rows)]

    def add(self, name: str) -> None:
        check_name(name)
        if name in (DEFAULT_WORKSPACE, self.settings.collection):
            raise AccountError(f"{name!r} is the default workspace's name; choose another.")
        with self._db() as db:
            if db.execute("SELECT 1 FROM workspaces WHERE name = ?", (name,)).fetchone():
                raise AccountError(f"Workspace {name!r} already exists.")
            db.execute("INSERT INTO workspaces (name, created) VALUES (?, ?)", (name, time.time()))

    def remove(self, name: str) -> None:
        """Delete the workspace, its members, the keys limited to it and its conversations
        (one transaction; its documents are the caller's to remove first)."""
        named = self._named(name)
        with self._db() as db:
            db.execute(
                "DELETE FROM api_keys WHERE key_sha256 IN "
                "(SELECT key_sha256 FROM key_workspaces WHERE workspace = ?)",
                (named,),
            )
            db.execute("DELETE FROM key_workspaces WHERE workspace = ?", (named,))
            db.execute("DELETE FROM workspace_members WHERE workspace = ?", (named,))
            db.execute("DELETE FROM conversations WHERE workspace = ?", (named,))
            db.execute("DELETE FROM workspaces WHERE name = ?", (named,))

    def grant(self, name: str, username: str, role: str) -> None:
        """Make ``username`` a member of ``name`` with ``role`` (replacing its role)."""
        if role not in MEMBER_ROLES:
            raise AccountError(f"Unknown role {role!r}: choose one of {', '.join(MEMBER_ROLES)}.")
        named = self._named(name)
        with self._db() as db:
            if not db.execute("SELECT 1 FROM users WHERE name = ?", (username,)).fetchone():
                raise AccountError(f"No user named {username!r}.")
            db.execute(
                "INSERT INTO workspace_members (workspace, username, role) VALUES (?, ?, ?) "
                "ON CONFLICT (workspace, username) DO UPDATE SET role = excluded.role",
                (named, username, role),
            )

    def revoke(self, name: str, username: str) -> None:
        named = self._named(name)
        with self._db() as db:
            gone = db.execute(
                "DELETE FROM workspace_members WHERE workspace = ? AND username = ?",
                (named, username),
            ).rowcount
        if not gone:
            raise AccountError(f"{username!r} is not a member of {named!r}.")

    def members(self, name: str) -> list[tuple[str, MemberRole]]:
        named = self._named(name)
        with self._db() as db:
            rows = db.execute(
                "SELECT username, role FROM workspace_members WHERE workspace = ? "
                "ORDER BY username",
                (named,),
            ).fetchall()
        return [(r["username"], r["role"]) for r in rows]

    def role_in(self, user: User | None, name: str) -> MemberRole | None:
        """What ``user`` may do in workspace ``name`` (None: nothing, not even know of it)."""
        if user is None:  # sign-in off: everyone may do everything
            return "editor" if name in self.names() else None
        if name == DEFAULT_WORKSPACE:
            return "editor" if user.can("editor") else "reader"
        with self._db() as db:
            exists = db.execute("SELECT 1 FROM workspaces WHERE name = ?", (name,)).fetchone()
            row = db.execute(
                "SELECT role FROM workspace_members WHERE workspace = ? AND username = ?",
                (name, user.name),
            ).fetchone()
        if not exists:
            return None
        if user.can("admin"):
            return "editor"
        return row["role"] if row else None

    def readable(self, user: User | None, key_limit: str | None = None) -> list[str]:
        """The workspaces ``user`` may read (through a key limited to ``key_limit``)."""
        if user is None or user.can("admin"):
            names = self.names()
        else:
            with self._db() as db:
                rows = db.execute(
                    "SELECT workspace FROM workspace_members WHERE username = ? ORDER BY workspace",
                    (user.name,),
                ).fetchall()
            names = [DEFAULT_WORKSPACE, *(r["workspace"] for r in rows)]
        return [n for n in names if key_limit is None or n == key_limit]

    def check(
        self,
        user: User | None,
        name: str,
        role: MemberRole = "reader",
        key_limit: str | None = None,
    ) -> str:
        """``name`` if ``user`` may act in it as ``role``, else ``NoSuchWorkspace`` (not
        readable) or an ``AccountError`` (readable, but the role is too low)."""
        have = self.role_in(user, name)
        if have is None or (key_limit is not None and name != key_limit):
            raise NoSuchWorkspace()
        if role == "editor" and have != "editor":
            raise AccountError(f"The {have} role may not do this in {name!r} (needs editor).")
        return name

    def key_limit(self, key: str) -> str | None:
        """The one workspace an API key is limited to, or None (all its user's)."""
        with self._db() as db:
            row = db.execute(
                "SELECT workspace FROM key_workspaces WHERE key_sha256 = ?", (key_digest(key),)
            ).fetchone()
        return row["workspace"] if row else None

    def _named(self, name: str) -> str:
        """``name`` if it is a stored (not the default) workspace, else an error."""
        if name == DEFAULT_WORKSPACE:
            raise AccountError("The default workspace is everyone's: it has no members.")
        with self._db() as db:
            if not db.execute("SELECT 1 FROM workspaces WHERE name = ?", (name,)).fetchone():
                raise AccountError(f"No workspace named {name!r}.")
        return name
