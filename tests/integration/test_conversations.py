"""Saved conversations: the store on a real SQLite file and a real PostgreSQL database, and
the page through AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from rag.accounts.conversations import ConversationError, Conversations, make_title
from rag.config import get_settings
from rag.ui.render import CLOSEST_HEADING, conversation_markdown
from tests.conftest import ROOT, SEED, make_settings

TIMEOUT = 300
KURSK = "How many workers are in Kursk?"
BREST = (
    "Rapport sur le port de Brest\n"
    "Le port de Brest a accueilli exactement 4321 navires de pêche en 2023.\n"
)


def test_conversations_are_per_user(tmp_path: Path, database_url: str | None) -> None:
    settings = make_settings(tmp_path / "data", database_url=database_url)
    ann, bob = Conversations(settings, "ann"), Conversations(settings, "bob")
    conv = ann.create("  Where is   Kursk?  ")
    assert conv.title == "Where is Kursk?"
    answer = {"role": "assistant", "content": "There [1].", "citations": [{"n": 1}]}
    ann.append(conv.id, [{"role": "user", "content": "Where is Kursk?"}, answer])
    assert ann.messages(conv.id)[1] == answer
    assert [c.id for c in ann.list()] == [conv.id]
    assert bob.list() == []
    for attempt in (
        lambda: bob.messages(conv.id),
        lambda: bob.rename(conv.id, "mine"),
        lambda: bob.delete(conv.id),
        lambda: bob.append(conv.id, [answer]),
    ):
        with pytest.raises(ConversationError):
            attempt()
    ann.rename(conv.id, "Kursk")
    assert ann.get(conv.id).title == "Kursk"
    ann.delete(conv.id)
    assert ann.list() == []
    assert len(make_title("x" * 500)) == 80


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None) -> Path:
    """The page's settings: a new data dir, on SQLite and on PostgreSQL."""
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    if database_url:
        monkeypatch.setenv("RAG_DATABASE_URL", database_url)
    else:
        monkeypatch.delenv("RAG_DATABASE_URL", raising=False)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RAG_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    st.cache_resource.clear()  # the app's service is cached per process, with old settings
    yield tmp_path / "data"
    get_settings.cache_clear()
    st.cache_resource.clear()


def page(query: dict[str, str] | None = None) -> AppTest:
    """A new browser session (a reload: nothing kept but the URL)."""
    at = AppTest.from_file(str(ROOT / "chat.py"), default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    at.run()
    assert not at.exception, at.exception
    return at


def ask(at: AppTest, question: str) -> None:
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception


def html(at: AppTest) -> str:
    return "\n".join(h.proto.body for h in at.html)


def saved_buttons(at: AppTest) -> list:
    return [b for b in at.sidebar.button if (b.key or "").startswith("open-")]


def test_answer_is_saved_and_reopened_after_a_reload(data_dir: Path) -> None:
    at = page()
    ask(at, KURSK)
    conv_id = at.query_params["c"]
    [button] = saved_buttons(at)
    assert button.label.startswith("How many workers are in Kursk?")
    # A reload keeps only the URL: the conversation comes back with its citation cards.
    again = page({"c": conv_id})
    assert [m.name for m in again.chat_message] == ["user", "assistant"]
    assert "plus de mille spécialistes" in html(again)
    # A new session without the URL lists it; opening it shows the same.
    fresh = page()
    assert not fresh.chat_message
    saved_buttons(fresh)[0].click().run()
    assert [m.name for m in fresh.chat_message] == ["user", "assistant"]
    assert fresh.query_params["c"] == conv_id
    # A follow-up goes into the same conversation.
    ask(fresh, "Combien d'experts le plan prévoit-il ?")
    assert len(Conversations(get_settings()).messages(conv_id)) == 4


def test_rename_delete_and_export(data_dir: Path) -> None:
    at = page()
    ask(at, KURSK)
    conv_id = at.query_params["c"]
    at.sidebar.text_input(key=f"title-{conv_id}").set_value("Kursk workers").run()
    assert saved_buttons(at)[0].label.startswith("Kursk workers")
    export = next(b for b in at.get("download_button"))
    assert not export.proto.disabled
    next(b for b in at.sidebar.button if b.label == "Delete this conversation").click().run()
    next(b for b in at.sidebar.button if b.label == "Yes").click().run()  # confirmed
    assert not saved_buttons(at) and not at.chat_message
    assert Conversations(get_settings()).list() == []
    gone = page({"c": conv_id})
    assert any("does not exist" in w.value for w in gone.warning)


def test_changed_source_is_marked_in_a_reopened_conversation(data_dir: Path) -> None:
    at = page()
    at.sidebar.file_uploader[0].set_value(("brest.txt", BREST.encode(), "text/plain")).run()
    ask(at, "Combien de navires de pêche le port de Brest a-t-il accueillis en 2023 ?")
    assert "4321 navires" in html(at)
    conv_id = at.query_params["c"]
    (data_dir / "uploads" / "brest.txt").write_text(BREST.replace("4321", "9999"), encoding="utf-8")
    again = page({"c": conv_id})
    assert any("changed since this answer" in w.value for w in again.warning)
    assert "4321 navires" not in html(again)


def seed_citation(needle: str, n: int = 1) -> dict:
    """A citation of the seed sentence containing ``needle``, as the page saves one."""
    text = SEED.read_text(encoding="utf-8")
    lines = text.split("\n")
    line = next(i for i, t in enumerate(lines) if needle in t)
    start = sum(len(t) + 1 for t in lines[:line])
    quote = lines[line]
    return {
        "n": n,
        "source": str(SEED),
        "start": start,
        "end": start + len(quote),
        "line": line + 1,
        "quote": quote,
        "title": lines[0],
        "verified": True,
    }


def test_an_answer_saved_before_confidence_still_renders(data_dir: Path) -> None:
    """Saved answers without "confidence" or "closest" show as before, with no confidence."""
    cite = seed_citation("plus de mille spécialistes")
    old = {
        "role": "assistant",
        "content": f"“{cite['quote']}” [1]",
        "mode": "extractive",
        "note": None,
        "verified": True,
        "abstained": False,
        "citations": [cite],
    }
    store = Conversations(get_settings())
    conv = store.create(KURSK)
    store.append(conv.id, [{"role": "user", "content": KURSK}, old])
    at = page({"c": conv.id})
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert "plus de mille spécialistes" in html(at)
    assert [c.value for c in at.chat_message[1].caption] == ["Quoted from the documents"]
    assert not at.main.expander


def test_export_has_the_confidence_and_a_refusal_s_closest_passages() -> None:
    cite = seed_citation("plus de mille spécialistes")
    refusal = {
        "role": "assistant",
        "content": "I could not find this in the indexed documents.",
        "confidence": 0.31,
        "citations": [],
        "closest": [cite],
    }
    old = {"role": "assistant", "content": "An old answer.", "citations": []}
    text = conversation_markdown([{"role": "user", "content": KURSK}, refusal, old])
    assert "_Confidence 0.31_" in text
    after = text.split(f"**{CLOSEST_HEADING}:**\n\n", 1)[1]
    assert after.startswith("- [1] 000_a39d74119d63f477.txt, line 4: “Plus précisément")
    assert text.count("Confidence") == 1  # the old answer has none
