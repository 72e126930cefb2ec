"""Asking questions of the seed article: answers, citations, abstention, errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from rag.answering.extractive import QuestionError
from rag.config import get_settings
from rag.documents.citations import Citation, public_json, source_label
from rag.service import RagService, shared_service
from rag.ui import page
from rag.ui.render import conversation_markdown, escape_md, export_text
from tests.conftest import ROOT, SEED, make_settings, run_cli


def test_kursk_is_answered_with_a_verified_line_4_citation(seed_service: RagService) -> None:
    answer = seed_service.ask("How many workers are in Kursk?")
    assert not answer.abstained
    kursk = [c for c in answer.citations if "plus de mille spécialistes nord-coréens" in c.quote]
    assert kursk, answer
    cite = kursk[0]
    text = Path(cite.source).read_text(encoding="utf-8")
    assert text[cite.start : cite.end] == cite.quote
    assert cite.line == 4
    assert f"[{cite.n}]" in answer.text


def test_french_question_is_answered(seed_service: RagService) -> None:
    answer = seed_service.ask("Combien d'experts nord-coréens le plan global prévoit-il ?")
    assert not answer.abstained
    assert any("six mille experts" in c.quote for c in answer.citations)


@pytest.mark.parametrize(
    "question",
    [
        "What is the capital of Australia?",
        "Quelle est la recette de la tarte tatin ?",
        "Who won the 1998 football world cup?",
    ],
)
def test_off_corpus_questions_abstain(seed_service: RagService, question: str) -> None:
    answer = seed_service.ask(question)
    assert answer.abstained
    assert answer.citations == []
    assert answer.text == "I could not find this in the indexed documents."


@pytest.mark.parametrize("question", ["", "   ", "x" * 10_000])
def test_unaskable_questions_get_a_polite_message(seed_service: RagService, question: str) -> None:
    with pytest.raises(QuestionError):
        seed_service.ask(question)


def test_shared_service_warms_up_once_per_settings(tmp_path: Path) -> None:
    """What the app's server does before the first page load, even on an empty index."""
    settings = make_settings(tmp_path / "data")
    service = shared_service(settings)
    service.warm_up()  # nothing indexed yet: loads the model, does not fail
    assert shared_service(settings) is service
    assert shared_service(make_settings(tmp_path / "other")) is not service


def test_odd_questions_never_crash(seed_service: RagService) -> None:
    for question in ["?", "<script>alert(1)</script>", "🙂🙂🙂", "a", "0", "the the the"]:
        answer = seed_service.ask(question)
        assert isinstance(answer.text, str)


def test_cli_contract(tmp_path: Path) -> None:
    data = tmp_path / "data"
    corpus = tmp_path / "seeds"
    corpus.mkdir()
    shutil.copy(SEED, corpus / SEED.name)
    ingest = run_cli("ingest", str(corpus), data_dir=data)
    assert ingest.returncode == 0, ingest.stderr
    assert "1 added" in ingest.stdout and "chunks embedded" in ingest.stdout
    again = run_cli("ingest", str(corpus), data_dir=data)
    assert "0 chunks embedded" in again.stdout

    ask = run_cli("ask", "How many workers are in Kursk?", "--json", data_dir=data)
    assert ask.returncode == 0, ask.stderr
    payload = json.loads(ask.stdout)
    assert payload["abstained"] is False
    assert isinstance(payload["confidence"], float) and 0.0 <= payload["confidence"] <= 1.0
    assert payload["closest"] == []
    for cite in payload["citations"]:
        assert set(cite) >= {"n", "source", "start", "end", "line", "quote", "document_id"}
        assert cite["source"] == SEED.name  # relative to the folder it was indexed from
        text = (corpus / cite["source"]).read_text(encoding="utf-8")
        assert text[cite["start"] : cite["end"]] == cite["quote"]
    assert any(
        "plus de mille spécialistes nord-coréens" in c["quote"] for c in payload["citations"]
    )

    off = json.loads(
        run_cli("ask", "What is the capital of Australia?", "--json", data_dir=data).stdout
    )
    assert off["abstained"] is True
    assert 0.0 <= off["confidence"] <= 1.0

    # Refused for low confidence over related passages: they are listed apart, with quotes.
    strict = {"RAG_ABSTAIN_THRESHOLD": "0.99", "RAG_LLM_GATE": "0.01"}
    low = run_cli("ask", "How many workers are in Kursk?", data_dir=data, env=strict)
    assert low.returncode == 0, low.stderr
    answer, rest = low.stdout.split("\n", 1)
    assert answer == "I could not find this in the indexed documents."
    assert re.match(r"confidence: 0\.\d\d\n", rest), rest
    closest = rest.split("Closest passages (they may not answer your question):\n", 1)[1]
    assert re.match(rf"  \[1\] \d{{4}}-\d\d-\d\d {SEED.name}:4 \(chars \d+-\d+\)\n", closest), (
        closest
    )
    assert "“Plus précisément, dans la région de Kursk, plus de mille" in closest


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    empty = run_cli("ask", "How many workers are in Kursk?", data_dir=data)
    assert empty.returncode != 0
    assert empty.stderr.strip().startswith("error:") and "rag ingest" in empty.stderr
    assert "Traceback" not in empty.stderr
    missing = run_cli("ingest", str(tmp_path / "nope"), data_dir=data)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "nope" in missing.stderr
    blank = run_cli("ask", "  ", data_dir=data)
    assert blank.returncode != 0 and "Traceback" not in blank.stderr


KURSK = "How many workers are in Kursk?"


@pytest.fixture(scope="module")
def nested(tmp_path_factory) -> tuple[RagService, Path]:
    """The seed inside a subfolder of the indexed folder, and an upload beside it."""
    root = tmp_path_factory.mktemp("nested")
    corpus = root / "corpus"
    (corpus / "russie").mkdir(parents=True)
    shutil.copy(SEED, corpus / "russie" / SEED.name)
    service = RagService(make_settings(root / "data"))
    service.ingest([corpus], show_progress=False)
    brest = "Le port\nLe port de Brest a accueilli exactement 4321 navires de pêche en 2023.\n"
    service.add_uploads([("../brest.txt", brest.encode())])
    return service, corpus


def test_citations_show_the_path_relative_to_the_indexed_folder(nested) -> None:
    service, corpus = nested
    cite = next(c for c in service.ask(KURSK).citations if "Kursk" in c.quote)
    assert cite.path == cite.shown == f"russie/{SEED.name}"
    assert cite.source == str((corpus / "russie" / SEED.name).resolve())  # read by the server
    upload = service.ask("Combien de navires de pêche le port de Brest a-t-il accueillis ?")
    assert [c.shown for c in upload.citations] == ["brest.txt"]  # relative to the uploads


def test_cli_shows_relative_paths_unless_asked_for_absolute_ones(nested) -> None:
    service, corpus = nested
    data_dir, absolute = service.settings.data_dir, (corpus / "russie" / SEED.name).resolve()
    plain = run_cli("ask", KURSK, data_dir=data_dir)
    assert plain.returncode == 0, plain.stderr
    assert f" russie/{SEED.name}:4 (chars " in plain.stdout  # after the document's date
    payload = run_cli("ask", KURSK, "--json", data_dir=data_dir).stdout
    assert str(corpus) not in payload and str(data_dir) not in payload
    cite = json.loads(payload)["citations"][0]
    assert cite["source"] == f"russie/{SEED.name}" and "extracted" not in cite
    text = service.document_text(str(absolute))  # what GET /v1/documents/{id} serves
    assert text[cite["start"] : cite["end"]] == cite["quote"]

    shown = run_cli("ask", KURSK, "--absolute", data_dir=data_dir)
    assert f" {absolute}:4 (chars " in shown.stdout
    full = json.loads(run_cli("ask", KURSK, "--json", "--absolute", data_dir=data_dir).stdout)
    assert full["citations"][0]["source"] == str(absolute)
    assert full["citations"][0]["path"] == f"russie/{SEED.name}"


def test_an_index_without_recorded_paths_shows_file_names() -> None:
    """Chunks indexed before paths were recorded carry none: the file's name is shown."""
    old = Citation(1, "/srv/corpus/russie/a.txt", 0, 4, 1, "Kursk")
    assert old.shown == "a.txt" and source_label(old.to_json()) == "a.txt"
    public = public_json(old)
    assert public["source"] == "a.txt" and "/srv" not in json.dumps(public)


def test_the_export_names_files_as_in_their_folder(nested) -> None:
    service, corpus = nested
    answer = service.ask(KURSK)
    exported = conversation_markdown(
        [{"role": "user", "content": KURSK}, page.answer_message(answer)]
    )
    assert f"- [1] russie/{export_text(SEED.name)}, line 4" in exported
    assert str(corpus) not in exported and str(service.settings.data_dir) not in exported


def test_the_page_shows_no_server_path(tmp_path: Path, monkeypatch) -> None:
    """The chat page's cards name the file as in its folder (the page indexes seeds/)."""
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RAG_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    st.cache_resource.clear()  # the page keeps its service per process, with other settings
    try:
        at = AppTest.from_file(str(ROOT / "chat.py"), default_timeout=300).run()
        at.chat_input[0].set_value(KURSK).run()
    finally:
        get_settings.cache_clear()
        st.cache_resource.clear()
    assert not at.exception, at.exception
    shown = [
        e.value for kind in ("markdown", "caption", "warning", "info") for e in getattr(at, kind)
    ]
    text = "\n".join(shown + [h.proto.body for h in at.html])
    assert f"{escape_md(SEED.name)} · line 4" in text
    assert str(ROOT) not in text and str(tmp_path) not in text


def test_the_deciding_score_is_the_same_without_the_judges_own_features(
    seed_service: RagService,
) -> None:
    """The product computes only the deciding score's signals; the benchmarks compute every
    score's (``every_feature``). Both must decide alike, or the fit would not be the product."""
    rows = [json.loads(line) for line in (ROOT / "tests/data/seed_questions.jsonl").open()]
    questions = [r["question"] for r in rows[::4]]
    lean = [seed_service.evidence(q).judgement for q in questions]
    seed_service.every_feature = True
    try:
        full = [seed_service.evidence(q).judgement for q in questions]
    finally:
        seed_service.every_feature = False
    for question, a, b in zip(questions, lean, full, strict=True):
        assert a.confidence == pytest.approx(b.confidence, abs=1e-9), question
        assert a.ranked[0].sentence.text == b.ranked[0].sentence.text, question
        assert "judge" in b.features and "judge" not in a.features
