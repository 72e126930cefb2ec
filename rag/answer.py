"""The offline answer: the best one to three source sentences, quoted verbatim and cited.

Candidate sentences are those of the top retrieved chunks. Each is scored by its stored
sentence vector's cosine to the question (cross-lingual: an English question finds the
French sentence) plus the share of the question's idf-weighted vocabulary it contains
(exact names and numbers). The answer abstains when the best sentence's evidence is below
a threshold calibrated on PIAF dev questions against off-corpus questions
(benchmarks/calibrate_abstain.py; trade-off table in the README).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rag.citations import Citation, SourceCache
from rag.errors import RagError
from rag.lexical import tokenize
from rag.retrieve import Retrieval, SentenceScore

NO_ANSWER = "I could not find this in the indexed documents."
MAX_QUESTION_CHARS = 2000
MAX_SENTENCES = 3
# Calibrated by benchmarks/calibrate_abstain.py; see README "Abstention".
DEFAULT_ABSTAIN_THRESHOLD = 0.85
# Weight of the lexical share (0..1) next to the cosine similarity.
LEXICAL_BONUS = 0.1
# Further sentences are quoted only if they score within this margin of the best one.
FOLLOWER_MARGIN = 0.02


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

    def to_json(self) -> dict:
        return {
            "answer": self.text,
            "abstained": self.abstained,
            "verified": self.verified,
            "mode": self.mode,
            "note": self.note,
            "citations": [c.to_json() for c in self.citations],
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


@dataclass
class ScoredSentence:
    sentence: SentenceScore
    score: float


def rank_sentences(
    question: str, retrieval: Retrieval, idf: dict[str, float]
) -> list[ScoredSentence]:
    """The retrieved chunks' sentences, best first: cosine plus idf-weighted overlap.

    The overlap counts only question words the corpus knows: the English words of a
    question about French text say nothing about whether the answer is there, while a
    shared name or number does.
    """
    q_tokens = {t for t in tokenize(question) if t in idf}
    q_mass = sum(idf[t] for t in q_tokens)
    ranked = []
    for sent in retrieval.sentences:
        overlap = q_tokens & set(tokenize(sent.text))
        share = sum(idf[t] for t in overlap) / q_mass if q_mass else 0.0
        ranked.append(ScoredSentence(sent, sent.similarity + LEXICAL_BONUS * share))
    ranked.sort(key=lambda s: -s.score)
    return ranked


def evidence(question: str, retrieval: Retrieval, idf: dict[str, float]) -> float:
    """How well the corpus answers this question: the best sentence's score."""
    ranked = rank_sentences(question, retrieval, idf)
    return ranked[0].score if ranked else 0.0


def extractive_answer(
    question: str,
    retrieval: Retrieval,
    idf: dict[str, float],
    threshold: float = DEFAULT_ABSTAIN_THRESHOLD,
) -> Answer:
    """Quote the best sentences with verified citations, or abstain."""
    ranked = rank_sentences(question, retrieval, idf)
    if not ranked or ranked[0].score < threshold:
        return Answer(NO_ANSWER, True)
    best = ranked[0].score
    chosen = [s for s in ranked[:MAX_SENTENCES] if s.score >= best - FOLLOWER_MARGIN]
    titles = {n.node.node_id: n.node.metadata.get("title", "") for n in retrieval.nodes}
    cache = SourceCache()
    citations: list[Citation] = []
    for item in chosen:
        sent = item.sentence
        cite = cache.verify_span(len(citations) + 1, sent.span(), titles.get(sent.chunk_id, ""))
        if cite is not None:
            citations.append(cite)
    if not citations:
        return Answer(NO_ANSWER, True, note="The matching sources changed since indexing.")
    return Answer(" ".join(f"“{c.quote}” [{c.n}]" for c in citations), False, citations)
