"""The chat page's kept sign-in (rag.ui.session) on a real account database: a handoff code
gives a cookie for a minute, the cookie's token resumes the sign-in until it expires or the
user signs out, and the database never holds a token or a code."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

import app
from rag.accounts.db import db_path
from rag.config import Settings
from rag.ui import session
from rag.ui.page import Identity, signed_in
from tests.conftest import make_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", session_hours=2)


def test_a_code_gives_the_cookie_once_and_the_cookie_resumes_the_sign_in(settings) -> None:
    session_id, code = session.begin(settings, "rita", 123.5)
    token, max_age = session.claim(settings, code)
    assert 2 * 3600 - 5 <= max_age <= 2 * 3600
    assert session.resume(settings, token) == session.Resumed("rita", 123.5, session_id)
    assert session.resume(settings, token + "x") is None
    with sqlite3.connect(db_path(settings)) as conn:
        stored = " ".join(str(v) for row in conn.execute("SELECT * FROM page_sessions")
                          for v in row)  # fmt: skip
    assert token not in stored and code not in stored


def test_the_frame_loaded_again_is_still_signed_in(settings, monkeypatch) -> None:
    """A rerun can mount the hidden frame again (seen under load), cancelling its first
    load after the server claimed the code: a second load with the first cookie keeps it;
    one without gets a new token that replaces it; after ``HANDOFF_S`` only a request
    holding the current token is answered."""
    _, code = session.begin(settings, "rita", 1.0)
    first, _ = session.claim(settings, code)
    assert session.claim(settings, code, held=first)[0] == first
    second, _ = session.claim(settings, code)  # the first load's cookie was never stored
    assert second != first
    assert session.resume(settings, first) is None
    assert session.resume(settings, second).user_name == "rita"
    later = time.time() + session.HANDOFF_S + 1
    monkeypatch.setattr(session.time, "time", lambda: later)
    assert session.claim(settings, code) is None
    assert session.claim(settings, code, held=first) is None
    assert session.claim(settings, code, held=second)[0] == second


def test_signing_out_ends_the_session_wherever_its_cookie_went(settings) -> None:
    session_id, code = session.begin(settings, "rita", 1.0)
    token, _ = session.claim(settings, code)
    session.end(settings, session_id)
    assert session.resume(settings, token) is None


def test_an_old_code_and_an_expired_session_give_nothing(settings, monkeypatch) -> None:
    _, late = session.begin(settings, "rita", 1.0)
    _, code = session.begin(settings, "rita", 1.0)
    token, _ = session.claim(settings, code)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + session.HANDOFF_S + 1)
    assert session.claim(settings, late) is None
    monkeypatch.setattr(time, "time", lambda: now + 2 * 3600 + 1)
    assert session.resume(settings, token) is None


def test_the_cookie_is_http_only_strict_and_secure_over_https() -> None:
    header = session.cookie_header("abc", 60, secure=True)
    assert header.startswith("rag_session=abc; Path=/; Max-Age=60;")
    assert "HttpOnly" in header and "SameSite=Strict" in header and header.endswith("Secure")
    assert "Secure" not in session.cookie_header("abc", 60, secure=False)


def test_a_resumed_session_of_a_removed_and_recreated_account_signs_no_one_in(
    settings,
) -> None:
    """The page checks a resumed sign-in as a fresh one: the account's creation time."""
    from rag.accounts.users import Accounts

    accounts = Accounts(settings)
    accounts.add("rita", "correct horse battery", "reader")
    first = accounts.get("rita")
    _, code = session.begin(settings, "rita", first.created)
    resumed = session.resume(settings, session.claim(settings, code)[0])
    assert signed_in(settings, Identity(resumed.user_name, resumed.user_created))[1] == first
    accounts.remove("rita")
    accounts.add("rita", "correct horse battery", "reader")
    assert signed_in(settings, Identity(resumed.user_name, resumed.user_created))[1] is None


def test_app_py_serves_the_route_the_page_loads() -> None:
    assert app.SESSION_ROUTE == session.ROUTE
