"""Which page sessions may upload files: shared by the page (chat.py) and app.py's guard.

Streamlit takes an upload (``PUT /_stcore/upload_file/SESSION/FILE``, held in memory) for
any open session, whatever the page shows it; so a visitor who has not signed in could fill
the server's memory without ever seeing an upload widget. The page records here each
session it shows the upload widget to, and withdraws it when that session may no longer
upload (signed out, removed, not an editor); the guard refuses uploads for any other.

Invariant: a session id is in the set only while the page's last run for it showed the
upload widget. In memory, per process: sessions do not outlive their server.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_sessions: set[str] = set()


def allow(session_id: str, may_upload: bool) -> None:
    """Record whether this session's page now offers uploads."""
    with _lock:
        if may_upload:
            _sessions.add(session_id)
        else:
            _sessions.discard(session_id)


def allowed(session_id: str) -> bool:
    with _lock:
        return session_id in _sessions
