"""The answer decision on the seed article: direct questions answered on the right line,
near-miss questions (same topic, asked fact absent) refused.

The shipped decision (``rag/answering/decision.json``, chosen on dev questions by
``benchmarks/answers.py fit``: the combined model, docs/verifier.md) is fitted on PIAF
dev questions; these questions (``tests/data/seed_questions.jsonl``), never fitted on,
check that it holds on a one-article news corpus, which is what a user's first upload looks
like. The goal is every one of them: the combined model gets 27 of 28 direct questions and
3 of 18 near-misses right, the feature model (``RAG_ANSWER_SCORE=judge``) 26 of 28 and 16
of 18. Each decision's misses are listed (``KNOWN_MISSES``) and marked as expected
failures, so the suite says how far the product is from the goal and an improvement shows
as XPASS.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from rag.answering.decision import Decision, Verdict
from rag.answering.extractive import Answer, Evidence, extractive_answer
from rag.documents.citations import Citation
from rag.documents.formats import read_text
from rag.service import RagService
from tests.conftest import make_settings

QUESTIONS = Path(__file__).resolve().parents[1] / "data" / "seed_questions.jsonl"
ROWS = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line]
DIRECT = [r for r in ROWS if r["kind"] == "direct"]
NEAR_MISS = [r for r in ROWS if r["kind"] == "near_miss"]


# The seed questions each decision gets wrong (``decision.json`` names the shipped one).
# The feature model's misses (judge, threshold 0.165):
JUDGE_MISSES = {
    "seed-d01": "refused: 'stepping up ... involvement' paraphrases line 1 word by word",
    "seed-d03": "refused: the question names Pyongyang and Moscow, line 2 says North Korea, Russia",
    "seed-n07": "drones per month: line 9 speaks of drones made at Yelabuga (its numbers count "
    "employees: the answer-type signal sees it, not strongly enough)",
    "seed-n10": "Russian workers at Yelabuga: line 9 gives the staff numbers",
}
# The combined model's (threshold 0.116, chosen on PIAF dev, where 95 % of the direct
# questions must be answered): without the corpus-size signals that told the feature model
# a one-article corpus is on its topic throughout, a sentence on the asked topic that
# states another place, nationality, date or count passes (docs/verifier.md). It ranks the
# seed questions well (AUC 0.966) but its PIAF threshold sits below most of the article's
# near-misses.
_ANSWERED = "answered at {} with line {} ({})"
COMBINED_MISSES = {
    "seed-d03": "refused at 0.11: the question names Pyongyang and Moscow, line 2 says North "
    "Korea, Russia",
    "seed-n01": _ANSWERED.format(0.12, 5, "no Chinese engineers"),
    "seed-n03": _ANSWERED.format(0.447, 4, "Kursk, not Rostov"),
    "seed-n04": _ANSWERED.format(0.68, 3, "no count of soldiers"),
    "seed-n05": _ANSWERED.format(0.171, 4, "no pay"),
    "seed-n06": _ANSWERED.format(0.658, 4, "no arrival date"),
    "seed-n07": _ANSWERED.format(0.463, 9, "drones made at Yelabuga, no monthly count"),
    "seed-n09": _ANSWERED.format(0.235, 9, "no Iranian supply"),
    "seed-n10": _ANSWERED.format(0.52, 9, "no count of Russian workers"),
    "seed-n11": _ANSWERED.format(0.388, 3, "North, not South Korean"),
    "seed-n12": _ANSWERED.format(0.509, 3, "no minister named"),
    "seed-n13": _ANSWERED.format(0.324, 11, "no year of the agreement"),
    "seed-n14": _ANSWERED.format(0.223, 5, "no kilometres of roads"),
    "seed-n15": _ANSWERED.format(0.198, 2, "Ukrainian, not American intelligence"),
    "seed-n16": _ANSWERED.format(0.272, 9, "no yearly drone count"),
    "seed-n18": _ANSWERED.format(0.16, 9, "no African workers"),
}
KNOWN_MISSES = {"judge": JUDGE_MISSES, "combined": COMBINED_MISSES}.get(
    Decision.resolve(make_settings(Path("unused"))).score, {}
)


def ids(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows]


def cases(rows: list[dict]) -> list:
    """One case per question, the known misses marked as expected failures (not strict, so
    a refit that gets one right shows it)."""
    return [
        pytest.param(r, id=r["id"], marks=pytest.mark.xfail(reason=KNOWN_MISSES[r["id"]]))
        if r["id"] in KNOWN_MISSES
        else pytest.param(r, id=r["id"])
        for r in rows
    ]


@pytest.fixture(scope="module")
def evidence(seed_service: RagService) -> Callable[[str], Evidence]:
    """Each question's evidence, computed once for the module (the tests share questions)."""
    found: dict[str, Evidence] = {}

    def get(question: str) -> Evidence:
        if question not in found:
            found[question] = seed_service.evidence(question)
        return found[question]

    return get


def assert_verified(citations: list[Citation]) -> None:
    """Every quote is exactly the cited span of the text the offsets point into."""
    for cite in citations:
        text = read_text(Path(cite.extracted or cite.source)).text
        assert cite.verified and text[cite.start : cite.end] == cite.quote, cite


def describe(answer: Answer) -> str:
    return f"confidence {answer.confidence}, cited " + "; ".join(
        f"line {c.line}: {c.quote[:80]!r}" for c in answer.citations
    )


def test_evidence_is_what_ask_answers(seed_service: RagService, evidence) -> None:
    """The tests below judge ``evidence``; without an LLM it is exactly what ``ask`` says."""
    question = DIRECT[0]["question"]
    assert seed_service.ask(question) == evidence(question).extractive


@pytest.mark.parametrize("row", cases(DIRECT))
def test_direct_questions_are_answered_on_their_line(row: dict, evidence) -> None:
    answer = evidence(row["question"]).extractive
    assert not answer.abstained, f"{row['id']} refused: {describe(answer)}"
    assert row["line"] in [c.line for c in answer.citations], (
        f"{row['id']}: expected line {row['line']}, {describe(answer)}"
    )
    assert_verified(answer.citations)


@pytest.mark.parametrize("row", cases(NEAR_MISS))
def test_near_miss_questions_are_refused(row: dict, evidence) -> None:
    answer = evidence(row["question"]).extractive
    assert answer.abstained, f"{row['id']} answered: {describe(answer)}"
    assert answer.citations == []


def test_confidence_is_a_probability_and_closest_passages_are_verified(evidence) -> None:
    """A refusal over related passages (at or above the gate) shows them, verified; one
    below the gate shows nothing."""
    for row in ROWS:
        found = evidence(row["question"])
        answer = found.extractive
        assert answer.confidence is not None and 0.0 <= answer.confidence <= 1.0, row["id"]
        if answer.abstained and found.verdict is Verdict.CLOSEST:
            assert answer.closest, row["id"]
            assert_verified(answer.closest)
        else:
            assert answer.closest == [], row["id"]


@pytest.mark.parametrize("row", NEAR_MISS, ids=ids(NEAR_MISS))
def test_a_refusal_above_the_gate_shows_verified_closest_passages(row: dict, evidence) -> None:
    """The same path with the operating points forced, so it holds whatever the model."""
    found = evidence(row["question"])
    refused = extractive_answer(found.retrieval, found.judgement, Decision(1.01, 0.0))
    assert refused.abstained and refused.citations == [] and refused.closest
    assert [c.n for c in refused.closest] == list(range(1, len(refused.closest) + 1))
    assert_verified(refused.closest)
    nothing = extractive_answer(found.retrieval, found.judgement, Decision(1.01, 1.01))
    assert nothing.abstained and nothing.closest == []
