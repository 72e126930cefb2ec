"""Saved conversations, per user, in the app database (``rag.accounts.db``).

Invariants:
- Every query is filtered by the owner's name: a user can neither list, open, rename nor
  delete another user's conversation, whatever id is passed. Without accounts the owner is
  ``LOCAL_USER``.
- A message is stored as the page holds it: ``role`` and ``content``, and for an answer the
  rest of its JSON (mode, note, verified, abstained, citations with offsets and quotes), so
  a reopened answer shows the same citation cards, each re-checked against its source then.
- A conversation belongs to the workspace it was started in; ``list`` shows one workspace's
  (the store's), and ``workspace_of`` tells the page which workspace a linked one needs.
  Rows from before workspaces are in the default workspace.
- The title is the first question (cut to ``TITLE_CHARS``) until renamed.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rag.accounts.db import connect
from rag.config import DEFAULT_WORKSPACE, Settings
from rag.errors import RagError

LOCAL_USER = ""
# Long enough to tell questions apart in a sidebar, short enough for one line of it.
TITLE_CHARS = 80
MISSING_CONVERSATION = "This conversation does not exist (or was deleted)."


class ConversationError(RagError):
    """A conversation that is not there (or not this user's); the message is safe to show."""


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    created: float
    updated: float


def make_title(question: str) -> str:
    title = " ".join(question.split())
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"


class Conversations:
    """One user's conversations; every method opens its own connection."""

    def __init__(
        self, settings: Settings, user: str = LOCAL_USER, workspace: str = DEFAULT_WORKSPACE
    ) -> None:
        self.settings = settings
        self.user = user
        self.workspace = workspace  # where new conversations go, and which ``list`` shows

    def _db(self):
        return connect(self.settings)

    def create(self, first_question: str) -> Conversation:
        now = time.time()
        conv = Conversation(uuid.uuid4().hex, make_title(first_question), now, now)
        with self._db() as db:
            db.execute(
                'INSERT INTO conversations (id, "user", title, created, updated, workspace) '
                "VALUES (?, ?, ?, ?, ?, ?)",
                (conv.id, self.user, conv.title, conv.created, conv.updated, self.workspace),
            )
        return conv

    def list(self) -> list[Conversation]:
        """This user's conversations in this workspace, most recently updated first."""
        with self._db() as db:
            rows = db.execute(
                'SELECT id, title, created, updated FROM conversations WHERE "user" = ? '
                "AND workspace = ? ORDER BY updated DESC",
                (self.user, self.workspace),
            ).fetchall()
        return [Conversation(r["id"], r["title"], r["created"], r["updated"]) for r in rows]

    def get(self, conv_id: str) -> Conversation:
        with self._db() as db:
            row = self._owned(db, conv_id)
        return Conversation(row["id"], row["title"], row["created"], row["updated"])

    def workspace_of(self, conv_id: str) -> str:
        """The workspace this user's conversation ``conv_id`` belongs to."""
        with self._db() as db:
            return self._owned(db, conv_id)["workspace"]

    def messages(self, conv_id: str) -> list[dict[str, Any]]:
        with self._db() as db:
            self._owned(db, conv_id)
            rows = db.execute(
                "SELECT message FROM messages WHERE conversation = ? ORDER BY position",
                (conv_id,),
            ).fetchall()
        return [json.loads(r["message"]) for r in rows]

    def append(self, conv_id: str, messages: list[dict[str, Any]]) -> None:
        """Add messages after the last one (one transaction: a question and its answer).

        The conversation's row is updated first: that write locks it (the row in PostgreSQL,
        the file in SQLite), so two appends to one conversation, from two threads or two
        app processes, count its messages one after the other and never take one position.
        """
        with self._db() as db:
            updated = db.execute(
                'UPDATE conversations SET updated = ? WHERE id = ? AND "user" = ?',
                (time.time(), conv_id, self.user),
            )
            if updated.rowcount == 0:
                raise ConversationError(MISSING_CONVERSATION)
            count = db.execute(
                "SELECT COUNT(*) FROM messages WHERE conversation = ?", (conv_id,)
            ).fetchone()[0]
            db.executemany(
                "INSERT INTO messages (conversation, position, message) VALUES (?, ?, ?)",
                [
                    (conv_id, count + i, json.dumps(m, ensure_ascii=False))
                    for i, m in enumerate(messages)
                ],
            )

    def rename(self, conv_id: str, title: str) -> None:
        title = make_title(title)
        if not title:
            raise ConversationError("A conversation needs a title.")
        with self._db() as db:
            self._owned(db, conv_id)
            db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conv_id))

    def delete(self, conv_id: str) -> None:
        with self._db() as db:
            self._owned(db, conv_id)
            db.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))

    def _owned(self, db, conv_id: str):
        row = db.execute(
            "SELECT id, title, created, updated, workspace FROM conversations "
            'WHERE id = ? AND "user" = ?',
            (conv_id, self.user),
        ).fetchone()
        if row is None:
            raise ConversationError(MISSING_CONVERSATION)
        return row
