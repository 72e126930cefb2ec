"""The answer verifier: its ONNX build, a confidence that ignores the rest of the corpus,
and the LLM path's ``supported`` mark.

Real components throughout (the bundled model, ONNX Runtime, Chroma, the stand-in server
for the LLM, the only fake).
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import numpy as np
import pytest

from rag.answering.decision import Decision, passage_of
from rag.answering.extractive import extractive_answer
from rag.answering.verifier import WEIGHTS, Passage, Verifier, default_verifier
from rag.service import RagService
from tests.conftest import ROOT, SEED, make_settings, run_cli, write_piaf_corpus
from tests.integration.test_llm import passages
from tests.openai_standin import StandIn, reply

QUESTIONS = ROOT / "tests" / "data" / "seed_questions.jsonl"
ROWS = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line]
# The int8 graph against the float32 torch model that training stored logits from: int8
# products move a logit by a few hundredths (docs/verifier.md gives the measured gap).
LOGIT_TOLERANCE = 0.3
CONFIDENCE_TOLERANCE = 0.02
UNRELATED_PASSAGES = 150


def test_onnx_verifier_matches_the_torch_model_it_was_built_from() -> None:
    """The graph built from the bundled weights and the stored delta gives the logits the
    trained torch model gave on the pairs stored with it."""
    with np.load(WEIGHTS) as raw:
        expected = raw["check.logits"]
        pairs = json.loads(str(raw["check.pairs"]))
    verifier = default_verifier()
    got = [verifier.logits(q, [Passage(**p)])[0] for q, p in pairs]
    assert np.abs(np.asarray(got) - expected).max() < LOGIT_TOLERANCE, (got, expected)
    # and the calibrated probability orders them as the logits do
    probabilities = [verifier.calibrate(z) for z in got]
    assert np.argsort(probabilities).tolist() == np.argsort(expected).tolist()


def test_a_score_depends_on_the_pair_only() -> None:
    """Scored alone or with others, a pair keeps its probability: each pair is its own run
    (the int8 graph scales its activations per run, so batch mates would move it)."""
    verifier: Verifier = default_verifier()
    question = ROWS[0]["question"]
    seed = SEED.read_text(encoding="utf-8").splitlines()
    passages = [Passage(line) for line in seed[1:6] if line.strip()]
    together = verifier.probabilities(question, passages)
    alone = [verifier.probabilities(question, [p])[0] for p in passages]
    np.testing.assert_allclose(together, alone, atol=1e-6)


Decided = dict[str, tuple[bool, float, str]]


def _decisions(service: RagService) -> Decided:
    """Each seed question's (refused, confidence, the sentence it was scored on)."""
    found = {}
    for row in ROWS:
        evidence = service.evidence(row["question"])
        answer, ranked = evidence.extractive, evidence.judgement.ranked
        scored = ranked[0].sentence.text if ranked else ""
        found[row["id"]] = (answer.abstained, float(answer.confidence or 0.0), scored)
    return found


@pytest.fixture(scope="module")
def seed(seed_service: RagService) -> RagService:
    """Another service over the seed index: single-word vectors are cached per service and
    embedded in batches (int8 activations are scaled per batch), so asking other questions
    first through the shared service could nudge the feature model's scores that
    tests/test_confidence.py holds to its operating point."""
    return RagService(seed_service.settings)


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> tuple[Decided, Decided]:
    """The seed questions' decisions on the seed article alone, then after 150 unrelated
    PIAF passages joined it."""
    tmp_path = tmp_path_factory.mktemp("grown")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(SEED, corpus / SEED.name)
    service = RagService(make_settings(tmp_path / "data"))
    service.ingest([corpus], show_progress=False)
    before = _decisions(service)
    write_piaf_corpus(corpus / "piaf", UNRELATED_PASSAGES)
    service.ingest([corpus], show_progress=False)
    return before, _decisions(service)


def test_confidence_does_not_depend_on_the_rest_of_the_corpus(
    grown: tuple[Decided, Decided],
) -> None:
    """The seed questions get the same decisions, and confidences within 0.02, after 150
    unrelated PIAF passages join the seed article (the scored sentence is recorded to say
    which one moved, if one does)."""
    before, after = grown
    for qid, (refused, confidence, _) in before.items():
        assert after[qid][0] == refused, (qid, before[qid], after[qid])
        assert abs(after[qid][1] - confidence) <= CONFIDENCE_TOLERANCE, (
            qid,
            before[qid],
            after[qid],
        )


def test_llm_citations_carry_whether_the_verifier_finds_them_answering(seed: RagService) -> None:
    """``rag ask --json`` through an LLM: each citation says ``supported``, true exactly when
    the verifier gives its sentence the answer threshold for the question."""
    kursk = "Plus précisément, dans la région de Kursk"
    drones = (
        "Il est notable que la Corée du Nord développe activement sa propre production de drones"
    )
    question = "How many North Korean specialists are in the Kursk region?"

    def text(body: dict[str, Any]) -> str:
        numbers = {
            needle: next(n for n, t in passages(body).items() if needle in t)
            for needle in (kursk, drones)
        }
        return (
            f"More than a thousand [{numbers[kursk]}]; drones too [{numbers[drones]}].\n\nQuotes:\n"
            f'[{numbers[kursk]}] "{kursk}"\n[{numbers[drones]}] "{drones}"'
        )

    standin = StandIn()
    try:
        standin.script(reply(text))
        env = {"OPENAI_BASE_URL": standin.url, "OPENAI_API_KEY": "sk-test", "RAG_LLM_MODEL": "m",
               "RAG_LLM_TIMEOUT": "5", "RAG_LLM_MAX_RETRIES": "1", "RAG_TOP_K": "50"}  # fmt: skip
        done = run_cli("ask", question, "--json", data_dir=seed.settings.data_dir, env=env)
    finally:
        standin.close()
    assert done.returncode == 0, done.stderr
    citations = json.loads(done.stdout)["citations"]
    assert len(citations) == 2 and all(isinstance(c["supported"], bool) for c in citations)
    decision = Decision.resolve(seed.settings)
    retrieval = seed.evidence(question, 50).retrieval
    by_text = {s.text: s for s in retrieval.sentences}
    for cite in citations:
        passage = passage_of(by_text[cite["quote"]], retrieval)
        probability = default_verifier().probabilities(question, [passage])[0]
        assert cite["supported"] == (probability >= decision.verifier_threshold), (
            cite,
            probability,
        )
    drones_cite = next(c for c in citations if "drones" in c["quote"])
    assert drones_cite["supported"] is False


# Near-misses of the seed article and the asked word the article does not state.
UNSTATED = {"seed-n01": "chinese", "seed-n02": "belgorod", "seed-n03": "rostov"}


@pytest.mark.parametrize("qid", sorted(UNSTATED))
def test_quotes_say_which_asked_words_they_do_not_state(qid: str, seed: RagService) -> None:
    """Under an answer's quotes, or a refusal's closest passages, the asked words the
    sentence does not state ("Not in this passage: Rostov")."""
    row = next(r for r in ROWS if r["id"] == qid)
    found = seed.evidence(row["question"])
    answered = extractive_answer(found.retrieval, found.judgement, Decision(0.0, 0.0))
    refused = extractive_answer(found.retrieval, found.judgement, Decision(1.01, 0.0))
    for shown in (answered.citations, refused.closest):
        assert shown and UNSTATED[qid] in shown[0].missing, shown
        assert UNSTATED[qid] in shown[0].to_json()["missing"]
