"""Answer-level figures on PIAF dev and the narrow corpora: answered, answer-bearing,
near-miss answered (wrongly), off-corpus answered (wrongly), AUC, and the trade-off curve.

- PIAF dev over the PIAF index: 600 French questions and 600 English ones
  (``questions_dev_en.jsonl`` + ``benchmarks/data/piaf_dev_en_more.jsonl``), each asked as is
  and as a near-miss (every chunk whose text contains a gold answer left out of retrieval,
  ``rag.evaluate.GoldChunks``), plus the 100 off-corpus questions of ``benchmarks/data``.
- Narrow: the seed article (``tests/data/seed_questions.jsonl``) and the six articles of
  ``benchmarks/data/narrow`` (``narrow_questions.jsonl``), each indexed on its own; a direct
  question counts as right when it is answered with a citation of its line.

Retrievals are kept in ``benchmarks/out/answer-retrievals.pkl`` (delete it after changing
retrieval), so trying another answer decision (``benchmarks/fit_confidence.py``) does not
search again.

Usage: python -m benchmarks.answers [--threshold T] [--plot]
"""

from __future__ import annotations

import argparse
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import OFF_CORPUS, OUT, PASSAGES, QUESTIONS, ROOT, bench_settings
from rag.answer import (
    DEFAULT_ABSTAIN_THRESHOLD,
    FOLLOWER_MARGIN,
    MAX_SENTENCES,
    NO_ANSWER,
    Answer,
    cite,
    extractive_answer,
    rank_sentences,
)
from rag.evaluate import GoldChunks, auc, bears, eval_service, read_jsonl
from rag.retrieve import Retrieval
from rag.service import RagService

EN_MORE = ROOT / "benchmarks" / "data" / "piaf_dev_en_more.jsonl"
OFF_MORE = ROOT / "benchmarks" / "data" / "off_corpus_more.jsonl"
SEED_QUESTIONS = ROOT / "tests" / "data" / "seed_questions.jsonl"
SEED = ROOT / "seeds"
NARROW = ROOT / "benchmarks" / "data" / "narrow"
NARROW_QUESTIONS = ROOT / "benchmarks" / "data" / "narrow_questions.jsonl"
CACHE = OUT / "answer-retrievals.pkl"
PLOT = ROOT / "docs" / "answer_tradeoff.png"


@dataclass
class Case:
    """One question as asked of one index: what it retrieved and what a right answer is."""

    corpus: str  # "piaf", "seed", "narrow"
    lang: str
    kind: str  # "direct", "near_miss", "off_corpus"
    question: str
    retrieval: Retrieval
    answers: list[str] = field(default_factory=list)  # PIAF gold spans
    line: int | None = None  # narrow corpora: the line that answers it
    group: str = ""  # the PIAF question id (its French, English and near-miss versions)


def piaf_cases(service: RagService) -> list[Case]:
    retriever = service.retriever()
    gold = GoldChunks(retriever)
    sets = {
        "fr": read_jsonl(QUESTIONS["fr"]),
        "en": read_jsonl(QUESTIONS["en"]) + read_jsonl(EN_MORE),
    }
    cases = []
    for lang, rows in sets.items():
        for row in rows:
            q, answers, group = row["question"], row["answers"], row["id"].removesuffix("-en")
            cases.append(Case("piaf", lang, "direct", q, retriever.search(q), answers, None, group))
            hidden = retriever.search(q, exclude=gold.holding(answers))
            cases.append(Case("piaf", lang, "near_miss", q, hidden, answers, None, group))
    for row in read_jsonl(OFF_CORPUS) + read_jsonl(OFF_MORE):
        q = row["question"]
        cases.append(Case("piaf", row["lang"], "off_corpus", q, retriever.search(q)))
    return cases


def narrow_service(name: str) -> RagService:
    """The seed article or the narrow corpus, each in its own collection."""
    settings = bench_settings()
    return RagService(settings.model_copy(update={"data_dir": settings.data_dir / "narrow"}), name)


def narrow_cases(name: str, corpus: Path, questions: Path) -> list[Case]:
    service = narrow_service(name)
    service.ingest([corpus], show_progress=False)
    retriever = service.retriever()
    return [
        Case(
            name,
            row["lang"],
            row["kind"],
            row["question"],
            retriever.search(row["question"]),
            line=row.get("line"),
            group=row["id"],
        )
        for row in read_jsonl(questions)
    ]


def load_cases() -> tuple[list[Case], dict[str, RagService]]:
    """Every case (from the cache when there is one) and the services that answer them."""
    services = {
        "piaf": eval_service(bench_settings(), PASSAGES),
        "seed": narrow_service("seed"),
        "narrow": narrow_service("narrow"),
    }
    if CACHE.exists():
        return pickle.loads(CACHE.read_bytes()), services
    cases = piaf_cases(services["piaf"])
    cases += narrow_cases("seed", SEED, SEED_QUESTIONS)
    cases += narrow_cases("narrow", NARROW, NARROW_QUESTIONS)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.write_bytes(pickle.dumps(cases))
    return cases, services


def right(case: Case, answer: Answer) -> bool:
    """A direct question answered with the gold answer (PIAF) or its line (narrow)."""
    if case.line is not None:
        return not answer.abstained and any(c.line == case.line for c in answer.citations)
    return bears(answer, case.answers)


def answer_all(cases: list[Case], services: dict[str, RagService], threshold: float | None):
    """(case, answer) for every case, answered by the product's answer step."""
    idf = {name: s.lexical().idf for name, s in services.items()}
    token_states = services["piaf"].token_encoder.token_states
    kwargs = {} if threshold is None else {"threshold": threshold}
    return [
        (c, extractive_answer(c.question, c.retrieval, idf[c.corpus], token_states, **kwargs))
        for c in cases
    ]


# The decision before the calibrated confidence: the best sentence's evidence score
# (cosine + 0.1 x lexical share) against one threshold.
OLD_THRESHOLD = 0.85


def answer_before(cases: list[Case], services: dict[str, RagService]):
    """(case, answer) as the product answered before: same retrieval, same quotes rule."""
    idf = {name: s.lexical().idf for name, s in services.items()}
    out = []
    for case in cases:
        ranked = rank_sentences(case.question, case.retrieval, idf[case.corpus])
        evidence = ranked[0].score if ranked else 0.0
        chosen = [s for s in ranked[:MAX_SENTENCES] if s.score >= evidence - FOLLOWER_MARGIN]
        citations = cite(chosen, case.retrieval) if evidence >= OLD_THRESHOLD else []
        text = "answered" if citations else NO_ANSWER
        out.append((case, Answer(text, not citations, citations, confidence=evidence)))
    return out


def curve(results, lang: str) -> tuple[np.ndarray, np.ndarray]:
    """(near-miss answered, answered) over every threshold of the answers' confidence."""
    direct = np.asarray(
        [a.confidence for c, a in results if (c.corpus, c.lang, c.kind) == ("piaf", lang, "direct")]
    )
    near = np.asarray(
        [
            a.confidence
            for c, a in results
            if (c.corpus, c.lang, c.kind) == ("piaf", lang, "near_miss")
        ]
    )
    cuts = np.unique(np.r_[direct, near, np.inf])
    return (near[None, :] >= cuts[:, None]).mean(1), (direct[None, :] >= cuts[:, None]).mean(1)


def plot(before, after, threshold: float) -> None:
    """The trade-off curves, before and after, each language, default points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for lang, colour in (("fr", "tab:blue"), ("en", "tab:orange")):
        for label, results, style, at in (
            ("evidence score (before)", before, ":", OLD_THRESHOLD),
            ("confidence (after)", after, "-", threshold),
        ):
            x, y = curve(results, lang)
            ax.plot(x, y, style, color=colour, label=f"{lang.upper()}: {label}")
            pick = [(c, a) for c, a in results if (c.corpus, c.lang) == ("piaf", lang)]
            px = np.mean([a.confidence >= at for c, a in pick if c.kind == "near_miss"])
            py = np.mean([a.confidence >= at for c, a in pick if c.kind == "direct"])
            ax.plot([px], [py], "o", color=colour, fillstyle="none" if style == ":" else "full")
    ax.set_xlabel("near-miss questions answered (wrongly)")
    ax.set_ylabel("PIAF dev questions answered")
    ax.set_title("Answer decision trade-off, PIAF dev (dots: default thresholds)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT)


def table(results) -> None:
    print(
        "| corpus | questions | n | answered | answer-bearing / right line "
        "| near-miss answered | off-corpus answered | AUC |"
    )
    print("|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list] = {}
    for case, answer in results:
        lang = case.lang if case.kind != "off_corpus" else "off"
        groups.setdefault((case.corpus, lang), []).append((case, answer))
    for (corpus, lang), items in sorted(groups.items()):
        direct = [(c, a) for c, a in items if c.kind == "direct"]
        near = [(c, a) for c, a in items if c.kind == "near_miss"]
        off = [(c, a) for c, a in items if c.kind == "off_corpus"]
        cells = [
            f"{np.mean([not a.abstained for _, a in direct]):.3f}" if direct else "",
            f"{np.mean([right(c, a) for c, a in direct]):.3f}" if direct else "",
            f"{np.mean([not a.abstained for _, a in near]):.3f}" if near else "",
            f"{np.mean([not a.abstained for _, a in off]):.3f}" if off else "",
            f"{auc([a.confidence for _, a in direct], [a.confidence for _, a in near]):.3f}"
            if direct and near
            else "",
        ]
        n = len(direct) or len(off)
        print(f"| {corpus} | {lang} | {n} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--plot", action="store_true", help=f"write {PLOT.relative_to(ROOT)}")
    args = parser.parse_args()
    cases, services = load_cases()
    before = answer_before(cases, services)
    after = answer_all(cases, services, args.threshold)
    print(f"Before: evidence score >= {OLD_THRESHOLD}")
    table(before)
    print(f"\nAfter: confidence >= {args.threshold or DEFAULT_ABSTAIN_THRESHOLD}")
    table(after)
    if args.plot:
        plot(before, after, args.threshold or DEFAULT_ABSTAIN_THRESHOLD)


if __name__ == "__main__":
    main()
