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

Any LLM failure, an empty reply included, yields the extractive answer, labelled as a
fallback, with the reason in its note.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Collection, Iterator, Sequence
from dataclasses import replace
from difflib import SequenceMatcher
from typing import TYPE_CHECKING

from llama_index.core.llms import ChatMessage

from rag.answer import Answer, AnswerStream
from rag.citations import Citation, SourceCache
from rag.config import Settings
from rag.lexical import tokenize
from rag.llm import (
    History,
    LLMError,
    Prompts,
    answer_messages,
    condense,
    make_llm,
    stream_reply,
)
from rag.retrieve import Retrieval, SentenceScore

if TYPE_CHECKING:
    from llama_index.llms.openai_like import OpenAILike

# A marker and the whitespace before it (dropped with it): [3], [1, 2].
_MARKER = re.compile(r"(\s*)\[(\d+(?:\s*,\s*\d+)*)\]")
_CITED = re.compile(r"\[(\d+)\]")
# The end of the text so far that may still become a marker.
_MARKER_TAIL = re.compile(r"\s*(?:\[[\d,\s]*)?$")
_HEADING = re.compile(r"^[ \t>*_#]*(?:quotes|citations)[ \t*_]*:", re.IGNORECASE | re.MULTILINE)
_HEADING_WORDS = ("quotes:", "citations:")
_QUOTE_LINE = re.compile(r"\[(\d+)\][\s:.\-–—]*(.+)")
_QUOTE_MARKS = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "«": '"', "»": '"'})
# Shorter quotes ("Kursk") would match too many sentences to tell which one was meant.
MIN_QUOTE_CHARS = 12
# A quote this similar to a sentence (difflib ratio) was copied from it with small slips.
FUZZY_MATCH = 0.8

log = logging.getLogger(__name__)


class Generator:
    """One question's LLM calls: condensing a follow-up, then streaming the answer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prompts = Prompts.load()
        self.llm = make_llm(settings)

    def standalone(self, question: str, history: History) -> str:
        """``question`` rewritten to stand on its own (as is without history); may raise
        ``LLMError``."""
        if not history:
            return question
        return condense(self.llm, self.prompts, history, question, self.settings)

    def stream(self, question: str, retrieval: Retrieval, extractive: Answer) -> AnswerStream:
        """The LLM's answer over ``retrieval``, checked when finalized; ``extractive`` is the
        fallback when the call fails."""
        generation = _Generation(self.llm, self.settings, retrieval, extractive)
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
    ) -> None:
        self.llm = llm
        self.settings = settings
        self.retrieval = retrieval
        self.extractive = extractive
        self.reply = ReplyStream(len(retrieval.nodes))
        self.error: LLMError | None = None

    def tokens(self, messages: list[ChatMessage]) -> Iterator[str]:
        try:
            for delta in stream_reply(self.llm, messages, self.settings):
                if piece := self.reply.feed(delta):
                    yield piece
        except LLMError as error:
            self.error = error
            return
        if piece := self.reply.close():
            yield piece

    def answer(self) -> Answer:
        if self.error is None and not self.reply.text:
            self.error = LLMError("empty reply", "The LLM returned an empty answer.")
        if self.error is not None:
            return fallback(self.extractive, self.error)
        return build_answer(self.reply, self.retrieval, f"llm:{self.settings.llm_model}")


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
        return self._emit(self._safe_end() if self._body_end is None else self._body_end)

    def close(self) -> str:
        """The rest of the answer text, once the reply is complete."""
        return self._emit(len(self.raw.rstrip()) if self._body_end is None else self._body_end)

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
