"""The chat page's sign-in kept across reloads: a session token in an ``HttpOnly`` cookie.

Streamlit signs a person in over the page's websocket, which cannot set a cookie; so after
a sign-in the page shows a hidden frame that loads ``ROUTE`` with a one-time handoff code,
and app.py answers that request with the cookie. On a reload the browser sends the cookie
with the websocket's opening request, where the page reads it (``st.context.cookies``).

Invariants:
- The cookie holds a random 256-bit token; the database keeps only its SHA-256 (as for API
  keys), with the user, the account's creation time and the expiry. A stolen database
  gives no usable cookie; signing out deletes the row, so a copied cookie stops working at
  once, which a signed stateless token could not do before it expired.
- The handoff code gives a token for ``HANDOFF_S`` after the sign-in; each load of it
  that does not hold the current token replaces it, so only the last cookie given signs
  in (a load the browser cancelled leaves no usable token behind). After ``HANDOFF_S`` the
  code gives nothing to a request without the token. The token is never in a URL, a log
  or page script (``HttpOnly``: no script on the page can read it; ``SameSite=Strict``).
- A resumed session is checked as a fresh sign-in is (``rag.ui.page.signed_in``): the
  account must still exist with the same creation time, its role is read again.
- Everything here runs on the app's database (``rag.accounts.db``), so every server on
  the same database, replicas included, knows every session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from rag.accounts.db import connect
from rag.config import Settings

COOKIE = "rag_session"
ROUTE = "/_rag/session"
# Between the sign-in and the hidden frame's request: the frame loads within a second;
# a minute covers a slow browser and leaves an unclaimed code little time to be used.
HANDOFF_S = 60.0


@dataclass(frozen=True)
class Resumed:
    """A kept sign-in, as the page's session state records one."""

    user_name: str
    user_created: float
    session_id: str


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def begin(settings: Settings, user_name: str, user_created: float) -> tuple[str, str]:
    """A new kept sign-in for ``settings.session_hours``: its id and the handoff code the
    hidden frame claims it with. Expired sessions are removed on the way."""
    now = time.time()
    session_id, code = secrets.token_hex(16), secrets.token_urlsafe(32)
    with connect(settings) as conn:
        conn.execute("DELETE FROM page_sessions WHERE expires < ?", (now,))
        conn.execute(
            "INSERT INTO page_sessions (id, username, account_created, issued, expires, "
            "code_sha256, token_sha256) VALUES (?, ?, ?, ?, ?, ?, NULL)",
            (session_id, user_name, user_created, now, now + settings.session_hours * 3600,
             _sha256(code)),
        )  # fmt: skip
    return session_id, code


def claim(settings: Settings, code: str, held: str = "") -> tuple[str, int] | None:
    """The cookie's token for a handoff code and its lifetime in seconds; None for a code
    unknown, or older than ``HANDOFF_S`` on a request that does not hold its token.

    The frame is mounted again when a rerun rebuilds the page around it (seen under load),
    and the first load may then be cancelled after the server claimed its code, so the
    browser never stored the cookie. A later load of the same code is therefore answered:
    with the token its request already holds (``held``, if the first load's cookie was
    stored), else, within ``HANDOFF_S``, with a new token that replaces the first one.
    """
    now = time.time()
    with connect(settings) as conn:
        row = conn.execute(
            "SELECT id, issued, expires, token_sha256 FROM page_sessions WHERE code_sha256 = ?",
            (_sha256(code),),
        ).fetchone()
        if row is None or row["expires"] <= now:
            return None
        max_age = int(row["expires"] - now)
        if held and row["token_sha256"] and hmac.compare_digest(_sha256(held), row["token_sha256"]):
            return held, max_age
        if row["issued"] < now - HANDOFF_S:
            return None
        token = secrets.token_urlsafe(32)
        conn.execute(
            "UPDATE page_sessions SET token_sha256 = ? WHERE id = ?", (_sha256(token), row["id"])
        )
    return token, max_age


def resume(settings: Settings, token: str) -> Resumed | None:
    """The kept sign-in a cookie's token names, or None (unknown, ended or expired)."""
    with connect(settings) as conn:
        row = conn.execute(
            "SELECT id, username, account_created FROM page_sessions "
            "WHERE token_sha256 = ? AND expires > ?",
            (_sha256(token), time.time()),
        ).fetchone()
    return None if row is None else Resumed(row["username"], row["account_created"], row["id"])


def end(settings: Settings, session_id: str) -> None:
    """Sign-out: the session's cookie no longer signs anyone in, wherever it was copied."""
    with connect(settings) as conn:
        conn.execute("DELETE FROM page_sessions WHERE id = ?", (session_id,))


def cookie_header(token: str, max_age: int, secure: bool) -> str:
    """The ``Set-Cookie`` value: script cannot read it, other sites' requests do not carry
    it, and over HTTPS it is sent over HTTPS only."""
    attributes = f"{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    return attributes + ("; Secure" if secure else "")
