"""The chat page's decisions that need no Streamlit: who is signed in, what an answer saves,
how a saved conversation is labelled and extended, what an upload report tells the user.

chat.py keeps only what draws the page and reads the browser session; each function here
takes what the page read (session values, the signed-in identity, a store) and returns what
the page shows or keeps, so the tests check it without a browser or an AppTest run.
Invariant: the user and role come from the account database on every call, never from a
value the page cached, so a removed account or a changed role applies at once; so do the
workspaces the user may read and edit (``rag.accounts.workspaces``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.accounts.conversations import (
    MISSING_CONVERSATION,
    Conversation,
    ConversationError,
    Conversations,
)
from rag.accounts.users import Accounts, User
from rag.accounts.workspaces import Workspaces

if TYPE_CHECKING:
    from rag.answering.extractive import Answer
    from rag.config import Settings
    from rag.index.records import FileRecord
    from rag.ingest.files import Failure

UNKNOWN_ADDRESS = "unknown"
# Shown on a citation whose document was removed from the index after the answer was given.
REMOVED_NOTICE = "This document was removed from the index; the quote is kept as it was cited."


@dataclass(frozen=True)
class Identity:
    """What the browser session says about who is there: the user name it signed in with
    and that account's creation time, and, with single sign-on configured, whether
    ``st.login`` signed it in and as whom."""

    session_name: str | None
    session_created: float | None = None
    oidc: bool = False
    oidc_signed_in: bool = False
    oidc_name: str | None = None


def signed_in(settings: Settings, identity: Identity) -> tuple[bool, User | None]:
    """Whether sign-in is on, and who is signed in, read from the database every time.

    So a removed account or a changed role applies at once, and a new account given a
    removed one's name is not its sessions' user: a local account must have the creation
    time recorded at sign-in. A single sign-on user gets the role of the local account with
    the same email, or ``RAG_OIDC_ROLE`` (``none``: no access without an account).
    """
    accounts = Accounts(settings)
    if not identity.oidc and not accounts.enabled():
        return False, None
    sso = identity.oidc and identity.oidc_signed_in
    name = identity.oidc_name if sso else identity.session_name
    user = accounts.get(name) if name else None
    if user is not None and not sso and user.created != identity.session_created:
        user = None
    if user is None and sso and settings.oidc_role != "none":
        user = User(name or "", settings.oidc_role, 0.0)
    return True, user


def client_address(address: object) -> str:
    """The browser's address failed sign-ins are counted by (absent behind some proxies).

    app.py's ``PageGuard`` has set it (``rag.security.client_key``): ``X-Forwarded-For`` is
    believed only from ``RAG_TRUSTED_PROXIES``. Streamlit gives None for loopback.
    """
    return address if isinstance(address, str) else UNKNOWN_ADDRESS


def answer_message(answer: Answer) -> dict[str, Any]:
    """An answer as the page keeps it in the conversation and saves it: ``Answer.to_json``
    (who answered, its citations and closest passages as JSON) as a chat message."""
    data = answer.to_json()
    return {"role": "assistant", "content": data.pop("answer"), **data}


def history(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The conversation so far as ``(role, content)`` turns, for rewriting a follow-up."""
    return [(m["role"], m["content"]) for m in messages]


def conversation_label(conv: Conversation, escape: Callable[[str], str]) -> str:
    """A saved conversation's line in the sidebar: its title (through ``escape``, as all
    user text) and when it last changed."""
    return f"{escape(conv.title)} · {time.strftime('%Y-%m-%d %H:%M', time.localtime(conv.updated))}"


def save_exchange(
    store: Conversations,
    conv_id: str | None,
    exchange: list[dict[str, Any]],
    everything: list[dict[str, Any]],
) -> str:
    """Save a question and its answer; the id of the conversation they went into.

    The first exchange creates the conversation; one deleted meanwhile (from another tab)
    is saved again as a new one holding ``everything`` shown so far.
    """
    try:
        if conv_id is not None:
            store.append(conv_id, exchange)
            return conv_id
    except ConversationError:
        exchange = everything
    conv_id = store.create(exchange[0]["content"]).id
    store.append(conv_id, exchange)
    return conv_id


def upload_errors(failed: list[Failure]) -> list[str]:
    """One line per upload that could not be indexed, naming the file (never its path)."""
    return [f"Could not index {Path(name).name}: {reason}" for name, reason in failed]


def document_label(record: FileRecord) -> str:
    """A document as the filter's document picker names it: its title and date."""
    return f"{record.title} · {record.date}" if record.date else record.title


def document_line(record: FileRecord, escape: Callable[[str], str]) -> str:
    """A document's line in the documents list: title (through ``escape``), date, type,
    size, chunks, and who added it when."""
    entry = record.to_json()
    added = "added" + (f" by {escape(record.added_by)}" if record.added_by else "")
    if entry["added_at"]:
        added += f" on {entry['added_at'][:10]}"
    size = f"{record.size / 1024:,.1f} KB" if record.size else "size unknown"
    facts = [entry["date"] or "undated", entry["type"].upper(), size, f"{record.chunks} passages"]
    return f"**{escape(record.title)}**  \n{' · '.join(facts)} · {added}"


def readable_workspaces(settings: Settings, on: bool, user: User | None) -> list[str]:
    """The workspaces the page may show this session, the default one first: every one with
    sign-in off, none to a session signed in as nobody (a removed account)."""
    if on and user is None:
        return []
    return Workspaces(settings).readable(user)


def chosen_workspace(readable: list[str], wanted: str | None) -> str | None:
    """The workspace the page works in: ``wanted`` if readable, else the first readable."""
    return wanted if wanted in readable else next(iter(readable), None)


def may_edit(settings: Settings, on: bool, user: User | None, workspace: str | None) -> bool:
    """Whether this session may upload to and re-index ``workspace``."""
    if workspace is None or (on and user is None):
        return False
    return Workspaces(settings).role_in(user, workspace) == "editor"


def conversation_workspace(store: Conversations, conv_id: str, readable: list[str]) -> str:
    """The workspace of the user's conversation ``conv_id`` when the user may read it; else
    the error a missing conversation gets, so a link never tells a workspace exists."""
    workspace = store.workspace_of(conv_id)
    if workspace not in readable:
        raise ConversationError(MISSING_CONVERSATION)
    return workspace
