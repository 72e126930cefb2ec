"""How likely a candidate sentence answers the question: a calibrated confidence in [0, 1].

A sentence on the right topic is not enough: "How many Vietnamese workers are in Kursk?"
finds a sentence about North Korean specialists in Kursk with a high cosine. What tells
them apart is whether each salient term of the question has a counterpart in the sentence,
across languages. Terms are the question's words less stop words and question words; a
term's *alignment* is the late-interaction (ColBERT MaxSim) score of its tokens: each token
state of the question (encoder's last layer, ``query:`` side) takes its best cosine over the
sentence's token states (``passage:`` side), averaged over the term's tokens.

The confidence is a logistic function of a few features of the best candidate (``FEATURES``);
the weights were fitted by ``benchmarks/fit_confidence.py`` (see ``WEIGHTS``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rag.lexical import _stopwords, fold

if TYPE_CHECKING:
    from rag.answer import ScoredSentence
    from rag.retrieve import Retrieval

_WORD = re.compile(r"\w+", re.UNICODE)
# Question words and auxiliaries the lexical stop lists lack; they name no asked thing.
_QUESTION_WORDS = (
    "what which who whom whose where when why how many much does did do done is are was "
    "were be been has have had according kind type name called per there their its it "
    "quel quels quelle quelles qui que quoi qu où quand comment combien pourquoi est "
    "sont était étaient ont avait avaient fait font été être lequel laquelle lesquels "
    "lesquelles dont cet cette ces leur leurs nom"
)
QUESTION_WORDS = frozenset(fold(w) for w in _QUESTION_WORDS.split())


class TokenStates(Protocol):
    """One text's token states (``rag.onnx_e5.TokenStates``)."""

    states: np.ndarray  # (n_tokens, dim)
    offsets: list[tuple[int, int]]  # character span of each token


TokenStatesFn = Callable[[list[str], str], list[TokenStates]]
"""``token_states(texts, kind)`` with kind "query" or "passage"."""


@dataclass(frozen=True)
class Term:
    """A salient question word: its character span and whether it names something."""

    start: int
    end: int
    text: str

    @property
    def is_name(self) -> bool:
        """Capitalised (not first in the question) or a number: names the asked thing."""
        return self.text[0].isdigit() or (self.start > 0 and self.text[0].isupper())


def salient_terms(question: str) -> list[Term]:
    """The question's words that say what is asked (no stop words, no question words)."""
    stop = _stopwords()
    terms = []
    for match in _WORD.finditer(question):
        word = match.group()
        folded = fold(word)
        if folded in stop or folded in QUESTION_WORDS or (len(word) < 2 and not word.isdigit()):
            continue
        terms.append(Term(match.start(), match.end(), word))
    return terms


def _unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=-1, keepdims=True), 1e-9)


def term_alignment(
    question: TokenStates, terms: Sequence[Term], sentence: TokenStates
) -> np.ndarray:
    """Each term's MaxSim against the sentence (mean over the term's tokens)."""
    best = (_unit(question.states) @ _unit(sentence.states).T).max(axis=1)
    scores = []
    for term in terms:
        rows = [k for k, (a, b) in enumerate(question.offsets) if a < term.end and b > term.start]
        scores.append(float(best[rows].mean()) if rows else 1.0)
    return np.asarray(scores, dtype=np.float64)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


FEATURES = (
    "similarity",  # the sentence vector's cosine to the question
    "lexical",  # share of the question's idf-weighted known words in the sentence
    "align_min",  # the least aligned salient term
    "align_mean",  # mean term alignment
    "name_min",  # the least aligned name or number (1 without any)
    "background",  # mean cosine of all the retrieved chunks' sentences
    "coverage",  # share of the question's words in the corpus vocabulary
)
# Sentences whose features are computed (the best by rank_sentences' score).
CANDIDATES = 3


def candidate_features(
    question: str,
    ranked: Sequence[ScoredSentence],
    retrieval: Retrieval,
    token_states: TokenStatesFn,
) -> np.ndarray:
    """``FEATURES`` of the best ``CANDIDATES`` ranked sentences, one row each."""
    candidates = list(ranked[:CANDIDATES])
    if not candidates:
        return np.zeros((0, len(FEATURES)))
    terms = salient_terms(question)
    names = np.asarray([t.is_name for t in terms], dtype=bool)
    asked = token_states([question], "query")[0]
    states = token_states([c.sentence.text for c in candidates], "passage")
    background = float(np.mean([s.similarity for s in retrieval.sentences]))
    rows = []
    for cand, sentence in zip(candidates, states, strict=True):
        align = term_alignment(asked, terms, sentence) if terms else np.ones(1)
        rows.append(
            [
                cand.sentence.similarity,
                cand.share,
                float(align.min()),
                float(align.mean()),
                float(align[names].min()) if names.any() else 1.0,
                background,
                retrieval.coverage,
            ]
        )
    return np.asarray(rows, dtype=np.float64)


# Fitted by benchmarks/fit_confidence.py on the top candidate of 600 French and 600 English
# PIAF dev questions (positives) and their near-miss versions (negatives), languages weighted
# equally: feature -> (coefficient, mean, scale), applied to (value - mean) / scale.
# AUC answerable vs near-miss (most confident of the three candidates): French 0.824,
# English 0.769; the evidence score it replaces: 0.822 and 0.714 (5-fold cross-validated by
# question: 0.819 / 0.763, so the fit does not overfit). The weakest alignment, the weakest
# name and the mean alignment carry what the cosine misses; a fit without them: 0.822 / 0.715.
INTERCEPT = 0.0344
WEIGHTS = {
    "similarity": (0.5239, 0.8376, 0.0332),
    "lexical": (0.2171, 0.4377, 0.2970),
    "align_min": (0.0674, 0.7477, 0.0591),
    "align_mean": (0.8410, 0.8166, 0.0508),
    "name_min": (0.1990, 0.8918, 0.1066),
    "background": (-0.2193, 0.7856, 0.0243),
    "coverage": (-0.5671, 0.7401, 0.2819),
}


def confidence(row: np.ndarray) -> float:
    """The fitted logistic function of one candidate's ``FEATURES``."""
    z = INTERCEPT
    for name, value in zip(FEATURES, row, strict=True):
        coefficient, mean, scale = WEIGHTS[name]
        z += coefficient * (value - mean) / scale
    return sigmoid(z)


def score_candidates(
    question: str,
    ranked: Sequence[ScoredSentence],
    retrieval: Retrieval,
    token_states: TokenStatesFn,
) -> list[tuple[ScoredSentence, float]]:
    """The best-ranked candidates with their confidence, most confident first."""
    rows = candidate_features(question, ranked, retrieval, token_states)
    scored = [(cand, confidence(row)) for cand, row in zip(ranked, rows)]
    return sorted(scored, key=lambda pair: -pair[1])
