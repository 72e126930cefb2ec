"""Talking to the chat model: prompts from ``prompts/``, one OpenAI-compatible client, failures
turned into one clear message.

The client is LlamaIndex's ``OpenAILike``, so OpenAI, vLLM, llama.cpp and Ollama all work
through ``OPENAI_BASE_URL``. Every call streams, which also leaves one retry policy: the
``openai`` client's own (429, 5xx, timeouts, connection errors; exponential backoff that
honours ``Retry-After``). LlamaIndex's extra retry layer only acts on non-streaming calls,
where it would multiply those attempts. Prompts are re-read on every question, so an edited
file under ``prompts/`` takes effect without a restart. Failure messages are scrubbed of the
API key, whatever the server echoed back.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from llama_index.core.llms import ChatMessage
from llama_index.core.schema import NodeWithScore

from rag.config import Settings
from rag.errors import RagError

if TYPE_CHECKING:  # the OpenAI stack costs ~0.7 s to import; extractive mode never needs it
    from llama_index.llms.openai_like import OpenAILike

# The prompts live in the top-level prompts/ of a checkout (editable installs read them there);
# an installed wheel carries them as rag/_prompts (the package-dir mapping in pyproject.toml).
_INSTALLED_PROMPTS = Path(__file__).resolve().parents[1] / "_prompts"
PROMPTS_DIR = (
    _INSTALLED_PROMPTS
    if _INSTALLED_PROMPTS.is_dir()
    else Path(__file__).resolve().parents[2] / "prompts"
)
# Local servers (llama.cpp, Ollama, vLLM without --api-key) ignore the key but the client
# insists on one.
NO_KEY = "not-needed"
# Follow-up condensing sees this many recent messages, each cut to this many characters.
HISTORY_MESSAGES = 6
HISTORY_CHARS = 600
# What the model replies, alone, when the passages do not answer (``prompts/system.txt`` rule
# 4): one fixed token a program can recognise, whatever the question's language.
NOT_IN_DOCUMENTS = "NOT_IN_DOCUMENTS"
# A document must not be able to close its own block (or the list) and speak as the prompt.
_DELIMITER = re.compile(r"<(/?)(passages?)\b", re.IGNORECASE)

History = Sequence[tuple[str, str]]
"""Earlier turns of a conversation as ``(role, content)``, role ``user`` or ``assistant``."""


@dataclass(frozen=True)
class Prompts:
    """The three prompt files; see ``prompts/`` (templates use ``str.format`` fields)."""

    system: str
    answer: str
    condense: str

    @classmethod
    def load(cls, folder: Path = PROMPTS_DIR) -> Prompts:
        return cls(**{f.name: (folder / f"{f.name}.txt").read_text("utf-8") for f in fields(cls)})


class LLMError(RagError):
    """A failed LLM call: ``reason`` labels the fallback mode, ``message`` is for the user."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def make_llm(settings: Settings) -> OpenAILike:
    """The chat model the settings describe (``settings.llm_enabled`` must be true)."""
    from llama_index.llms.openai_like import OpenAILike

    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else NO_KEY
    return OpenAILike(
        model=settings.llm_model,
        api_base=settings.openai_base_url,
        api_key=key,
        is_chat_model=True,
        timeout=settings.llm_timeout,
        max_retries=settings.llm_max_retries,
        temperature=settings.temperature,
    )


def format_passages(passages: Sequence[NodeWithScore]) -> str:
    """Passages numbered from 1, each in its own delimited block, delimiters defused."""
    blocks = []
    for n, hit in enumerate(passages, 1):
        meta = hit.node.metadata
        attrs = f'id="{n}" source="{html.escape(Path(meta["source"]).name)}"'
        if meta.get("title"):
            attrs += f' title="{html.escape(meta["title"])}"'
        text = _DELIMITER.sub(r"‹\1\2", hit.node.get_content())
        blocks.append(f"<passage {attrs}>\n{text}\n</passage>")
    return "\n".join(blocks)


def answer_messages(
    prompts: Prompts, question: str, passages: Sequence[NodeWithScore]
) -> list[ChatMessage]:
    """System rules, then the passages (as data) and the question."""
    user = prompts.answer.format(passages=format_passages(passages), question=question)
    return [
        ChatMessage(role="system", content=prompts.system),
        ChatMessage(role="user", content=user),
    ]


def condense_messages(prompts: Prompts, history: History, question: str) -> list[ChatMessage]:
    """The request that rewrites a follow-up into a standalone question."""
    lines = [
        f"{'User' if role == 'user' else 'Assistant'}: {' '.join(content.split())[:HISTORY_CHARS]}"
        for role, content in history[-HISTORY_MESSAGES:]
    ]
    prompt = prompts.condense.format(history="\n".join(lines), question=question)
    return [ChatMessage(role="user", content=prompt)]


def stream_reply(llm: OpenAILike, messages: list[ChatMessage], settings: Settings) -> Iterator[str]:
    """The reply's text as it arrives; any failure is raised as ``LLMError``."""
    import httpx
    import openai

    try:
        for chunk in llm.stream_chat(messages):
            if chunk.delta:
                yield chunk.delta
    except (openai.OpenAIError, httpx.HTTPError, ValueError) as exc:
        raise describe_failure(exc, settings) from None


def condense(
    llm: OpenAILike, prompts: Prompts, history: History, question: str, settings: Settings
) -> str:
    """A standalone version of a follow-up question (the question itself if the reply is empty)."""
    reply = "".join(stream_reply(llm, condense_messages(prompts, history, question), settings))
    return " ".join(reply.split()) or question


def describe_failure(exc: Exception, settings: Settings) -> LLMError:
    """One clear, key-free message for each way an LLM call fails."""
    import httpx
    import openai

    retries = f"{settings.llm_max_retries} retr{'y' if settings.llm_max_retries == 1 else 'ies'}"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        error = LLMError(
            f"HTTP {exc.status_code}",
            f"The LLM server rejected the API key (HTTP {exc.status_code}); check OPENAI_API_KEY.",
        )
    elif isinstance(exc, openai.RateLimitError):
        error = LLMError(
            "rate limited",
            f"The LLM server is rate-limiting requests (HTTP 429), still after {retries}.",
        )
    elif isinstance(exc, openai.APIStatusError):
        detail = exc.body.get("message") if isinstance(exc.body, dict) else None
        error = LLMError(
            f"HTTP {exc.status_code}",
            f"The LLM server answered HTTP {exc.status_code}"
            + (f" after {retries}" if exc.status_code >= 500 else "")
            + (f": {detail}" if detail else "."),
        )
    elif isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        error = LLMError(
            "timeout",
            f"The LLM server did not answer within {settings.llm_timeout:g} s ({retries}).",
        )
    elif isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        error = LLMError(
            "server unreachable", f"Could not reach the LLM server at {_where(settings)}."
        )
    else:
        error = LLMError(
            "malformed reply", "The LLM server sent a reply that is not valid chat data."
        )
    return _scrubbed(error, settings)


def _where(settings: Settings) -> str:
    """Host and port of the server, without any credentials a URL might carry."""
    if not settings.openai_base_url:
        return "api.openai.com"
    url = urlparse(settings.openai_base_url)
    return f"{url.hostname}:{url.port}" if url.port else str(url.hostname)


def _scrubbed(error: LLMError, settings: Settings) -> LLMError:
    """The error with the API key masked, whatever the server echoed back."""
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    if key and key in error.message:
        return LLMError(error.reason, error.message.replace(key, "***"))
    return error
