"""`rag serve` as the OpenAI clients people use read it: the `openai` client, LlamaIndex's
`OpenAILike`, litellm and LangChain, plain and streaming, with the stand-in as the model.

Each client must reach the answer's citations and its verdict (``abstained``, ``verified``,
``mode``, ``note``, ``confidence``), directly or by the recipe in docs/api.md; the protocol's
own fields (``usage``, ``finish_reason``, ``max_tokens``, refused parameters, the model card,
Open WebUI's ``source`` events, CORS) are checked with the `openai` client and plain HTTP.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from rag.service import RagService
from tests.conftest import make_settings
from tests.integration.test_llm import KURSK_CLAIM, KURSK_SENTENCE, MODEL, citing, llm_env
from tests.openai_standin import StandIn, echo, endless, error, reply
from tests.system.test_api import KURSK, KURSK_QUOTE, client, rag_serve

# litellm would otherwise fetch its model price list from GitHub when imported.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
VERDICT = {"abstained", "verified", "mode", "note", "confidence", "citations"}
CORS_ORIGIN = "https://chat.example.org"


@pytest.fixture(scope="module")
def url(tmp_path_factory, seed_corpus: Path, standin: StandIn) -> Iterator[str]:
    """No account, answers through the stand-in within a 3 s deadline; one CORS origin."""
    data_dir = tmp_path_factory.mktemp("clients") / "data"
    RagService(make_settings(data_dir)).ingest([seed_corpus], show_progress=False)
    env = {**llm_env(standin.url), "RAG_LLM_DEADLINE": "3", "RAG_API_CORS_ORIGINS": CORS_ORIGIN}
    with rag_serve(data_dir, env) as base:
        yield base


@pytest.fixture
def kursk(standin: StandIn) -> None:
    standin.script(reply(citing("plus de mille", KURSK_CLAIM, KURSK_SENTENCE)))


def _check(verdict: dict[str, Any]) -> None:
    """An LLM answer's verdict and its verified line-4 citation, as a client received them."""
    assert set(verdict) >= VERDICT, verdict
    assert verdict["abstained"] is False and verdict["verified"] is True
    assert verdict["mode"] == f"llm:{MODEL}" and verdict["note"] is None
    assert 0 <= verdict["confidence"] <= 1
    assert [c["quote"] for c in verdict["citations"]] == [KURSK_SENTENCE]


def _ask(**extra: Any) -> dict[str, Any]:
    return {"model": "documents", "messages": [{"role": "user", "content": KURSK}], **extra}


def test_openai_client_plain(url: str, kursk) -> None:
    done = client(url).chat.completions.create(**_ask())
    message = done.choices[0].message
    assert message.content.startswith(KURSK_CLAIM) and done.choices[0].finish_reason == "stop"
    _check(message.model_extra)
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


def test_openai_client_streaming(url: str, kursk) -> None:
    chunks = list(
        client(url).chat.completions.create(
            **_ask(stream=True, stream_options={"include_usage": True})
        )
    )
    *answer, last = chunks
    assert last.choices == [] and last.usage.completion_tokens > 0  # the usage chunk
    final = answer[-1]
    assert final.choices[0].finish_reason == "stop"
    _check(final.choices[0].delta.model_extra)
    _check(final.model_extra)  # also at the top level, where litellm looks
    text = "".join(c.choices[0].delta.content or "" for c in answer)
    assert text.startswith(KURSK_CLAIM)
    # Open WebUI's citation chips: one source event per citation, linked to its text.
    sources = [c.model_extra["event"] for c in answer if "event" in (c.model_extra or {})]
    assert [s["type"] for s in sources] == ["source"]
    data = sources[0]["data"]
    assert data["document"] == [KURSK_SENTENCE] and data["source"]["name"].startswith("[1] ")
    linked = httpx.get(data["source"]["url"]).json()["text"]
    assert KURSK_SENTENCE in linked


def test_a_fallback_says_so(url: str, standin: StandIn) -> None:
    standin.script(error(500))
    message = client(url).chat.completions.create(**_ask()).choices[0].message
    assert message.model_extra["mode"].startswith("extractive (fallback")
    assert "HTTP 500" in message.model_extra["note"] and KURSK_QUOTE in message.content


def test_an_echo_is_never_streamed(url: str, standin: StandIn) -> None:
    standin.script(echo())
    chunks = list(client(url).chat.completions.create(**_ask(stream=True)))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "<passage" not in text and "You answer questions" not in text
    assert chunks[-1].model_extra["mode"] == "extractive (fallback: echo)"


def test_an_endless_model_ends_at_the_deadline(url: str, standin: StandIn) -> None:
    standin.script(endless())
    done = client(url).chat.completions.create(**_ask())
    assert done.choices[0].finish_reason == "length"
    assert "RAG_LLM_DEADLINE" in done.choices[0].message.model_extra["note"]


def test_max_tokens_cuts_the_answer(url: str, kursk) -> None:
    done = client(url).chat.completions.create(**_ask(max_tokens=5))
    assert done.choices[0].finish_reason == "length"
    assert 0 < done.usage.completion_tokens <= 5
    assert KURSK_CLAIM.startswith(done.choices[0].message.content)
    streamed = list(client(url).chat.completions.create(**_ask(max_tokens=5, stream=True)))
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == done.choices[0].message.content
    assert streamed[-1].choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"n": 2}, "n must be 1"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_unsupported_parameters_are_refused(url: str, extra: dict, named: str) -> None:
    with pytest.raises(openai.BadRequestError, match=named):
        client(url).chat.completions.create(**_ask(**extra))


def test_models_retrieve(url: str) -> None:
    assert client(url).models.retrieve("documents").id == "documents"
    with pytest.raises(openai.NotFoundError):
        client(url).models.retrieve("gpt-4o")


def test_cors_only_for_the_configured_origin(url: str) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = httpx.options(
        f"{url}/v1/chat/completions", headers={"Origin": CORS_ORIGIN, **preflight}
    )
    assert allowed.headers["access-control-allow-origin"] == CORS_ORIGIN
    other = httpx.options(
        f"{url}/v1/chat/completions", headers={"Origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in other.headers


def test_llamaindex_openailike_reads_the_raw_response(url: str, kursk) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(model="documents", api_base=f"{url}/v1", api_key="x", is_chat_model=True)
    question = [ChatMessage(role="user", content=KURSK)]
    done = llm.chat(question)
    assert done.message.content.startswith(KURSK_CLAIM)
    _check(done.raw.choices[0].message.model_extra)
    last = list(llm.stream_chat(question))[-1]
    _check(last.raw.model_extra)


def test_litellm_keeps_citations_and_verdict(url: str, kursk) -> None:
    import litellm

    args = {"model": "openai/documents", "api_base": f"{url}/v1", "api_key": "x"}
    messages = [{"role": "user", "content": KURSK}]
    done = litellm.completion(messages=messages, **args)
    _check(done.choices[0].message.provider_specific_fields)
    last = list(litellm.completion(messages=messages, stream=True, **args))[-1]
    _check({key: getattr(last, key) for key in VERDICT})


def test_langchain_recipe(url: str, kursk) -> None:
    """ChatOpenAI drops fields it does not know: text through it, the rest from /v1/ask."""
    from langchain_core.runnables import RunnableLambda
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model="documents", base_url=f"{url}/v1", api_key="x", max_retries=0)
    assert chat.invoke(KURSK).content.startswith(KURSK_CLAIM)
    assert "".join(c.content for c in chat.stream(KURSK)).startswith(KURSK_CLAIM)

    def ask(question: str) -> dict[str, Any]:
        return httpx.post(f"{url}/v1/ask", json={"question": question}, timeout=60).json()

    answer = RunnableLambda(ask).invoke(KURSK)
    assert answer["answer"].startswith(KURSK_CLAIM)
    _check(answer)
