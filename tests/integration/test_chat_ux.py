"""The chat page as a person uses it (issue 31), driven by the real Streamlit ``AppTest``.

Real embedder, Chroma and SQLite; what only a browser shows is in tests/test_browser_ux.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from rag.config import get_settings
from rag.documents.formats import FormatError, extract
from rag.ui.followup import FOLLOW_UP_HINT
from rag.ui.render import (
    CLOSEST_HEADING,
    WORD_JOINER,
    announcement_html,
    answered_by,
    confidence_words,
    escape_md,
    export_filename,
    paragraph_place,
    upload_refusal,
)
from tests.conftest import ROOT

TIMEOUT = 300
KURSK = "How many workers are in Kursk?"
JARGON = ("extractive", "top-k", "chunks", "onnx", "e5-small")


def _page(monkeypatch: pytest.MonkeyPatch, data: Path, **env: str) -> AppTest:
    """The page on its own data dir and settings (the service is cached per settings)."""
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RAG_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "chat.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    yield _page(monkeypatch, tmp_path / "data")
    get_settings.cache_clear()
    st.cache_resource.clear()


def _ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return at


def _main_text(at: AppTest) -> str:
    """What the main column says in words (captions, Markdown, warnings), not the sidebar."""
    parts = [c.value for c in at.main.caption] + [m.value for m in at.main.markdown]
    return "\n".join(parts + [w.value for w in at.main.warning])


def test_the_uploader_states_and_keeps_the_real_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 1: the limit is RAG_MAX_FILE_MB, not Streamlit's 200 MB, and a larger file
    is refused in a person's words, the others indexed."""
    at = _page(monkeypatch, tmp_path / "data", RAG_MAX_FILE_MB="1")
    uploader = at.sidebar.file_uploader[0]
    assert uploader.proto.max_upload_size_mb == 1
    big = b"Un fichier trop gros.\n" * 60_000  # 1.3 MB
    fine = b"Le port de Brest a accueilli 4321 navires en 2023.\n"
    uploader.set_value([("gros.txt", big, "text/plain"), ("brest.txt", fine, "text/plain")])
    at.run()
    assert not at.exception, at.exception
    [error] = [e.value for e in at.error]
    assert "gros.txt is 1.3 MB; files up to 1 MB can be added" in error
    assert "RAG_" not in error
    assert any("1 added" in i.value for i in at.info)


def test_a_question_sent_while_another_waits_is_kept_and_answered_in_order(
    app: AppTest,
) -> None:
    """Defect 2: a question that arrived in a run stopped by the next one (the index was
    still loading) waits in ``pending``; both are shown and answered, oldest first."""
    first = "Combien de spécialistes nord-coréens sont à Koursk ?"
    app.session_state["pending"] = [first]
    _ask(app, KURSK)
    users = [m.markdown[0].value for m in app.chat_message if m.name == "user"]
    assert users == [escape_md(first), escape_md(KURSK)]
    assert [m.name for m in app.chat_message] == ["user", "assistant"] * 2
    assert app.session_state["pending"] == []


def test_the_confidence_is_said_in_words_with_the_scale_one_click_away(app: AppTest) -> None:
    """Friction 6: no number or jargon in the main view; the scale is the caption's help."""
    _ask(app, KURSK)
    [caption] = app.chat_message[1].caption
    assert caption.value.startswith("Quoted from the documents · ")
    assert caption.value.endswith(("Likely answers your question", "Unsure — check the passage"))
    assert "on a scale from 0 to 1" in caption.proto.help
    main = _main_text(app).lower()
    assert not [word for word in JARGON if word in main]
    assert "Search details" in [e.label for e in app.sidebar.expander]


def test_confidence_words_follow_the_threshold() -> None:
    assert confidence_words(None, 0.5) is None
    assert confidence_words(0.49, 0.5) == "No passage answers this"
    assert confidence_words(0.6, 0.5) == "Unsure — check the passage"
    assert confidence_words(0.75, 0.5) == "Likely answers your question"
    assert confidence_words(0.75, 0.7) == "Unsure — check the passage"
    assert answered_by("llm:gpt-x") == "Written by gpt-x from the quoted passages"
    assert answered_by("extractive (fallback: HTTP 401)") == (
        "Quoted from the documents (the language model failed: HTTP 401)"
    )


def test_a_refusal_points_to_what_the_documents_say_on_the_subject(app: AppTest) -> None:
    """Friction 9: a refused question below the gate still gets the sentences that share
    its words, under the closest-passages heading, never as the answer."""
    _ask(app, "How many Vietnamese workers are in Kursk?")
    reply = app.chat_message[1]
    assert reply.markdown[0].value.startswith("I could not find this")
    [leads] = app.main.expander
    assert leads.label == CLOSEST_HEADING
    cards = "\n".join(h.proto.body for h in leads.get("html"))
    assert "dans la région de Kursk" in cards


def test_a_question_over_the_limit_is_refused_and_left_in_the_box(app: AppTest) -> None:
    """Friction 16: the typed text is put back into the chat box, with the reason."""
    long_question = "Combien de spécialistes " * 100
    _ask(app, long_question)
    assert any("please keep it under" in w.value for w in app.warning)
    assert not app.chat_message
    box = app.chat_input[0].proto
    assert box.set_value and box.value == long_question


def test_an_upload_that_indexes_nothing_is_a_warning_not_news(app: AppTest) -> None:
    """Friction 16: "0 added … 1 failed" is not shown in the "indexed" blue."""
    app.sidebar.file_uploader[0].set_value(("broken.txt", b"\x00\x00binary", "text/plain")).run()
    assert not app.exception, app.exception
    assert not app.info
    assert any(w.value.startswith("No upload was indexed") for w in app.warning)
    assert any("broken.txt" in e.value for e in app.error)


def test_a_program_renamed_pdf_is_not_a_pdf_file() -> None:
    with pytest.raises(FormatError, match="not a PDF file"):
        extract(".pdf", b"MZ\x90\x00\x03" + b"\x00" * 2000)


def test_urls_and_addresses_in_text_cannot_become_links() -> None:
    """Defect 4 (the browser test checks the rendered page): GFM autolinks are broken."""
    text = "Voir https://exemple.fr, http://a.b, www.c.fr et contact@d.fr."
    out = escape_md(text)
    assert f"http{WORD_JOINER}s\\:" in out and f"http{WORD_JOINER}\\:" in out
    assert f"www{WORD_JOINER}\\." in out and f"contact{WORD_JOINER}@" in out
    assert out.replace(WORD_JOINER, "").replace("\\", "") == text


def test_the_export_is_named_after_the_conversation_and_day() -> None:
    assert export_filename("How many workers are in Kursk?", "2026-12-07") == (
        "How many workers are in Kursk 2026-12-07.md"
    )
    assert export_filename("../../etc/passwd", "2026-12-07") == "etc passwd 2026-12-07.md"
    assert export_filename("", "2026-12-07") == "conversation 2026-12-07.md"


def test_upload_refusal_speaks_to_a_person() -> None:
    assert upload_refusal("a.pdf", 10, 20) is None
    assert upload_refusal("a.pdf", 10 * 2**30, 0) is None  # 0: no limit
    assert upload_refusal("dir/a.pdf", 22 * 2**20, 20) == (
        "a.pdf is 22.0 MB; files up to 20 MB can be added. Split it, or ask an "
        "administrator to raise the limit."
    )


def test_the_words_that_answer_are_emphasised_with_digits_in_the_question_s_language(
    app: AppTest,
) -> None:
    """Friction 7 and 15: the amount and its noun in bold inside the quote, "plus de mille"
    also as "more than 1,000", the French card marked ``lang="fr"``."""
    _ask(app, KURSK)
    card = "\n".join(h.proto.body for h in app.chat_message[1].get("html"))
    assert '<div class="cite-card" lang="fr">' in card
    assert "<strong>plus de mille spécialistes</strong>" in card
    assert "“plus de mille spécialistes”: more than 1,000" in card


@pytest.mark.parametrize(
    ("question", "sentence", "emphasised", "digits"),
    [
        ("Combien de navires ?", "Il a reçu 4321 navires de pêche en 2023.", ["4321 navires"], []),
        ("When did it open?", "Le pont a ouvert le 20 janvier 1995.", ["20 janvier 1995"], []),
        (
            "How many tourists?",
            "Deux mille trois cents touristes.",
            ["Deux mille trois cents touristes"],
            ["2,300"],
        ),
        (
            "Combien de soldats ?",
            "Près de quatre-vingt soldats.",
            ["Près de quatre-vingt soldats"],
            ["près de 80"],
        ),
        ("Who runs it?", "Marie Curie le dirige depuis 3 ans.", [], []),
    ],
)
def test_answer_spans(question: str, sentence: str, emphasised: list, digits: list) -> None:
    from rag.ui.emphasis import answer_spans, in_digits, text_lang

    spans = [sentence[a:b] for a, b in answer_spans(question, sentence)]
    assert spans == emphasised
    shown = [d for s in spans if (d := in_digits(s, text_lang(question)))]
    assert shown == digits


def test_a_follow_up_without_an_llm_says_it_was_searched_on_its_own(app: AppTest) -> None:
    """Friction 8: carrying the subject over was measured to hurt (benchmarks/follow_ups.py),
    so the page says follow-ups work best with a language model."""
    _ask(app, KURSK)
    _ask(app, "And what will they produce?")
    assert FOLLOW_UP_HINT in [c.value for c in app.chat_message[3].caption]
    assert FOLLOW_UP_HINT not in [c.value for c in app.chat_message[1].caption]


@pytest.mark.parametrize(
    ("question", "follow_up"),
    [
        ("And what will they produce?", True),
        ("Et que vont-ils produire ?", True),
        ("Combien d'employés comptera-t-elle ?", True),
        ("How many workers are in Kursk?", False),
        ("Combien y a-t-il de spécialistes nord-coréens à Kursk ?", False),
    ],
)
def test_is_follow_up(question: str, follow_up: bool) -> None:
    from rag.ui.followup import is_follow_up

    assert is_follow_up(question) is follow_up


def test_the_first_admin_gets_the_conversations_saved_before_sign_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Friction 12: without this, they were nobody's once sign-in was on."""
    import io

    from rag.accounts.conversations import Conversations
    from rag.cli import main

    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        Conversations(get_settings()).create(KURSK)
        monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
        assert main(["user", "add", "reader1", "--role", "reader", "--password-stdin"]) == 0
        assert Conversations(get_settings(), "reader1").list() == []
        monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
        assert main(["user", "add", "boss", "--role", "admin", "--password-stdin"]) == 0
        assert [c.title for c in Conversations(get_settings(), "boss").list()] == [KURSK]
        assert Conversations(get_settings()).list() == []
        assert "1 conversation(s) saved before sign-in are now boss's" in capsys.readouterr().out
        monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
        assert main(["user", "add", "boss2", "--role", "admin", "--password-stdin"]) == 0
        assert Conversations(get_settings(), "boss2").list() == []
    finally:
        get_settings.cache_clear()


def test_deleting_a_conversation_asks_first(app: AppTest) -> None:
    """Friction 13: the first click asks; Cancel keeps it; Yes deletes it."""
    from rag.accounts.conversations import Conversations

    _ask(app, KURSK)
    button = next(b for b in app.sidebar.button if b.label == "Delete this conversation")
    button.click().run()
    assert Conversations(get_settings()).list()
    assert any("cannot be undone" in w.value for w in app.sidebar.warning)
    next(b for b in app.sidebar.button if b.label == "Cancel").click().run()
    assert Conversations(get_settings()).list() and app.chat_message
    next(b for b in app.sidebar.button if b.label == "Delete this conversation").click().run()
    next(b for b in app.sidebar.button if b.label == "Yes").click().run()
    assert Conversations(get_settings()).list() == [] and not app.chat_message


def test_a_second_card_from_the_same_article_does_not_repeat_its_title(app: AppTest) -> None:
    """Friction 14: the two-line title once per article in an answer."""
    _ask(app, "What will North Korean engineers produce?")
    headers = [m.value for m in app.chat_message[1].markdown if m.value.startswith("**[")]
    assert len(headers) >= 2, headers
    assert "La Corée du Nord" in headers[0]
    assert not any("La Corée du Nord" in h for h in headers[1:])


def test_the_sign_in_form_names_the_product_and_lets_password_managers_fill_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Friction 11: a saved password is offered ("current-password"), the product named."""
    from rag.accounts.users import Accounts

    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    Accounts(get_settings()).add("ada", "a long enough password", "admin")
    at = _page(monkeypatch, tmp_path / "data")
    assert at.title[0].value == "Sign in to Cited answers"
    user, password = at.text_input
    assert user.proto.autocomplete == "username"
    assert password.proto.autocomplete == "current-password"


def test_the_ready_page_says_what_is_indexed(app: AppTest) -> None:
    """Friction 10: before the first question, the indexed documents by title."""
    welcome = next(m.value for m in app.main.markdown if m.value.startswith("**Documents"))
    assert welcome.startswith("**Documents you can ask about (1):**")
    assert "La Corée du Nord renforce" in welcome
    _ask(app, KURSK)
    assert not any(m.value.startswith("**Documents") for m in app.main.markdown)


def test_an_example_question_from_the_documents_is_answered_on_a_click(app: AppTest) -> None:
    """Friction 10: example questions drawn from the indexed text, one click to ask."""
    [example] = [b for b in app.main.button if b.label.startswith("Try: ")]
    assert "Combien de spécialistes nord\\-coréens" in example.label
    example.click().run()
    assert not app.exception, app.exception
    assert [m.name for m in app.chat_message] == ["user", "assistant"]
    assert "plus de mille spécialistes" in "\n".join(h.proto.body for h in app.html)


def test_an_announced_answer_stays_text_inside_its_script() -> None:
    """Friction 15: the live region's text cannot end the script or become markup."""
    hostile = 'Voir </script><img src=x onerror="alert(1)"> ' + "x" * 400
    script = announcement_html(hostile)
    assert script.count("<") == 2  # <script> and </script>, ours
    message = json.loads(re.search(r"textContent = (\".*?\");", script).group(1))
    assert message.startswith("Answer: Voir </script><img") and message.endswith("…")


def test_the_viewer_counts_paragraphs_as_non_empty_lines() -> None:
    """Friction 14: "paragraph N of M" in the viewer's header."""
    text = "Titre\n\nPremier paragraphe.\nSecond paragraphe, cité.\n"
    assert paragraph_place(text, 0) == (1, 3)
    assert paragraph_place(text, text.index("cité")) == (3, 3)
