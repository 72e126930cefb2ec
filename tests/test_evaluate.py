"""Answer-level evaluation: near-miss exclusion in the retriever, ``rag eval`` figures."""

from __future__ import annotations

import json
from pathlib import Path

from rag.service import RagService
from tests.conftest import PIAF, piaf_passages, run_cli


def test_excluded_chunks_are_never_retrieved(seed_service: RagService) -> None:
    retriever = seed_service.retriever()
    question = "How many North Korean specialists are currently in the Kursk region?"
    first = retriever.search(question)
    hidden = {first.nodes[0].node.node_id}
    again = retriever.search(question, exclude=hidden)
    assert hidden.isdisjoint(n.node.node_id for n in again.nodes)
    assert hidden.isdisjoint(s.chunk_id for s in again.sentences)
    assert "plus de mille spécialistes" not in " ".join(s.text for s in again.sentences)


def _small_piaf(folder: Path) -> tuple[Path, Path, Path]:
    """Three dev questions, their passages and five others, and two off-corpus questions."""
    with (PIAF / "questions_dev.jsonl").open(encoding="utf-8") as fh:
        questions = [json.loads(line) for _, line in zip(range(3), fh)]
    wanted = {q["passage_id"] for q in questions}
    rows = [p for p in _all_passages() if p["passage_id"] in wanted] + piaf_passages(5)
    files = folder / "passages.jsonl", folder / "questions.jsonl", folder / "off.jsonl"
    off = [
        {"question": "Comment détartrer une bouilloire ?", "lang": "fr"},
        {"question": "What is the best way to store ripe avocados?", "lang": "en"},
    ]
    for path, items in zip(files, (rows, questions, off)):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items))
    return files


def _all_passages() -> list[dict]:
    with (PIAF / "passages.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_eval_json_has_answer_figures(tmp_path: Path) -> None:
    passages, questions, off = _small_piaf(tmp_path)
    args = ["eval", "--passages", str(passages), "--questions", str(questions), "--json"]
    done = run_cli(*args, "--off-corpus", str(off), data_dir=tmp_path / "data")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["n"] == 3
    for key in ("answered", "answer_bearing", "near_miss_answered", "off_corpus_answered", "auc"):
        assert 0.0 <= result[key] <= 1.0, (key, result)
    assert result["answer_bearing"] <= result["answered"]


def test_eval_names_a_missing_off_corpus_file(tmp_path: Path) -> None:
    passages, questions, _ = _small_piaf(tmp_path)
    done = run_cli(
        "eval",
        "--passages",
        str(passages),
        "--questions",
        str(questions),
        "--off-corpus",
        str(tmp_path / "nope.jsonl"),
        data_dir=tmp_path / "data",
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: no such file: {tmp_path / 'nope.jsonl'}"
