"""The chat page's decisions without Streamlit (rag/ui/page.py): whether sign-in is on, what
an answer saves, how a conversation is extended, what an upload failure says. Real SQLite files
for conversations; who is signed in with accounts (each one a password hash, about 0.3 s) is
tests/integration/test_page_signin.py; the page itself is tested through AppTest and a browser."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from rag.accounts.conversations import Conversations
from rag.answering.extractive import Answer
from rag.config import Settings
from rag.ingest.files import Failure
from rag.ui import page
from rag.ui.page import Identity
from tests.conftest import make_settings

PASSWORD = "correct horse battery"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


def test_without_accounts_or_single_sign_on_sign_in_is_off(settings: Settings) -> None:
    assert page.signed_in(settings, Identity("ann")) == (False, None)


def test_an_exchange_creates_then_extends_its_conversation(settings: Settings) -> None:
    store = Conversations(settings, "ann")
    first = [{"role": "user", "content": "Combien ?"}, {"role": "assistant", "content": "Mille."}]
    conv_id = page.save_exchange(store, None, first, first)
    assert store.get(conv_id).title == "Combien ?"
    second = [{"role": "user", "content": "Et après ?"}, {"role": "assistant", "content": "Six."}]
    assert page.save_exchange(store, conv_id, second, first + second) == conv_id
    saved = [m["content"] for m in store.messages(conv_id)]
    assert saved == ["Combien ?", "Mille.", "Et après ?", "Six."]
    store.delete(conv_id)  # from another tab: the next answer saves everything shown again
    again = page.save_exchange(store, conv_id, second, first + second)
    assert again != conv_id and len(store.messages(again)) == 4


def test_answers_history_and_failures_as_the_page_keeps_them() -> None:
    cite = SimpleNamespace(to_json=lambda: {"n": 1, "quote": "Plus de mille."})
    answer = Answer(
        text="Mille [1].",
        mode="extractive",
        note=None,
        verified=True,
        abstained=False,
        confidence=0.6,
        citations=[cite],
        closest=[],
    )
    message = page.answer_message(answer)
    assert message["role"] == "assistant"
    assert message["citations"] == [{"n": 1, "quote": "Plus de mille."}]
    assert page.history([{"role": "user", "content": "Q"}, message]) == [
        ("user", "Q"),
        ("assistant", "Mille [1]."),
    ]
    failed = [Failure("/tmp/up/../secret/a.pdf", "empty file")]
    assert page.upload_errors(failed) == ["Could not index a.pdf: empty file"]
    assert page.client_address("10.0.0.1") == "10.0.0.1"
    assert page.client_address(None) == page.UNKNOWN_ADDRESS
