"""``rag eval --json`` end to end on a small PIAF subset: retrieval figures always, the
answer-level figures (docs/answer-decision.md) unless ``--retrieval-only``.

Scripts read these keys, so their presence and range are a contract; their values are
measured by ``benchmarks/answers.py`` on the full set, not here.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from rag import cli
from tests.conftest import PIAF, ROOT, piaf_passages

ANSWER_KEYS = ("answered", "answer_bearing", "near_miss_answered", "off_corpus_answered", "auc")
OFF_CORPUS = ROOT / "benchmarks" / "data" / "off_corpus_questions.jsonl"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


@pytest.fixture
def eval_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """40 passages, 8 questions on them (6 French, the 2 English ones), 3 off-corpus."""
    passages = piaf_passages(40)
    ids = {p["passage_id"] for p in passages}

    def on_subset(name: str, n: int) -> list[dict]:
        return [r for r in _jsonl(PIAF / name) if r["passage_id"] in ids][:n]

    questions = on_subset("questions_dev.jsonl", 6) + on_subset("questions_dev_en.jsonl", 2)
    assert len(questions) == 8
    return (
        _write(tmp_path / "passages.jsonl", passages),
        _write(tmp_path / "questions.jsonl", questions),
        _write(tmp_path / "off.jsonl", _jsonl(OFF_CORPUS)[:3]),
    )


def _eval_json(tmp_path: Path, monkeypatch, capsys, *args: str) -> dict:
    """Run ``rag eval --json`` in-process on an isolated data dir; its one JSON object."""
    for name in [n for n in os.environ if n.startswith(("RAG_", "OPENAI_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    cli.get_settings.cache_clear()
    try:
        status = cli.main(["eval", "--json", *args])
    finally:
        cli.get_settings.cache_clear()
    out, err = capsys.readouterr()
    assert status == 0, err
    return json.loads(out)


def test_eval_json_has_answer_level_figures(
    tmp_path: Path, monkeypatch, capsys, eval_files: tuple[Path, Path, Path]
) -> None:
    passages, questions, off = eval_files
    common = ("--passages", str(passages), "--questions", str(questions))
    full = _eval_json(tmp_path, monkeypatch, capsys, *common, "--off-corpus", str(off))
    assert full["n"] == 8 and 0.0 <= full["recall@5"] <= 1.0
    for key in ANSWER_KEYS:
        value = full[key]
        assert isinstance(value, float) and not math.isnan(value), (key, value)
        assert 0.0 <= value <= 1.0, (key, value)

    # Same data dir: the index is reused, and only the retrieval figures are computed.
    retrieval = _eval_json(tmp_path, monkeypatch, capsys, *common, "--retrieval-only")
    assert not set(ANSWER_KEYS) & set(retrieval)
    assert retrieval == {k: v for k, v in full.items() if k not in ANSWER_KEYS}
