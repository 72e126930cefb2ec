"""Asking questions of the seed article: answers, citations, abstention, errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from rag.answering.extractive import QuestionError
from rag.service import RagService, shared_service
from tests.conftest import SEED, make_settings, run_cli


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
        assert set(cite) >= {"n", "source", "start", "end", "line", "quote"}
        text = Path(cite["source"]).read_text(encoding="utf-8")
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
    assert re.match(rf"  \[1\] .*{SEED.name}:4 \(chars \d+-\d+\)\n", closest), closest
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
