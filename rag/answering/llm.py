"""Talking to the chat model: prompts from ``prompts/``, one OpenAI-compatible client, failures
turned into one clear message.

The client is LlamaIndex's ``OpenAILike``, so OpenAI, vLLM, llama.cpp and Ollama all work
through ``OPENAI_BASE_URL``. Every call streams, which also leaves one retry policy: the
``openai`` client's own (429, 5xx, timeouts, connection errors; exponential backoff that
honours ``Retry-After``). LlamaIndex's extra retry layer only acts on non-streaming calls,
where it would multiply those attempts. Prompts are re-read on every question, so an edited
file under ``prompts/`` takes effect without a restart. Failure messages are scrubbed of the
API key, whatever the server echoed back.

Bounds on what a model may do (a real llama.cpp server once streamed for 992 s, echoed its
prompt, and rewrote a follow-up into a 1,000-token ramble): every request carries
``max_tokens``; a reply stops at the question's deadline (``RAG_LLM_DEADLINE``, checked on
every streamed chunk; a silent server is cut by ``RAG_LLM_TIMEOUT`` per read) and is then
ended by ``ReplyCut``; a reply that reproduces the instructions or the passage markup is an
echo (``EchoGuard``), never shown; and a condensed follow-up that is empty, longer than
``CONDENSED_MAX_WORDS``, an echo or shares no word with the conversation is replaced by the
user's own words.
"""

from __future__ import annotations

import html
import re
import time
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
    import httpx
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
# A standalone question is one sentence: the PIAF dev questions have 5 to 21 words (600 in
# French, median 9) and 4 to 17 (33 in English), so 60 words leaves room for the names a
# rewrite adds; the request is capped at 4 tokens a word.
CONDENSED_MAX_WORDS = 60
CONDENSE_MAX_TOKENS = 4 * CONDENSED_MAX_WORDS
# An echo: this many consecutive words of the instructions (shorter runs, such as "in the
# language of the question", can occur in an honest answer), or the markup that wraps
# passages and conversations.
ECHO_WORDS = 8
_ECHO_MARKUP = re.compile(r"</?\s*(?:passages?|conversation)\b", re.IGNORECASE)
# Visible text held back until later text shows it is no echo: 8 words of the rules fit in it
# (the longest 8-word run of ``prompts/system.txt`` is 65 characters).
ECHO_HOLD_CHARS = 160
# How the note of an answer cut short starts (the API reports it as finish_reason "length").
CUT_NOTE = "The answer was cut at"
# What the model replies, alone, when the passages do not answer (``prompts/system.txt`` rule
# 4): one fixed token a program can recognise, whatever the question's language.
NOT_IN_DOCUMENTS = "NOT_IN_DOCUMENTS"
# A document must not be able to close its own block (or the list, or the condensed
# conversation) and speak as the prompt. Models read tags loosely, so every spelling a model
# might take for one is defused: any case, spaces or invisible characters inside
# (``</ passage>``, ``< /PASSAGE>``), HTML entities (``&lt;/passage&gt;``, ``&#60;``,
# ``&#x3c;``) and full-width or small-form brackets and slashes (``＜／passage＞``).
_LT = r"(?:<|＜|﹤|&lt;?|&#0*60;?|&#x0*3c;?)"
_SLASH = r"(?:/|／|&#0*47;?|&#x0*2f;?|&sol;?)"
_GAP = r"[\s\u200b-\u200f\u2060\ufeff]*"
_DELIMITER = re.compile(
    rf"{_LT}{_GAP}(?P<slash>{_SLASH})?{_GAP}(?P<name>passages?|conversation)\b", re.IGNORECASE
)
# A key's fragment this long echoed in an error is masked: 8 random characters are not
# guessed, and no shorter run of an OpenAI-style key occurs in an error message by chance.
KEY_FRAGMENT_CHARS = 8

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


class ReplyCut(RagError):
    """A reply ended early (the deadline, or ``max_tokens``): what came is kept, with a note."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class LLMError(RagError):
    """A failed LLM call: ``reason`` labels the fallback mode, ``message`` is for the user."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def make_llm(settings: Settings, http: httpx.Client | None = None) -> OpenAILike:
    """The chat model the settings describe (``settings.llm_enabled`` must be true), sending
    its requests through ``http`` when given (so that the caller can cut them off)."""
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
        http_client=http,
        max_tokens=settings.llm_max_tokens,
    )


def http_client() -> httpx.Client:
    """An HTTP client for one question's LLM calls, with the ``openai`` client's defaults."""
    import openai

    return openai.DefaultHttpxClient()


def format_passages(passages: Sequence[NodeWithScore]) -> str:
    """Passages numbered from 1, each in its own delimited block, delimiters defused."""
    blocks = []
    for n, hit in enumerate(passages, 1):
        meta = hit.node.metadata
        shown = meta.get("path") or Path(meta["source"]).name  # as users see it, no server path
        attrs = f'id="{n}" source="{html.escape(shown)}"'
        if meta.get("title"):
            attrs += f' title="{html.escape(meta["title"])}"'
        text = defuse(hit.node.get_content())
        blocks.append(f"<passage {attrs}>\n{text}\n</passage>")
    return "\n".join(blocks)


def defuse(text: str) -> str:
    """``text`` with anything a model could read as one of the prompt's tags made inert
    (its bracket becomes ``‹``, its slash ``/``; the rest is left as written)."""
    return _DELIMITER.sub(lambda m: "‹" + ("/" if m.group("slash") else "") + m.group("name"), text)


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
        f"{'User' if role == 'user' else 'Assistant'}: "
        + defuse(" ".join(content.split())[:HISTORY_CHARS])
        for role, content in history[-HISTORY_MESSAGES:]
    ]
    prompt = prompts.condense.format(history="\n".join(lines), question=question)
    return [ChatMessage(role="user", content=prompt)]


def stream_reply(
    llm: OpenAILike,
    messages: list[ChatMessage],
    settings: Settings,
    http: httpx.Client | None = None,
    deadline: float | None = None,
) -> Iterator[str]:
    """The reply's text as it arrives; any failure is raised as ``LLMError``, a reply cut by
    ``deadline`` (``time.monotonic()``) or by ``max_tokens`` ends with ``ReplyCut``.

    Closing this generator before the reply ends (a client gone mid-answer) closes ``http``,
    the client ``llm`` sends through, so the server stops generating. Closing the response
    alone cannot be done from here: the ``openai`` stream holding it sits in a reference
    cycle (the stream and its own generator) and stayed open until the garbage collector
    ran; a stand-in server streamed on to the end of a 36-second reply.
    """
    import httpx
    import openai

    replies = iter(())
    try:
        replies = llm.stream_chat(messages)
        for chunk in replies:
            if chunk.delta:
                yield chunk.delta
            if deadline is not None and time.monotonic() > deadline:
                raise ReplyCut("deadline", cut_message("deadline", settings))
            if _finish_reason(chunk.raw) == "length":
                raise ReplyCut("length", cut_message("length", settings))
    except (openai.OpenAIError, httpx.HTTPError, ValueError) as exc:
        raise describe_failure(exc, settings) from None
    except GeneratorExit:
        if http is not None:
            http.close()
        raise
    finally:
        getattr(replies, "close", lambda: None)()  # a reply cut short ends its HTTP stream


def _finish_reason(raw: object) -> str | None:
    """The ``finish_reason`` of a streamed chunk (an ``openai`` object or a dict)."""
    choices = getattr(raw, "choices", None) or (
        raw.get("choices") if isinstance(raw, dict) else None
    )
    if not choices:
        return None
    first = choices[0]
    return first.get("finish_reason") if isinstance(first, dict) else first.finish_reason


def cut_message(reason: str, settings: Settings) -> str:
    """The note of an answer cut short (it starts with ``CUT_NOTE``), naming the setting that
    bounds it."""
    if reason == "deadline":
        return (
            f"{CUT_NOTE} the {settings.llm_deadline:g} s deadline "
            "(RAG_LLM_DEADLINE); what came by then is shown."
        )
    return (
        f"{CUT_NOTE} {settings.llm_max_tokens} tokens (RAG_LLM_MAX_TOKENS); "
        "what came by then is shown."
    )


def condense(
    llm: OpenAILike,
    prompts: Prompts,
    history: History,
    question: str,
    settings: Settings,
    deadline: float | None = None,
) -> str:
    """A standalone version of a follow-up question, or the question itself when the rewrite
    is unusable (``usable_condensed``)."""
    messages = condense_messages(prompts, history, question)
    # LlamaIndex lets the model's own max_tokens override a per-call one: bound a copy.
    bounded = llm.model_copy(update={"max_tokens": CONDENSE_MAX_TOKENS})
    parts: list[str] = []
    try:
        for delta in stream_reply(bounded, messages, settings, deadline):
            parts.append(delta)
    except ReplyCut:
        return question  # cut short: not a whole question
    guard = EchoGuard(prompts.condense)
    reply = " ".join("".join(parts).split())
    return reply if usable_condensed(reply, guard, history, question) else question


def usable_condensed(reply: str, guard: EchoGuard, history: History, question: str) -> bool:
    """Whether a rewritten follow-up may replace the user's words: not empty, one question's
    length, no echo of the prompt, and about the conversation (it shares a word with it)."""
    words = reply.split()
    if not words or len(words) > CONDENSED_MAX_WORDS or guard.echoes(reply):
        return False
    said = _words(" ".join([question, *(content for _, content in history)]))
    return bool(_words(reply) & said)


def _words(text: str) -> set[str]:
    """Lower-cased words of three letters or more (what two phrasings of a topic share)."""
    return {w for w in re.findall(r"\w{3,}", text.casefold())}


class EchoGuard:
    """Holds back a reply's visible text until it is known not to echo the prompt.

    An echo reproduces ``ECHO_WORDS`` consecutive words of the instructions, or the passage
    markup. The last ``ECHO_HOLD_CHARS`` of visible text wait for the text after them, so
    an echo is caught before any of it is shown.
    """

    def __init__(self, *instructions: str) -> None:
        self.runs: set[tuple[str, ...]] = set()
        for text in instructions:
            self.runs |= _runs(re.sub(r"\{\w+\}", " ", text))
        self.echoed = False
        self._held = ""

    def echoes(self, raw: str) -> bool:
        """Whether ``raw`` (the reply so far, or its recent end) echoes the prompt."""
        return bool(_ECHO_MARKUP.search(raw)) or not self.runs.isdisjoint(_runs(raw))

    def feed(self, piece: str, raw: str) -> str:
        """Visible ``piece`` in, given the raw reply so far; out, what may be shown now."""
        if self.echoed or self.echoes(raw[-4 * ECHO_HOLD_CHARS :]):
            self.echoed = True
            return ""
        self._held += piece
        cut = max(0, len(self._held) - ECHO_HOLD_CHARS)
        shown, self._held = self._held[:cut], self._held[cut:]
        return shown

    def flush(self, raw: str) -> str:
        """The held text once the reply is complete (nothing if it was an echo)."""
        shown = self.feed("", raw)
        if self.echoed:
            return ""
        shown, self._held = shown + self._held, ""
        return shown


def _runs(text: str) -> set[tuple[str, ...]]:
    """Every run of ``ECHO_WORDS`` consecutive lower-cased words of ``text``."""
    words = re.findall(r"\w+", text.casefold())
    return {tuple(words[i : i + ECHO_WORDS]) for i in range(len(words) - ECHO_WORDS + 1)}


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
    return LLMError(error.reason, mask_key(error.message, key))


def mask_key(text: str, key: str) -> str:
    """``text`` with every run of ``KEY_FRAGMENT_CHARS`` or more characters of ``key`` masked.

    Servers echo keys in part too ("Incorrect API key provided: sk-proj-abcd****wxyz"):
    masking only the whole key left the echoed head and tail readable.
    """
    if len(key) < KEY_FRAGMENT_CHARS:
        return text.replace(key, "***") if key else text
    out, i = [], 0
    while i < len(text):
        length = _shared_run(text, i, key)
        if length >= KEY_FRAGMENT_CHARS:
            out.append("***")
            i += length
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _shared_run(text: str, start: int, key: str) -> int:
    """The length of the longest run of ``text`` from ``start`` that occurs in ``key``."""
    length = 0
    while start + length < len(text) and text[start : start + length + 1] in key:
        length += 1
    return length
