"""The offline answer: the best one to three source sentences, quoted verbatim and cited.

Candidate sentences are those of the top retrieved chunks. Each is scored by its stored
sentence vector's cosine to the question (cross-lingual: an English question finds the
French sentence) plus the share of the question's idf-weighted vocabulary it contains
(exact names and numbers). The three best get a confidence (``rag.confidence``);
the most confident is quoted, with runners-up that score nearly as well. Under the
threshold the answer is the refusal with the closest passages as citations, under the floor
a bare refusal (benchmarks/fit_confidence.py; trade-off table in the README).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rag.citations import Citation, SourceCache
from rag.confidence import TokenStatesFn, score_candidates
from rag.lexical import tokenize
from rag.retrieve import Retrieval, SentenceScore

NO_ANSWER = "I could not find this in the indexed documents."
MAX_QUESTION_CHARS = 2000
MAX_SENTENCES = 3
# Confidence (rag/confidence.py) below which the answer is refused: the highest one that
# still answers 95 % of French and 93 % of English PIAF dev questions (95.5 % / 93.2 %;
# their near-miss versions: 65 % / 67 % answered; benchmarks/fit_confidence.py, README
# "Abstention").
DEFAULT_ABSTAIN_THRESHOLD = 0.28
# Below the threshold but at least this confident, the refusal shows the closest passages
# (and an LLM still reads them); below it nothing relevant was found at all. All French and
# 99.8 % of English PIAF dev questions score above it.
CLOSEST_FLOOR = 0.1
CLOSEST_NOTE = "Closest passages — they may not answer your question."
# Weight of the lexical share (0..1) next to the cosine similarity.
LEXICAL_BONUS = 0.1
# Further sentences are quoted only if they score within this margin of the best one.
FOLLOWER_MARGIN = 0.02


@dataclass
class Answer:
    """What ``rag ask`` prints and the UI renders."""

    answer: str
    abstained: bool
    citations: list[Citation] = field(default_factory=list)
    mode: str = "extractive"
    note: str | None = None
    # False when an LLM answer cited passages that were not sent or misquoted its sources.
    verified: bool = True
    # How likely the retrieved sentences answer the question (None: not computed).
    confidence: float | None = None

    def to_json(self) -> dict:
        return {
            "answer": self.answer,
            "abstained": self.abstained,
            "verified": self.verified,
            "mode": self.mode,
            "note": self.note,
            "confidence": self.confidence,
            "citations": [c.to_json() for c in self.citations],
        }


class QuestionError(ValueError):
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
    share: float = 0.0  # of the question's idf-weighted known words found in the sentence


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
        ranked.append(ScoredSentence(sent, sent.similarity + LEXICAL_BONUS * share, share))
    ranked.sort(key=lambda s: -s.score)
    return ranked


def nothing_relevant(answer: Answer) -> bool:
    """A refusal without even closest passages: the confidence is below ``CLOSEST_FLOOR``."""
    return answer.abstained and not answer.citations


def extractive_answer(
    question: str,
    retrieval: Retrieval,
    idf: dict[str, float],
    token_states: TokenStatesFn,
    threshold: float = DEFAULT_ABSTAIN_THRESHOLD,
) -> Answer:
    """Quote the most likely answering sentence (and close runners-up) with verified
    citations; below ``threshold`` they are only the closest passages, below
    ``CLOSEST_FLOOR`` nothing is quoted."""
    ranked = rank_sentences(question, retrieval, idf)
    scored = score_candidates(question, ranked, retrieval, token_states)
    if not scored or scored[0][1] < CLOSEST_FLOOR:
        return Answer(NO_ANSWER, True, confidence=scored[0][1] if scored else 0.0)
    best, confidence = scored[0]
    followers = [
        s
        for s in ranked[:MAX_SENTENCES]
        if s is not best and s.score >= best.score - FOLLOWER_MARGIN
    ]
    citations = cite([best, *followers], retrieval)
    if not citations:
        note = "The matching sources changed since indexing."
        return Answer(NO_ANSWER, True, note=note, confidence=confidence)
    if confidence < threshold:
        return Answer(NO_ANSWER, True, citations, note=CLOSEST_NOTE, confidence=confidence)
    text = " ".join(f"“{c.quote}” [{c.n}]" for c in citations)
    return Answer(text, False, citations, confidence=confidence)


def cite(chosen: list[ScoredSentence], retrieval: Retrieval) -> list[Citation]:
    """Verified citations of the chosen sentences (those still exactly in their source)."""
    titles = {n.node.node_id: n.node.metadata.get("title", "") for n in retrieval.nodes}
    cache = SourceCache()
    citations: list[Citation] = []
    for item in chosen:
        sent = item.sentence
        found = cache.verify_span(len(citations) + 1, sent.span(), titles.get(sent.chunk_id, ""))
        if found is not None:
            citations.append(found)
    return citations
