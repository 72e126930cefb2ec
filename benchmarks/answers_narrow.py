"""The answer decision on corpora unlike PIAF: the seed article and two narrow corpora.

The confidence is the answer verifier's probability (``rag.answering.verifier``), its
threshold chosen on PIAF dev questions and the narrow dev corpus (``benchmarks/answers.py
fit``); this checks that the same threshold holds on a one-article corpus and on short
invented news articles (``benchmarks/data/README.md``): direct questions answered with a
citation on the right line, near-miss questions refused. Each failure is listed with its
confidence. Beside it: the AUC of the previous decision (the 26-feature model's score,
``judge``) and how many near-misses it refused at its own threshold, on the same index.

Of the three sets only ``heldout`` was never looked at while designing or fitting: the
narrow corpus is in the threshold choice and its sentences in the verifier's templated
training questions, and the seed article's questions shaped the previous features
(occlusion, the answer type). Its figures are the honest estimate of how the decision
does on a user's small news corpus.

Usage: python -m benchmarks.answers_narrow  (indexes under benchmarks/out/narrow-data)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from benchmarks.common import OUT, ROOT
from rag.answering.decision import Decision, default_model
from rag.answering.extractive import Answer, Evidence
from rag.config import Settings
from rag.evaluate import auc, read_jsonl
from rag.service import RagService

DATA = ROOT / "benchmarks" / "data"
SETS = {
    "narrow": (DATA / "narrow", DATA / "narrow_questions.jsonl"),
    "heldout": (DATA / "narrow_heldout", DATA / "narrow_heldout_questions.jsonl"),
    "seed": (ROOT / "seeds", ROOT / "tests" / "data" / "seed_questions.jsonl"),
}


def on_target(answer: Answer, row: dict) -> bool:
    """Whether a citation is on the expected line (and in the expected file, when named)."""
    return any(
        c.line == row["line"] and ("file" not in row or Path(c.source).name == row["file"])
        for c in answer.citations
    )


def describe(answer: Answer) -> str:
    cited = "; ".join(f"{Path(c.source).name}:{c.line} “{c.quote[:70]}”" for c in answer.citations)
    return cited or "nothing cited"


def indexed(name: str, corpus: Path, score: str | None = None) -> RagService:
    """A service over ``corpus`` in its own data dir under benchmarks/out, ingested (with
    ``score``, that one decides instead of the settings' choice)."""
    settings = Settings(data_dir=OUT / f"{name}-data", llm_model=None)
    if score:
        settings = settings.model_copy(update={"answer_score": score})
    service = RagService(settings)
    service.every_feature = True
    service.ingest([corpus], show_progress=False)
    return service


def asked(name: str, score: str | None = None) -> Iterator[tuple[dict, Evidence]]:
    """Each question of set ``name`` with what the product finds for it in the set's index."""
    corpus, questions = SETS[name]
    service = indexed(name, corpus, score)
    for row in read_jsonl(questions):
        yield row, service.evidence(row["question"])


# Signals whose AUC (direct against near-miss) is printed beside the confidence's, each
# oriented so that higher means "answers": the previous release's evidence score, the best
# sentence's cosine, its term alignment and its occlusion (negated: a gain means a miss).
SIGNALS = {
    "judge": lambda f: f["judge"],
    "evidence": lambda f: f["evidence"],
    "cos": lambda f: f["cos"],
    "align": lambda f: f["align"],
    "occlusion": lambda f: -f["occlusion"],
}


def check(name: str) -> None:
    """Ask every question of its own index and print the rates, the AUCs and the failures."""
    direct = answered = right = near = refused = before = 0
    before_threshold = default_model().threshold
    failures = []
    scores: dict[str, dict[str, list[float]]] = {"direct": {}, "near_miss": {}}
    for row, found in asked(name):
        answer, features = found.extractive, found.judgement.features
        mine = scores[row["kind"]]
        mine.setdefault("confidence", []).append(answer.confidence or 0.0)
        for signal, value in SIGNALS.items():
            mine.setdefault(signal, []).append(value(features) if features else 0.0)
        if row["kind"] == "direct":
            direct += 1
            answered += not answer.abstained
            ok = not answer.abstained and on_target(answer, row)
            right += ok
        else:
            near += 1
            ok = answer.abstained
            refused += ok
            before += bool(features) and features["judge"] < before_threshold
        if not ok:
            failures.append((row, answer))
    aucs = ", ".join(
        f"{k} {auc(v, scores['near_miss'][k]):.3f}" for k, v in scores["direct"].items()
    )
    print(
        f"{name}: direct answered {answered}/{direct}, on the right line {right}/{direct}; "
        f"near-miss refused {refused}/{near} (previous decision {before}/{near}); AUC {aucs}"
    )
    for row, answer in failures:
        verdict = "refused" if answer.abstained else describe(answer)
        print(
            f"  {row['id']} ({row['kind']}, conf {answer.confidence}, line {row.get('line', '-')})"
            f" {row['question']!r} -> {verdict}"
        )


def main() -> None:
    decision = Decision.resolve(Settings(llm_model=None))
    print(f"operating point: answer at confidence >= {decision.threshold}, gate {decision.gate}")
    for name in SETS:
        check(name)


if __name__ == "__main__":
    main()
