"""The offline answer: the best one to three source sentences, quoted verbatim and cited.

Candidate sentences are those of the top retrieved chunks, ranked by ``rag.answering.decision``
(cosine to the question, shared words, term alignment across languages, then the answer
verifier on the first few when it decides). The answer is refused when the decision's
confidence that the best one says what was asked is below the threshold chosen on dev questions
(``benchmarks/answers.py fit``; docs/verifier.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from rag.answering.decision import Candidate, Decision, Judgement, Verdict
from rag.documents.citations import Citation, SourceCache
from rag.errors import RagError
from rag.retrieval.hybrid import Retrieval

NO_ANSWER = "I could not find this in the indexed documents."
MAX_QUESTION_CHARS = 2000
MAX_SENTENCES = 3
# Further sentences (up to MAX_SENTENCES) are quoted when they score within this margin of
# the best one. Measured on the PIAF dev questions answered: the quotes hold a gold answer
# for 0.598 / 0.517 (FR / EN) with the best sentence alone, 0.648 / 0.590 with a margin of
# 0.02 (1.5 / 1.7 quotes an answer), 0.713 / 0.637 with 0.06 (2.0 / 2.3 quotes); the
# runner-up is often the sentence that completes the best one.
FOLLOWER_MARGIN = 0.06


@dataclass
class Answer:
    """What ``rag ask`` prints and the UI renders; ``text`` is ``"answer"`` in its JSON."""

    text: str
    abstained: bool
    citations: list[Citation] = field(default_factory=list)
    mode: str = "extractive"
    note: str | None = None
    # False when an LLM answer cited passages that were not sent or misquoted its sources.
    verified: bool = True
    # How sure the product is that the documents answer the question (0..1, see
    # ``rag.answering.decision``); None when no retrieval was made (an error, an empty index).
    confidence: float | None = None
    # For a refusal over related but insufficient passages: the nearest sentences, verified,
    # shown as "closest passages — they may not answer your question", never as an answer.
    closest: list[Citation] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "answer": self.text,
            "abstained": self.abstained,
            "verified": self.verified,
            "mode": self.mode,
            "note": self.note,
            "confidence": self.confidence,
            "citations": [c.to_json() for c in self.citations],
            "closest": [c.to_json() for c in self.closest],
        }


class AnswerStream:
    """An answer being written: iterate for its text as it arrives, then ``finalize()``."""

    def __init__(self, tokens: Iterator[str], finish: Callable[[], Answer]) -> None:
        self._tokens = tokens
        self._finish = finish

    @classmethod
    def of(cls, answer: Answer) -> AnswerStream:
        """An answer that is complete already (extractive, abstained or a fallback)."""
        return cls(iter([answer.text]), lambda: answer)

    def __iter__(self) -> Iterator[str]:
        return self._tokens

    def finalize(self) -> Answer:
        """The final answer, citations resolved (reads the rest of the stream first)."""
        for _ in self._tokens:
            pass
        return self._finish()


class QuestionError(RagError, ValueError):
    """A question we will not process; the message is safe to show the user as is."""


@dataclass(frozen=True)
class Evidence:
    """What a question retrieves, how sure the decision is that it answers, and the extractive
    answer over it.

    The extractive answer's verdict also says whether an LLM is asked, and the answer itself
    is the LLM's fallback when the call fails.
    """

    retrieval: Retrieval
    judgement: Judgement
    extractive: Answer
    verdict: Verdict


def check_question(question: str) -> str:
    """Normalise a question or explain politely why it cannot be asked."""
    cleaned = " ".join((question or "").split())
    if not cleaned:
        raise QuestionError("Please type a question.")
    if len(cleaned) > MAX_QUESTION_CHARS:
        raise QuestionError(
            f"That question is {len(cleaned):,} characters long; please keep it under "
            f"{MAX_QUESTION_CHARS:,} characters."
        )
    return cleaned


def extractive_answer(retrieval: Retrieval, judgement: Judgement, decision: Decision) -> Answer:
    """Quote the best sentences with verified citations, or refuse (``decision.verdict``).

    A refusal with something relevant (``Verdict.CLOSEST``) carries the closest sentences
    (``Answer.closest``): a reader may still want them, labelled as not an answer. Every
    quote carries the asked words its sentence does not state (``Citation.missing``).
    """
    ranked, confidence = judgement.ranked, round(judgement.confidence, 3)
    if not ranked:
        return Answer(NO_ANSWER, True, confidence=0.0)
    verdict = decision.verdict(confidence)
    if verdict is not Verdict.ANSWER:
        closest = _cite(ranked, retrieval, decision) if verdict is Verdict.CLOSEST else []
        return Answer(NO_ANSWER, True, confidence=confidence, closest=closest)
    citations = _cite(ranked, retrieval, decision)
    if not citations:
        return Answer(
            NO_ANSWER, True, note="The matching sources changed since indexing.", confidence=0.0
        )
    text = " ".join(f"“{c.quote}” [{c.n}]" for c in citations)
    return Answer(text, False, citations, confidence=confidence)


def _cite(ranked: list[Candidate], retrieval: Retrieval, decision: Decision) -> list[Citation]:
    """The best one to three sentences as verified citations numbered 1..n: the best, and
    the next ones the verifier also finds answering or that rank within
    ``FOLLOWER_MARGIN`` of it."""
    best = ranked[0]
    chosen = [best] + [
        c
        for c in ranked[1:MAX_SENTENCES]
        if c.verified >= decision.threshold or c.score >= best.score - FOLLOWER_MARGIN
    ]
    titles = {n.node.node_id: n.node.metadata.get("title", "") for n in retrieval.nodes}
    cache = SourceCache()
    citations: list[Citation] = []
    for item in chosen:
        sent = item.sentence
        cite = cache.verify_span(len(citations) + 1, sent.span(), titles.get(sent.chunk_id, ""))
        if cite is not None:
            citations.append(replace(cite, missing=item.missing))
    return citations


def leads(judgement: Judgement, retrieval: Retrieval) -> list[Citation]:
    """For a refusal without closest passages: up to ``MAX_SENTENCES`` retrieved sentences
    that share a word with the question, verified, to be shown as leads, never as an answer.

    Below the gate nothing was found that answers; yet a refused "How many Vietnamese workers
    are in Kursk?" still has the article's sentences on Kursk.
    """
    related = [c for c in judgement.ranked if c.share > 0][:MAX_SENTENCES]
    titles = {n.node.node_id: n.node.metadata.get("title", "") for n in retrieval.nodes}
    cache, found = SourceCache(), []
    for item in related:
        title = titles.get(item.sentence.chunk_id, "")
        cite = cache.verify_span(len(found) + 1, item.sentence.span(), title)
        if cite is not None:
            found.append(cite)
    return found
