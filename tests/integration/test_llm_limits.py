"""What a real small model did to answers, replayed by the stand-in standin: an echoed prompt,
an endless stream, a reply cut by ``max_tokens`` and a 1,000-token "condensed" follow-up.

Each runs the real service over the seed index (real Chroma, the real embedder) and the real
``openai`` client through LlamaIndex; only the model is the stand-in.
"""

from __future__ import annotations

import pytest

from rag.answering.llm import (
    CONDENSE_MAX_TOKENS,
    CONDENSED_MAX_WORDS,
    EchoGuard,
    Prompts,
    usable_condensed,
)
from rag.service import RagService
from tests.conftest import make_settings
from tests.integration.test_llm import KURSK, KURSK_CLAIM, KURSK_SENTENCE, citing, llm_settings
from tests.openai_standin import StandIn, echo, endless, ramble, reply

SALARY = "What is the salary of the workers?"


@pytest.fixture
def service(seed_service: RagService, standin: StandIn, monkeypatch) -> RagService:
    """The session's seed service answering through the stand-in, with a 3 s deadline."""
    settings = llm_settings(seed_service.settings.data_dir, standin.url, llm_deadline=3)
    monkeypatch.setattr(seed_service, "settings", settings)
    return seed_service


def _extractive(seed_service: RagService, monkeypatch, question: str):
    monkeypatch.setattr(seed_service, "settings", make_settings(seed_service.settings.data_dir))
    return seed_service.ask(question)


@pytest.mark.parametrize("question", [KURSK, SALARY])
def test_an_echoed_prompt_is_never_shown(
    service: RagService, standin: StandIn, monkeypatch, question: str
) -> None:
    standin.script(echo())
    stream = service.ask_stream(question)
    shown = "".join(stream)
    answer = stream.finalize()
    assert standin.requests, "the model was asked"
    for echoed in ("<passage", "You answer questions", "NOT_IN_DOCUMENTS", "Quotes:"):
        assert echoed not in shown and echoed not in answer.text
    assert answer.mode == "extractive (fallback: echo)"
    assert "repeated its instructions" in answer.note
    # The extractive answer took over: the same verdict and citations as without an LLM.
    alone = _extractive(service, monkeypatch, question)
    assert (answer.text, answer.abstained, answer.citations) == (
        alone.text,
        alone.abstained,
        alone.citations,
    )


def test_an_answer_is_shown_whole_and_unchanged(service: RagService, standin: StandIn) -> None:
    """Holding text back to look for an echo delays it; it never changes or loses any."""
    standin.script(reply(citing("plus de mille", KURSK_CLAIM, KURSK_SENTENCE)))
    stream = service.ask_stream(KURSK)
    shown = "".join(stream)
    answer = stream.finalize()
    assert shown.strip() == answer.text and answer.text.startswith(KURSK_CLAIM)
    assert answer.verified and [c.quote for c in answer.citations] == [KURSK_SENTENCE]


def test_an_endless_stream_ends_at_the_deadline(service: RagService, standin: StandIn) -> None:
    standin.script(endless())
    stream = service.ask_stream(KURSK)
    shown = "".join(stream)  # returns: the deadline (3 s) cut the stream
    answer = stream.finalize()
    assert shown.startswith("Encore un mot") and answer.text == shown.strip()
    assert "RAG_LLM_DEADLINE" in answer.note
    assert standin.requests[0]["max_tokens"] == service.settings.llm_max_tokens


def test_a_reply_cut_by_max_tokens_keeps_what_came(
    service: RagService, standin: StandIn, monkeypatch
) -> None:
    data_dir = service.settings.data_dir
    monkeypatch.setattr(service, "settings", llm_settings(data_dir, standin.url, llm_max_tokens=16))
    long_claim = " ".join([KURSK_CLAIM] * 5)
    standin.script(reply(citing("plus de mille", long_claim, KURSK_SENTENCE)))
    answer = service.ask(KURSK)
    assert standin.requests[0]["max_tokens"] == 16
    assert answer.text == long_claim[: 16 * 4].strip()  # the stand-in's 4-character tokens
    assert "RAG_LLM_MAX_TOKENS" in answer.note


def test_a_rambling_rewrite_gives_way_to_the_users_words(
    service: RagService, standin: StandIn
) -> None:
    follow_up = "And how many North Korean specialists work in Kursk?"
    standin.script(ramble(), reply(citing("plus de mille", KURSK_CLAIM, KURSK_SENTENCE)))
    history = [("user", "Who works in Kursk?"), ("assistant", "Specialists [1].")]
    answer = service.ask(follow_up, history=history)
    condensing, answering = standin.requests
    assert condensing["max_tokens"] == CONDENSE_MAX_TOKENS
    assert f"Question: {follow_up}" in answering["messages"][-1]["content"]
    assert not answer.abstained and answer.mode.startswith("llm:")


def test_condensed_questions_are_checked() -> None:
    prompts = Prompts.load()
    guard = EchoGuard(prompts.condense)
    history = [("user", "Qui travaille à Koursk ?"), ("assistant", "Des spécialistes [1].")]
    question = "Et combien sont-ils ?"

    def usable(text: str) -> bool:
        return usable_condensed(text, guard, history, question)

    assert usable("Combien de spécialistes travaillent à Koursk ?")
    assert not usable("")
    assert not usable(" ".join(["spécialistes"] * (CONDENSED_MAX_WORDS + 1)))
    assert not usable("Quelle est la capitale de l'Australie ?")  # nothing of the conversation
    assert not usable(prompts.condense.split("\n")[0])  # the instructions themselves
    assert not usable("<conversation> Koursk spécialistes")
