"""Pure functions, tested on their own: rank fusion, sentence spans, upload-name sanitising,
size limits, text decoding and the answer type a question asks for. Nothing heavy is imported
(no model, no Chroma, no LlamaIndex), so the whole folder runs in a few seconds and a change to
one of these shows its effect at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.answering.answer_type import Asked, expected, support
from rag.documents.formats import Decoded, FormatError, read_text
from rag.index.lexical import LexicalHits
from rag.ingest.files import MB, IngestError, too_large
from rag.ingest.uploads import safe_upload_path, save_uploads
from rag.retrieval.fusion import RRF_K, Ranking, fuse, hybrid, lexical_weight
from rag.text import sentence_spans, split_sentences


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


def test_chunker_sentences_join_back_and_end_where_cited_sentences_do() -> None:
    text = "  Première phrase. Deuxième ? « Troisième ! » dit-il. Fin  "
    pieces = split_sentences(text)
    assert "".join(pieces) == text
    ends = [len("".join(pieces[: i + 1]).rstrip()) for i in range(len(pieces))]
    assert ends == [end for _, end in sentence_spans(text)]
    assert split_sentences("") == []


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


def test_too_large_names_the_limit_and_spares_files_within_it() -> None:
    assert too_large(MB, 1) is None
    assert too_large(10 * MB, 0) is None  # 0 = no limit
    assert too_large(int(2.5 * MB), 1) == "too large (2.5 MB > 1 MB limit, RAG_MAX_FILE_MB)"


def test_save_uploads_writes_good_files_and_names_the_refused_ones(tmp_path: Path) -> None:
    uploads = [("../a.txt", b"bonjour"), ("b.exe", b"MZ"), ("big.md", b"x" * (MB + 1))]
    saved, failed = save_uploads(tmp_path / "up", uploads, max_file_mb=1)
    assert saved == [tmp_path / "up" / "a.txt"]
    assert saved[0].read_bytes() == b"bonjour"
    assert [f.path for f in failed] == ["b.exe", "big.md"]
    assert failed[0].reason.startswith("unsupported file type")
    assert failed[1].reason.startswith("too large")
    assert not list((tmp_path / "up").glob(".*.part"))


def test_read_text_falls_back_to_latin1_and_refuses_binary(tmp_path: Path) -> None:
    latin = tmp_path / "l.txt"
    latin.write_bytes("été".encode("latin-1"))
    assert read_text(latin) == Decoded("été", "latin-1")
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"a\x00b")
    with pytest.raises(FormatError, match="binary"):
        read_text(binary)


def _is_stop(word: str) -> bool:
    return word in {"does", "did", "are", "la", "le", "a", "t", "elle", "sont", "ont", "the"}


@pytest.mark.parametrize(
    ("question", "wanted"),
    [
        ("How many drones per month does the Yelabuga plant produce?", Asked("number", "drones")),
        ("How many North Korean specialists are in Kursk?", Asked("number", "specialists")),
        ("Combien de soldats nord-coréens combattent ?", Asked("number", "soldats")),
        ("Combien d'ouvriers russes travaillent là ?", Asked("number", "ouvriers")),
        ("Combien de temps dure le chantier ?", Asked("number")),
        ("What share of the vote did the list win?", Asked("number")),
        ("Quand les spécialistes sont-ils arrivés ?", Asked("date")),
        ("In which year was the agreement signed?", Asked("date")),
        ("Who runs the Yelabuga plant?", Asked(None)),
    ],
)
def test_the_answer_type_a_question_asks_for(question: str, wanted: Asked) -> None:
    assert expected(question, _is_stop) == wanted


def test_a_sentence_supports_a_count_only_with_a_number_of_the_counted_thing() -> None:
    def same(a: str, b: str) -> float:
        return float(a == b)

    drones = Asked("number", "drones")
    yelabuga = (
        "À Yelabuga, où sont fabriqués des drones, le personnel passera d'environ un millier "
        "à près de quarante mille employés."
    )
    assert support(drones, yelabuga, same) == 0.0, "the numbers count employees"
    assert support(drones, "L'usine produit 300 drones par mois.", same) == 1.0
    assert support(Asked("number"), "Il n'y a pas de chiffre ici.", same) == 0.0
    assert support(Asked("number"), "La liste a remporté 41,2 % des voix.", same) == 1.0
    assert support(Asked("date"), "Ils sont actuellement à Kursk.", same) == 0.0
    assert support(Asked("date"), "Ils sont arrivés en mars.", same) == 1.0
    assert support(Asked(None), "Rien de particulier.", same) == 1.0
