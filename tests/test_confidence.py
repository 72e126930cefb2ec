"""The answer decision on the seed article: direct questions answered from the right line,
near-miss questions (same topic, a fact the article does not state) refused.

The questions are ``tests/data/seed_questions.jsonl`` (hand-written; never used to fit the
confidence, which is fitted on PIAF: benchmarks/fit_confidence.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.answer import CLOSEST_NOTE, NO_ANSWER
from rag.service import RagService
from tests.conftest import run_cli

QUESTIONS = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "seed_questions.jsonl").read_text().splitlines()
    if line.strip()
]
DIRECT = [q for q in QUESTIONS if q["kind"] == "direct"]
NEAR_MISS = [q for q in QUESTIONS if q["kind"] == "near_miss"]


@pytest.mark.parametrize("row", DIRECT, ids=[q["id"] for q in DIRECT])
def test_direct_question_is_answered_from_its_line(seed_service: RagService, row: dict) -> None:
    answer = seed_service.ask(row["question"])
    assert not answer.abstained, answer.confidence
    assert row["line"] in [c.line for c in answer.citations], answer


# Not met yet: at the default threshold (fitted on PIAF, README "Abstention") every seed
# near-miss question still scores above it (lowest 0.46 against a threshold of 0.28), so each
# is answered with a cited sentence on the same topic. Strict: a fix turns these into passes.
NOT_YET = pytest.mark.xfail(
    strict=True, reason="confidence does not yet separate seed near-misses (README Abstention)"
)


@NOT_YET
@pytest.mark.parametrize("row", NEAR_MISS, ids=[q["id"] for q in NEAR_MISS])
def test_near_miss_question_is_refused(seed_service: RagService, row: dict) -> None:
    answer = seed_service.ask(row["question"])
    assert answer.abstained, (answer.confidence, answer.answer)
    assert answer.answer == NO_ANSWER
    assert not answer.citations or answer.note == CLOSEST_NOTE


def test_ask_json_reports_the_confidence(seed_service: RagService) -> None:
    done = run_cli("ask", DIRECT[7]["question"], "--json", data_dir=seed_service.settings.data_dir)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert 0.0 <= payload["confidence"] <= 1.0
    assert payload["abstained"] is False
