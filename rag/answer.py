"""The offline answer: the best one to three source sentences, quoted verbatim and cited.

Sentences come from the top retrieved chunks. Each is scored by how much of the question's
vocabulary it carries (BM25-style idf weights, accent-folded and stemmed) plus the rank of
its chunk, so an English question still lands on the sentence of the top French chunk when
only a name ("Kursk") is shared. The answer abstains when the evidence is too weak: the
dense similarity of the best chunk, lifted by lexical support, is below a threshold
calibrated on PIAF dev questions and off-corpus questions (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llama_index.core.schema import NodeWithScore

from rag.citations import Citation, SourceCache, Span, sentence_spans
from rag.lexical import tokenize
from rag.retrieve import Evidence

NO_ANSWER = "I could not find this in the indexed documents."
MAX_QUESTION_CHARS = 2000
MAX_SENTENCES = 3
# Calibrated by benchmarks/calibrate_abstain.py; see README "Abstention".
DEFAULT_ABSTAIN_THRESHOLD = 0.80
# Weight of the best sentence's share of question idf mass in the evidence score.
LEXICAL_BONUS = 0.1
# A second or third sentence must score at least this share of the best one.
FOLLOWER_RATIO = 0.6


@dataclass
class Answer:
    """What ``rag ask`` prints and the UI renders."""

    answer: str
    abstained: bool
    citations: list[Citation] = field(default_factory=list)
    mode: str = "extractive"
    note: str | None = None

    def to_json(self) -> dict:
        return {
            "answer": self.answer,
            "abstained": self.abstained,
            "mode": self.mode,
            "note": self.note,
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
    span: Span
    title: str
    score: float


def score_sentences(
    question: str, hits: list[NodeWithScore], idf: dict[str, float]
) -> list[ScoredSentence]:
    """Every sentence of the hits, scored by idf-weighted question overlap and chunk rank."""
    q_tokens = set(tokenize(question))
    q_mass = sum(idf.get(t, 1.0) for t in q_tokens) or 1.0
    out: list[ScoredSentence] = []
    for rank, hit in enumerate(hits):
        meta = hit.node.metadata
        text = hit.node.get_content()
        for start, end in sentence_spans(text, int(meta["start"])):
            local = text[start - int(meta["start"]) : end - int(meta["start"])]
            overlap = q_tokens & set(tokenize(local))
            lexical = sum(idf.get(t, 1.0) for t in overlap) / q_mass
            prior = 1.0 / (1.0 + rank)
            out.append(
                ScoredSentence(
                    Span(meta["source"], start, end, local),
                    meta.get("title", ""),
                    lexical + 0.35 * prior,
                )
            )
    out.sort(key=lambda s: -s.score)
    return out


def lexical_support(best: ScoredSentence, question: str, idf: dict[str, float]) -> float:
    """Share of the question's idf mass found in the chosen sentence (0..1)."""
    q_tokens = set(tokenize(question))
    if not q_tokens:
        return 0.0
    overlap = q_tokens & set(tokenize(best.span.text))
    total = sum(idf.get(t, 1.0) for t in q_tokens)
    return sum(idf.get(t, 1.0) for t in overlap) / total if total else 0.0


def evidence_score(
    question: str, ranked: list[ScoredSentence], evidence: Evidence, idf: dict[str, float]
) -> float:
    """One number for 'is this answerable here': dense similarity plus lexical backing."""
    if not ranked:
        return 0.0
    return evidence.dense_top + LEXICAL_BONUS * lexical_support(ranked[0], question, idf)


def evidence_for(
    question: str, hits: list[NodeWithScore], evidence: Evidence, idf: dict[str, float]
) -> float:
    """The evidence score of a retrieval result (used by calibration)."""
    return evidence_score(question, score_sentences(question, hits, idf), evidence, idf)


def extractive_answer(
    question: str,
    hits: list[NodeWithScore],
    evidence: Evidence,
    idf: dict[str, float],
    threshold: float = DEFAULT_ABSTAIN_THRESHOLD,
) -> Answer:
    """Quote the best sentences with verified citations, or abstain."""
    ranked = score_sentences(question, hits, idf)
    if not ranked:
        return Answer(NO_ANSWER, True)
    if evidence_score(question, ranked, evidence, idf) < threshold:
        return Answer(NO_ANSWER, True)
    chosen = [ranked[0]] + [
        s for s in ranked[1:MAX_SENTENCES] if s.score >= FOLLOWER_RATIO * ranked[0].score
    ]
    cache = SourceCache()
    citations: list[Citation] = []
    parts: list[str] = []
    for sentence in chosen:
        cite = cache.verify_span(len(citations) + 1, sentence.span, sentence.title)
        if cite is None:
            continue
        citations.append(cite)
        parts.append(f"“{cite.quote}” [{cite.n}]")
    if not citations:
        return Answer(NO_ANSWER, True, note="The matching sources changed since indexing.")
    return Answer(" ".join(parts), False, citations)
