"""Pure functions, tested on their own: rank fusion, sentence spans, quote matching, reply
parsing and upload-name sanitising. No model, no Chroma: the whole file runs in well under a
second, so a change to one of these shows its effect at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.generate import Renumber, ReplyStream, claims, match_quote, normalise
from rag.ingest import IngestError, safe_upload_path, sentence_spans
from rag.lexical import LexicalHits
from rag.retrieve import RRF_K, Ranking, SentenceScore, fuse, hybrid, lexical_weight


def test_fuse_adds_weighted_reciprocal_ranks() -> None:
    fused = dict(fuse([Ranking(["a", "b"]), Ranking(["b", "c"])], [1.0, 0.5], k=10))
    assert fused["a"] == pytest.approx(1 / (RRF_K + 1))
    assert fused["b"] == pytest.approx(1 / (RRF_K + 2) + 0.5 / (RRF_K + 1))
    assert fused["c"] == pytest.approx(0.5 / (RRF_K + 2))
    assert [cid for cid, _ in fuse([Ranking(["a", "b"]), Ranking(["b", "c"])], [1, 0.5], 2)] == [
        "b",
        "a",
    ]


def test_hybrid_ignores_bm25_when_it_covers_none_of_the_question() -> None:
    dense = Ranking(["a", "b", "c"])
    lexical = LexicalHits(["c", "b"], [3.0, 2.0], coverage=0.0)
    assert lexical_weight(0.0) == 0.0
    assert [cid for cid, _ in hybrid(dense, lexical, 3)] == ["a", "b", "c"]
    covered = LexicalHits(["c", "b"], [3.0, 2.0], coverage=1.0)
    assert hybrid(dense, covered, 1)[0][0] != "a"


def test_sentence_spans_are_exact_and_trimmed() -> None:
    text = "  Première phrase. Deuxième ? « Troisième ! » dit-il.\nLigne deux…  fin"
    spans = sentence_spans(text, offset=100)
    pieces = [text[a - 100 : b - 100] for a, b in spans]
    assert pieces == [
        "Première phrase.",
        "Deuxième ?",
        "« Troisième !",  # French puts a space before », which ends the sentence here
        "» dit-il.",
        "Ligne deux…",
        "fin",
    ]
    assert all(p == p.strip() for p in pieces)


def test_sentence_spans_of_blank_text_are_empty() -> None:
    assert sentence_spans(" \n\n  ") == []


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


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\me\\notes.md", "notes.md"),
        ("rapport <final>.pdf", "rapport _final_.pdf"),
        ("x" * 300 + ".txt", "x" * 196 + ".txt"),
    ],
)
def test_upload_names_keep_a_safe_base_name(name: str, expected: str) -> None:
    assert safe_upload_path(Path("/up"), name) == Path("/up") / expected


@pytest.mark.parametrize("name", ["", "...", "/", " . "])
def test_unusable_upload_names_are_refused(name: str) -> None:
    with pytest.raises(IngestError, match="not a usable file name"):
        safe_upload_path(Path("/up"), name)
