"""LLM answers: streamed as they are written, their citations checked, not trusted.

The model cites passages as ``[n]`` and lists, under a closing ``Quotes:`` line, the sentence
of each passage it relied on (``prompts/system.txt``). While the reply streams, markers are
renumbered 1..m in order of first appearance and markers naming no passage that was sent are
dropped, so the text a user watches is the final answer text; the quotes section is held
back. When the reply ends, each cited passage resolves to one sentence of its source file:
the sentence the model quoted (compared after case, whitespace and quote-mark normalisation)
or, without a usable quote, the passage sentence sharing most words with the claims citing
it. The span is then re-read from the file like every other citation. A citation whose quote
is not in its passage is kept but marked unverified, and the answer's note says so.

When the passages do not answer, the model replies ``NOT_IN_DOCUMENTS`` alone (rule 4). That
reply is recognised in a fixed form (the body before any ``Quotes:`` heading, stripped of
whitespace, emphasis, backticks and trailing punctuation), held back while it streams so the
token is never shown, and turned into the product's refusal: the standard text, no
citations, the extractive answer's confidence and closest passages.

Any LLM failure, an empty reply included, yields the extractive answer, labelled as a
fallback, with the reason in its note. A refusal is never replaced by that fallback. A reply
that echoes the prompt (``EchoGuard``) is such a failure, and none of it is shown. A reply cut
by the question's deadline or by ``max_tokens`` (``ReplyCut``) ends with what came, checked
like any reply, and the cut in its note.

An answer whose every citation the answer decision finds not answering the question (``check``
marks each ``supported``: the verifier below its answer threshold) is no answer either: it is
replaced by the extractive answer, or its refusal, labelled ``fallback: unsupported`` with the
reason in the note. Streamed, its text has been shown by then; the final answer replaces it
(the page) or follows it (``rag ask``, a streamed API reply), with that note.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import replace
from difflib import SequenceMatcher
from typing import TYPE_CHECKING

from llama_index.core.llms import ChatMessage

from rag.answering.extractive import NO_ANSWER, Answer, AnswerStream
from rag.answering.llm import (
    NOT_IN_DOCUMENTS,
    EchoGuard,
    History,
    LLMError,
    Prompts,
    ReplyCut,
    answer_messages,
    condense,
    http_client,
    make_llm,
    stream_reply,
)
from rag.config import Settings
from rag.documents.citations import Citation, SourceCache
from rag.retrieval.hybrid import Retrieval, SentenceScore
from rag.text import tokenize

if TYPE_CHECKING:
    import httpx
    from llama_index.llms.openai_like import OpenAILike

# A marker and the whitespace before it (dropped with it): [3], [1, 2].
_MARKER = re.compile(r"(\s*)\[(\d+(?:\s*,\s*\d+)*)\]")
_CITED = re.compile(r"\[(\d+)\]")
# The end of the text so far that may still become a marker.
_MARKER_TAIL = re.compile(r"\s*(?:\[[\d,\s]*)?$")
_HEADING = re.compile(r"^[ \t>*_#]*(?:quotes|citations)[ \t*_]*:", re.IGNORECASE | re.MULTILINE)
_HEADING_WORDS = ("quotes:", "citations:")
# Around the sentinel: markdown decoration before and after it, punctuation after it.
_SENTINEL_DECOR = " \t\r\n*_`\"'>#"
_SENTINEL_TRAIL = _SENTINEL_DECOR + ".!;:…"
_QUOTE_LINE = re.compile(r"\[(\d+)\][\s:.\-–—]*(.+)")
_QUOTE_MARKS = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "«": '"', "»": '"'})
# Shorter quotes ("Kursk") would match too many sentences to tell which one was meant.
MIN_QUOTE_CHARS = 12
# A quote this similar to a sentence (difflib ratio) was copied from it with small slips.
FUZZY_MATCH = 0.8
UNSUPPORTED = (
    "The LLM's answer rests only on sentences that do not answer this question (answer verifier)."
)

log = logging.getLogger(__name__)


class Generator:
    """One question's LLM calls: condensing a follow-up, then streaming the answer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prompts = Prompts.load()
        self.http = http_client()  # closed if the answer is abandoned (``stream_reply``)
        self.llm = make_llm(settings, self.http)
        # One deadline for the whole question: the follow-up rewrite and the answer.
        self.deadline = time.monotonic() + settings.llm_deadline

    def standalone(self, question: str, history: History) -> str:
        """``question`` rewritten to stand on its own (as is without history); may raise
        ``LLMError``."""
        if not history:
            return question
        return condense(self.llm, self.prompts, history, question, self.settings, self.deadline)

    def stream(
        self,
        question: str,
        retrieval: Retrieval,
        extractive: Answer,
        check: Callable[[list[Citation]], list[Citation]] | None = None,
    ) -> AnswerStream:
        """The LLM's answer over ``retrieval``, checked when finalized (``check`` marks each
        citation ``supported`` or not); ``extractive`` is the fallback when the call fails."""
        generation = _Generation(self.llm, self.settings, retrieval, extractive, self.http, check)
        generation.deadline = self.deadline
        generation.guard = EchoGuard(self.prompts.system, self.prompts.answer)
        messages = answer_messages(self.prompts, question, retrieval.nodes)
        return AnswerStream(generation.tokens(messages), generation.answer)


class _Generation:
    """One streamed reply: its visible text, then its checked answer or the fallback."""

    def __init__(
        self,
        llm: OpenAILike,
        settings: Settings,
        retrieval: Retrieval,
        extractive: Answer,
        http: httpx.Client,
        check: Callable[[list[Citation]], list[Citation]] | None = None,
    ) -> None:
        self.llm = llm
        self.http = http
        self.settings = settings
        self.retrieval = retrieval
        self.extractive = extractive
        self.check = check
        self.reply = ReplyStream(len(retrieval.nodes))
        self.error: LLMError | None = None
        self.cut: ReplyCut | None = None
        self.deadline: float | None = None
        self.guard = EchoGuard()

    @property
    def mode(self) -> str:
        return f"llm:{self.settings.llm_model}"

    def tokens(self, messages: list[ChatMessage]) -> Iterator[str]:
        """The visible text; a refusal streams as the refusal text, never as the sentinel.

        Closed early (the reader left), it closes the reply's stream, which ends the request.
        """
        replies = stream_reply(self.llm, messages, self.settings, self.http, self.deadline)
        try:
            for delta in replies:
                if piece := self.guard.feed(self.reply.feed(delta), self.reply.raw):
                    yield piece
                if self.guard.echoed:
                    return
        except LLMError as error:
            self.error = error
        except ReplyCut as cut:
            self.cut = cut
        finally:
            replies.close()
        if self.error is None and (piece := self._rest()):
            yield piece
        if self.reply.refused:
            yield NO_ANSWER

    def _rest(self) -> str:
        """The visible text still held back once the reply has ended."""
        return self.guard.feed(self.reply.close(), self.reply.raw) + self.guard.flush(
            self.reply.raw
        )

    def answer(self) -> Answer:
        """The checked answer; the model's refusal stands even if the stream broke after it."""
        if self.guard.echoed:
            self.error = LLMError(
                "echo", "The LLM repeated its instructions or the passages instead of answering."
            )
            return fallback(self.extractive, self.error)
        if self.reply.refused:
            return refusal(self.extractive, self.mode)
        if self.error is None and not self.reply.text:
            self.error = (
                LLMError(self.cut.reason, self.cut.message)
                if self.cut
                else LLMError("empty reply", "The LLM returned an empty answer.")
            )
        if self.error is not None:
            return fallback(self.extractive, self.error)
        answer = build_answer(self.reply, self.retrieval, self.mode)
        if self.cut is not None:
            answer = replace(answer, note=" ".join(filter(None, [answer.note, self.cut.message])))
        citations = self.check(answer.citations) if self.check else answer.citations
        if citations and all(c.supported is False for c in citations):
            self.error = LLMError("unsupported", UNSUPPORTED)
            return fallback(self.extractive, self.error)
        return replace(answer, citations=citations, confidence=self.extractive.confidence)


def refusal(extractive: Answer, mode: str) -> Answer:
    """The model's "not in the documents" as the product's refusal, with the extractive
    answer's confidence; the passages it would have quoted are leads (closest), not an answer."""
    return Answer(
        NO_ANSWER,
        True,
        [],
        mode,
        None,
        confidence=extractive.confidence,
        closest=list(extractive.closest or extractive.citations),
    )


def fallback(extractive: Answer, error: LLMError) -> Answer:
    """The extractive answer, labelled as a fallback, with why the LLM was not used."""
    log.warning("LLM answer failed, using the extractive answer: %s", error.message)
    return replace(
        extractive,
        mode=f"extractive (fallback: {error.reason})",
        note=f"{error.message} Showing the extractive answer instead.",
    )


class Renumber:
    """Rewrites ``[n]`` markers: allowed numbers by order of first appearance, others dropped."""

    def __init__(self, allowed: Collection[int]) -> None:
        self.allowed = set(allowed)
        self.order: dict[int, int] = {}
        self.dropped: list[int] = []

    def __call__(self, text: str) -> str:
        return _MARKER.sub(self._rewrite, text)

    def _rewrite(self, match: re.Match[str]) -> str:
        kept = []
        for part in match.group(2).split(","):
            n = int(part)
            if n in self.allowed:
                kept.append(self.order.setdefault(n, len(self.order) + 1))
            else:
                self.dropped.append(n)
        return match.group(1) + "".join(f"[{k}]" for k in dict.fromkeys(kept)) if kept else ""


class ReplyStream:
    """The model's raw deltas in; out, the answer text safe to show so far."""

    def __init__(self, passages: int) -> None:
        self.raw = ""
        self.renumber = Renumber(range(1, passages + 1))
        self._shown: list[str] = []
        self._sent = 0
        self._body_end: int | None = None

    def feed(self, delta: str) -> str:
        self.raw += delta
        if self._body_end is None and (heading := _HEADING.search(self.raw)):
            self._body_end = len(self.raw[: heading.start()].rstrip())
        if not self._sent and may_be_not_in_documents(self.raw):
            return ""  # the sentinel is never shown
        return self._emit(self._safe_end() if self._body_end is None else self._body_end)

    def close(self) -> str:
        """The rest of the answer text, once the reply is complete (none for a refusal)."""
        if self.refused:
            return ""
        return self._emit(len(self.raw.rstrip()) if self._body_end is None else self._body_end)

    @property
    def refused(self) -> bool:
        """Whether the model replied that the passages do not answer (nothing shown yet)."""
        return not self._sent and is_not_in_documents(self.raw)

    @property
    def text(self) -> str:
        return "".join(self._shown).strip()

    @property
    def quotes(self) -> dict[int, list[str]]:
        """The model's quotes by passage number, from the section after the heading."""
        found: dict[int, list[str]] = {}
        if self._body_end is not None:
            for match in _QUOTE_LINE.finditer(self.raw, self._body_end):
                found.setdefault(int(match.group(1)), []).append(match.group(2))
        return found

    def _safe_end(self) -> int:
        """Hold back a marker still being written and a line that may become the heading."""
        end = _MARKER_TAIL.search(self.raw, self._sent).start()
        line_start = self.raw.rfind("\n") + 1
        head = self.raw[line_start:].lstrip(" \t>*_#").lower()
        if any(word.startswith(head) or head.startswith(word[:-1]) for word in _HEADING_WORDS):
            end = min(end, len(self.raw[:line_start].rstrip()))
        return max(end, self._sent)

    def _emit(self, end: int) -> str:
        if end <= self._sent:
            return ""
        piece = self.renumber(self.raw[self._sent : end])
        self._sent = end
        self._shown.append(piece)
        return piece


def _after_sentinel(body: str) -> str | None:
    """What follows the sentinel at the start of ``body`` (decoration and punctuation
    skipped), or None when ``body`` does not start with it."""
    core = body.lstrip(_SENTINEL_DECOR)
    if core[: len(NOT_IN_DOCUMENTS)].upper() != NOT_IN_DOCUMENTS:
        return None
    return core[len(NOT_IN_DOCUMENTS) :].lstrip(_SENTINEL_TRAIL)


def _body(reply: str) -> str:
    """The reply without its quotes section."""
    heading = _HEADING.search(reply)
    return reply[: heading.start()] if heading else reply


def is_not_in_documents(reply: str) -> bool:
    """Whether a complete reply is the model's refusal: its body is the sentinel alone.

    A body with no claim cites nothing, so a quotes section after it changes nothing.
    """
    return _after_sentinel(_body(reply)) == ""


def may_be_not_in_documents(partial: str) -> bool:
    """Whether a reply starting with ``partial`` may still turn out to be the refusal, so
    that its text is held back while it streams."""
    body = _body(partial)
    if body != partial:  # the quotes heading is in: the body is complete
        return is_not_in_documents(partial)
    core = partial.lstrip(_SENTINEL_DECOR).upper()
    if len(core) < len(NOT_IN_DOCUMENTS):
        return NOT_IN_DOCUMENTS.startswith(core)
    rest = _after_sentinel(partial)
    return rest is not None and any(word.startswith(rest.lower()) for word in _HEADING_WORDS)


def build_answer(reply: ReplyStream, retrieval: Retrieval, mode: str) -> Answer:
    """The reply's text with each citation resolved to a verified span of its passage."""
    text, quotes, claim, cache = reply.text, reply.quotes, claims(reply.text), SourceCache()
    found = {
        shown: resolve(shown, retrieval, n - 1, quotes.get(n, []), claim[shown], cache)
        for n, shown in reply.renumber.order.items()
    }
    problems = []
    if reply.renumber.dropped:
        markers = ", ".join(f"[{n}]" for n in dict.fromkeys(reply.renumber.dropped))
        problems.append(f"removed {markers}: only {len(retrieval.nodes)} passages were sent")
    if None in found.values():
        problems.append("removed citations whose source file changed since indexing")
        kept = Renumber([shown for shown, cite in found.items() if cite])
        text = kept(text)
        found = {kept.order[shown]: cite for shown, cite in found.items() if cite}
    citations = [replace(cite, n=shown) for shown, cite in sorted(found.items()) if cite]
    unmatched = [f"[{c.n}]" for c in citations if not c.verified]
    if unmatched:
        problems.append(f"the quote for {', '.join(unmatched)} is not in the cited passage")
    note = f"Unverified answer: {'; '.join(problems)}." if problems else None
    return Answer(text, not citations, citations, mode, note, verified=not problems)


def claims(text: str) -> dict[int, str]:
    """For each citation number, the answer text it backs (the words since the last marker)."""
    found: dict[int, str] = {}
    previous_end, claim = 0, ""
    for match in _CITED.finditer(text):
        claim = text[previous_end : match.start()].strip() or claim  # "[1][2]" share one
        n = int(match.group(1))
        found[n] = f"{found.get(n, '')} {claim}"
        previous_end = match.end()
    return found


def resolve(
    n: int, retrieval: Retrieval, index: int, quotes: list[str], claim: str, cache: SourceCache
) -> Citation | None:
    """Citation ``n`` for passage ``index``: the sentence it quoted, else the one nearest the
    claim (shared words first; then, across languages, similarity to the question)."""
    node = retrieval.nodes[index].node
    sentences = sorted(
        (s for s in retrieval.sentences if s.chunk_id == node.node_id),
        key=lambda s: s.meta["start"],
    )
    if not sentences:
        return None
    words = set(tokenize(claim))

    def closeness(sentence: SentenceScore) -> tuple[int, float]:
        return len(words & set(tokenize(sentence.text))), sentence.similarity

    matched = [s for quote in quotes if (s := match_quote(quote, sentences))]
    best = max(matched or sentences, key=closeness)
    verified = bool(matched) if quotes else closeness(best)[0] > 0
    cite = cache.verify_span(n, best.span(), node.metadata.get("title", ""))
    return replace(cite, verified=verified) if cite else None


def match_quote(quote: str, sentences: Sequence[SentenceScore]) -> SentenceScore | None:
    """The sentence a quote was copied from (or the first one it contains), if any."""
    wanted = normalise(quote)
    if len(wanted) < MIN_QUOTE_CHARS:
        return None
    for sentence in sentences:
        have = normalise(sentence.text)
        if wanted in have or (len(have) >= MIN_QUOTE_CHARS and have in wanted):
            return sentence
    ratio, best = max(
        ((SequenceMatcher(None, wanted, normalise(s.text)).ratio(), s) for s in sentences),
        key=lambda pair: pair[0],
    )
    return best if ratio >= FUZZY_MATCH else None


def normalise(text: str) -> str:
    """Text as quotes are compared: NFKC, straight quote marks, folded case, single spaces."""
    folded = unicodedata.normalize("NFKC", text).translate(_QUOTE_MARKS).casefold()
    return " ".join(folded.split()).strip(" \"'.…")
