"""Sign-in on the page (AppTest): the form first, then what each role may see and do."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from rag.accounts.users import FREE_FAILURES, Accounts
from rag.config import get_settings
from tests.conftest import ROOT

TIMEOUT = 300
PASSWORD = "correct horse battery"
KURSK = "How many workers are in Kursk?"


@pytest.fixture
def accounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Accounts:
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RAG_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    accounts = Accounts(get_settings())
    accounts.add("rita", PASSWORD, "reader")
    accounts.add("ed", PASSWORD, "editor")
    st.cache_resource.clear()  # the app's service is cached per process, with old settings
    yield accounts
    get_settings.cache_clear()
    st.cache_resource.clear()


def signed_out() -> AppTest:
    at = AppTest.from_file(str(ROOT / "chat.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def sign_in(at: AppTest, name: str, password: str = PASSWORD) -> AppTest:
    at.text_input[0].input(name)
    at.text_input[1].input(password)
    next(b for b in at.button if b.label == "Sign in").click().run()
    assert not at.exception, at.exception
    return at


def everything(at: AppTest) -> str:
    """All text the page shows, main area and sidebar."""
    parts = [e.value for kind in ("markdown", "caption", "title", "header") for e in at.get(kind)]
    parts += [str(m.value) for m in at.get("metric")]
    return "\n".join(str(p) for p in parts)


def test_signed_out_visitor_sees_only_the_form(accounts: Accounts) -> None:
    at = signed_out()
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert not at.chat_input and not at.sidebar.button and not at.get("metric")
    assert not at.sidebar.file_uploader
    assert "Documents" not in everything(at) and "seed" not in everything(at).lower()


def test_wrong_password_is_refused_then_locked_out(accounts: Accounts, monkeypatch) -> None:
    monkeypatch.setattr("rag.accounts.users.BASE_LOCK_S", 3600.0)  # outlasts a slow test machine
    at = signed_out()
    for _ in range(FREE_FAILURES - 1):
        sign_in(at, "rita", "wrong password")
        assert at.error[0].value == "Wrong user name or password."
    sign_in(at, "rita", "wrong password")
    assert "Too many failed sign-ins" in at.error[0].value
    sign_in(at, "rita")  # the right password, during the lockout
    assert "Too many failed sign-ins" in at.error[0].value
    assert not at.chat_input


def test_reader_asks_but_cannot_upload_or_reindex(accounts: Accounts) -> None:
    at = sign_in(signed_out(), "rita")
    assert "Signed in as rita (reader)" in everything(at)
    assert not at.sidebar.file_uploader
    assert "Re-index documents" not in [b.label for b in at.sidebar.button]
    at.chat_input[0].set_value(KURSK).run()
    assert "plus de mille spécialistes" in "\n".join(h.proto.body for h in at.html)


def test_editor_uploads_and_conversations_are_per_user(accounts: Accounts) -> None:
    ed = sign_in(signed_out(), "ed")
    assert ed.sidebar.file_uploader
    assert "Re-index documents" in [b.label for b in ed.sidebar.button]
    ed.chat_input[0].set_value(KURSK).run()
    assert [b for b in ed.sidebar.button if (b.key or "").startswith("open-")]
    rita = sign_in(signed_out(), "rita")
    assert not [b for b in rita.sidebar.button if (b.key or "").startswith("open-")]


def test_removed_account_is_signed_out_at_once(accounts: Accounts) -> None:
    at = sign_in(signed_out(), "ed")
    assert at.chat_input
    accounts.remove("ed")
    at.run()
    assert not at.chat_input and [t.label for t in at.text_input] == ["User name", "Password"]


def test_without_accounts_the_page_is_open(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    st.cache_resource.clear()
    at = signed_out()
    assert at.chat_input and at.sidebar.file_uploader
    assert not any("Signed in" in c.value for c in at.caption)
    get_settings.cache_clear()


def test_single_sign_on_is_offered_when_configured(tmp_path: Path, monkeypatch) -> None:
    """With an ``[auth]`` section in the secrets, sign-in is on even with no account."""
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "chat.py"), default_timeout=TIMEOUT)
    at.secrets["auth"] = {
        "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
        "cookie_secret": "not-a-real-secret",
        "client_id": "rag",
        "client_secret": "not-a-real-secret",
        "server_metadata_url": "https://login.example.org/.well-known/openid-configuration",
    }
    at.run()
    assert not at.exception, at.exception
    assert [b.label for b in at.button] == ["Sign in with your organisation"]
    assert not at.chat_input and not at.text_input and not at.get("metric")
    get_settings.cache_clear()


def test_admin_manages_users_on_the_page(accounts: Accounts) -> None:
    accounts.add("ada", PASSWORD, "admin")
    ed = sign_in(signed_out(), "ed")
    assert "Users" not in [e.label for e in ed.sidebar.expander]
    at = sign_in(signed_out(), "ada")
    fields = {t.label: t for t in at.sidebar.text_input}
    fields["New user name"].input("nina")
    fields["Their password"].input(PASSWORD)
    next(b for b in at.sidebar.button if b.label == "Add user").click().run()
    assert not at.exception, at.exception
    assert accounts.get("nina").role == "reader"
    assert "remove-ada" not in [b.key for b in at.sidebar.button]
    next(b for b in at.sidebar.button if b.key == "remove-rita").click().run()
    next(b for b in at.sidebar.button if b.key == "remove-rita-yes").click().run()  # confirmed
    assert accounts.get("rita") is None
