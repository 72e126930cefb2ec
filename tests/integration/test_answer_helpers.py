"""Pure helpers of the answer step, tested on their own: quote matching, reply parsing and
renumbering, the refusal sentinel, the answer decision's model and word features, the error
hierarchy and the benchmarks' held-out splits. No model and no Chroma, but their modules import
LlamaIndex, so they live beside the integration tests rather than in tests/unit/."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from llama_index.core.schema import NodeWithScore, TextNode

from benchmarks.answers import fold_of, off_corpus
from benchmarks.answers_narrow import SETS
from rag.accounts.conversations import ConversationError
from rag.accounts.users import AccountError
from rag.answering.decision import ConfidenceModel, content_words, default_model, frenchness
from rag.answering.extractive import QuestionError
from rag.answering.generate import (
    Renumber,
    ReplyStream,
    build_answer,
    claims,
    is_not_in_documents,
    match_quote,
    may_be_not_in_documents,
    normalise,
)
from rag.answering.llm import LLMError
from rag.datadir import StoreError
from rag.documents.formats import FormatError
from rag.embedding.embedders import EmbeddingError
from rag.errors import RagError
from rag.evaluate import Outcome, read_jsonl
from rag.ingest.files import IngestError
from rag.retrieval.hybrid import Retrieval, SentenceScore


def _sentence(text: str, start: int = 0) -> SentenceScore:
    meta = {"source": "s.txt", "start": start, "end": start + len(text), "line": 1}
    return SentenceScore("c1", text, 0.5, meta)


def test_match_quote_tolerates_case_quote_marks_and_small_slips() -> None:
    sentences = [
        _sentence("Le phare date de 1863."),
        _sentence("Plus de mille spécialistes nord-coréens participent aux travaux.", 30),
    ]
    assert match_quote('"plus de mille spécialistes nord-coréens"', sentences) is sentences[1]
    assert match_quote("Plus de mille specialistes nord-coréens participent aux travaux", sentences)
    assert match_quote("Kursk", sentences) is None  # too short to say which sentence
    assert match_quote("Une phrase qui n'existe nulle part ici.", sentences) is None
    assert normalise("  L’Été «chaud»  ") == normalise('l\'été "chaud"')


def test_renumber_orders_by_first_use_and_drops_unknown_markers() -> None:
    renumber = Renumber(allowed=[1, 2, 3])
    assert renumber("A [3]. B [1, 3]. C [7].") == "A [1]. B [2][1]. C."
    assert renumber.order == {3: 1, 1: 2}
    assert renumber.dropped == [7]


def test_reply_stream_holds_back_partial_markers_and_the_quotes_section() -> None:
    reply = ReplyStream(passages=2)
    shown = "".join(reply.feed(d) for d in ["Mille spécialistes [", "2] sont là.", "\nQuo"])
    shown += reply.feed("tes:\n[2] Plus de mille spécialistes nord-coréens.")
    shown += reply.close()
    assert shown == "Mille spécialistes [1] sont là."
    assert reply.quotes == {2: ["Plus de mille spécialistes nord-coréens."]}


def test_claims_map_each_marker_to_the_text_it_backs() -> None:
    found = claims("Mille ouvriers [1]. Six mille prévus [2][1].")
    assert found[2].strip() == ". Six mille prévus"
    assert "Mille ouvriers" in found[1] and "Six mille prévus" in found[1]


def test_build_answer_resolves_quotes_to_verified_spans(tmp_path: Path) -> None:
    source = tmp_path / "s.txt"
    text = "Le phare date de 1863. Il mesure quarante mètres de haut."
    source.write_text(text, encoding="utf-8")
    meta = {"source": str(source), "start": 0, "end": len(text), "line": 1, "title": "Phare"}
    node = NodeWithScore(node=TextNode(id_="c1", text=text, metadata=meta), score=1.0)
    sentences = [
        SentenceScore("c1", s, 0.9, {"source": str(source), "start": a, "end": a + len(s)})
        for s, a in (("Le phare date de 1863.", 0), ("Il mesure quarante mètres de haut.", 23))
    ]
    reply = ReplyStream(passages=1)
    reply.feed("Il fait quarante mètres [1] [4].\nQuotes:\n[1] il mesure quarante mètres")
    reply.close()
    answer = build_answer(reply, Retrieval([node], sentences, 1.0), "llm:test")
    assert answer.text == "Il fait quarante mètres [1]."
    assert [(c.n, c.start, c.quote, c.verified) for c in answer.citations] == [
        (1, 23, "Il mesure quarante mètres de haut.", True)
    ]
    assert not answer.verified and "removed [4]" in (answer.note or "")


def test_every_user_facing_error_is_a_rag_error() -> None:
    for error in (
        AccountError,
        ConversationError,
        EmbeddingError,
        FormatError,
        IngestError,
        LLMError,
        QuestionError,
        StoreError,
    ):
        assert issubclass(error, RagError), error


@pytest.mark.parametrize(
    "reply",
    [
        "NOT_IN_DOCUMENTS",
        "  NOT_IN_DOCUMENTS\n",
        "**NOT_IN_DOCUMENTS**",
        "`NOT_IN_DOCUMENTS`",
        "NOT_IN_DOCUMENTS.",
        "_NOT_IN_DOCUMENTS_!",
        "NOT_IN_DOCUMENTS\n\nQuotes:\n",
        "NOT_IN_DOCUMENTS\n**Quotes:**",
    ],
)
def test_sentinel_forms_are_refusals(reply: str) -> None:
    assert is_not_in_documents(reply)
    assert all(may_be_not_in_documents(reply[:end]) for end in range(len(reply) + 1))


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "NOT_IN",
        "NOT_IN_DOCUMENTS_EXTRA",
        "NOT_IN_DOCUMENTS. But the plan foresees six thousand [1].",
        "Mille spécialistes [1]; NOT_IN_DOCUMENTS does not apply.",
        "Je ne sais pas d'après ces documents.",
    ],
)
def test_other_replies_are_not_refusals(reply: str) -> None:
    assert not is_not_in_documents(reply)


def test_reply_stream_never_shows_the_sentinel() -> None:
    reply = ReplyStream(passages=2)
    shown = "".join(reply.feed(d) for d in ["NOT_IN", "_DOCU", "MENTS"]) + reply.close()
    assert shown == "" and reply.refused


def test_reply_stream_releases_held_text_that_is_no_sentinel() -> None:
    reply = ReplyStream(passages=2)
    assert reply.feed("NOT") == ""
    shown = reply.feed(" sure: mille [2].") + reply.close()
    assert shown == "NOT sure: mille [1]." and not reply.refused


def test_content_words_drop_stop_words_and_repeats_in_order() -> None:
    """Term alignment weighs each meaningful question word once."""
    text = "Les TRAVAILLEURS, les travailleurs et 5 usines de Kursk en 2015"
    assert content_words(text) == ["travailleurs", "5", "usines", "kursk", "2015"]
    assert content_words("Quand et comment ?") == []


def test_frenchness_tells_french_from_english_questions() -> None:
    """French questions may be judged by the words the corpus lacks; English ones not."""
    french = frenchness("Combien de travailleurs sont employés dans la région ?")
    english = frenchness("How many workers are employed in the region?")
    assert 0.5 < french < 1.0 and 0.0 < english < 0.5
    assert frenchness("Kursk 2015") == 0.5


def _model_file(tmp_path: Path, **fields: object) -> Path:
    raw = {
        "features": ["cos", "share"],
        "mean": [0.5, 0.0],
        "scale": [0.1, 1.0],
        "coef": [2.0, -1.0],
        "intercept": 0.5,
        **fields,
    }
    path = tmp_path / "model.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def test_confidence_model_scores_its_named_features(tmp_path: Path) -> None:
    model = ConfidenceModel.load(_model_file(tmp_path, threshold=0.3, gate=0.1))
    assert model.names == ("cos", "share") and (model.threshold, model.gate) == (0.3, 0.1)
    z = 2.0 * (0.6 - 0.5) / 0.1 - 1.0 * 0.5 + 0.5
    # Order of the dict does not matter: features are read by name.
    assert model({"share": 0.5, "cos": 0.6, "extra": 9.0}) == pytest.approx(1 / (1 + math.exp(-z)))
    assert 0.0 < model({"cos": 1e6, "share": 0.0}) <= 1.0  # clipped, no overflow


def test_confidence_model_defaults_its_operating_points(tmp_path: Path) -> None:
    model = ConfidenceModel.load(_model_file(tmp_path))
    assert (model.threshold, model.gate) == (0.5, 0.05)


def test_a_model_on_features_the_judge_does_not_produce_fails_at_scoring(tmp_path: Path) -> None:
    """A model fitted on other features must fail loudly, not score with a missing input."""
    model = ConfidenceModel.load(_model_file(tmp_path, features=["cos", "renamed"]))
    with pytest.raises(KeyError, match="renamed"):
        model({"cos": 0.9, "share": 0.4})


def test_the_shipped_model_is_well_formed() -> None:
    model = default_model()
    assert len(set(model.names)) == len(model.names) == len(model.mean)
    assert len(model.scale) == len(model.coef) == len(model.names)
    assert 0.0 <= model.gate <= model.threshold <= 1.0


def test_the_held_out_split_puts_off_corpus_questions_in_both_halves() -> None:
    """Each half's model must have seen off-corpus questions, or the held-out off-corpus
    figure measures a model that never met one (the split once hashed whole files)."""
    folds = [
        fold_of(Outcome(row["id"], row["lang"], "off_corpus", False, False, 0.0, {}))
        for row in off_corpus()
    ]
    assert 0.3 < sum(folds) / len(folds) < 0.7
    direct = Outcome("p1", "fr", "direct", True, True, 0.5, {})
    assert fold_of(direct) == fold_of(Outcome("p1-en", "en", "near_miss", False, False, 0.1, {}))


def test_the_other_held_out_splits_are_other_halvings() -> None:
    """``fit --splits`` must measure different halvings, each keeping a question with its
    translation (a salted CRC would repeat one split with its halves swapped)."""
    ids = [f"p{n}" for n in range(400)]
    halvings = [
        tuple(fold_of(Outcome(i, "fr", "direct", True, True, 0.5, {}), split) for i in ids)
        for split in range(4)
    ]
    flipped = [tuple(1 - f for f in h) for h in halvings]
    assert len(set(halvings) | set(flipped)) == 2 * len(halvings)
    assert all(0.4 < sum(h) / len(h) < 0.6 for h in halvings)
    en = Outcome("p7-en", "en", "near_miss", False, False, 0.1, {})
    assert fold_of(en, 3) == fold_of(Outcome("p7", "fr", "direct", True, True, 0.5, {}), 3)


@pytest.mark.parametrize("name", ["narrow", "heldout"])
def test_the_narrow_question_sets_point_at_their_lines(name: str) -> None:
    """A direct question's answer is copied from the line it names, or answers_narrow would
    count a right citation as wrong; near-miss questions name no line."""
    corpus, questions = SETS[name]
    rows = read_jsonl(questions)
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        lines = (corpus / row["file"]).read_text(encoding="utf-8").splitlines()
        if row["kind"] == "direct":
            assert row["answer"] in lines[row["line"] - 1], row["id"]
        else:
            assert row["kind"] == "near_miss" and "line" not in row and row["why"], row["id"]
