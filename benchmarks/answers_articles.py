"""The answer decision when the corpus is one article: each PIAF article as its own index.

A user's folder is often a few documents on one subject, where every passage is on the
question's topic. PIAF can stand for that at scale: the passages of one Wikipedia article
(those with at least ``MIN_PASSAGES``: 92 articles, 456 French dev questions and their 456
English versions) are indexed alone, and each question is asked as is and as a near-miss
(the passages holding a gold answer taken out, ``rag.evaluate.AnswerEvaluation``), at the
product's operating point. The hand-written narrow corpora (``benchmarks.answers_narrow``)
ask near-misses about another entity of the same sentence; here the answer's passage is
gone, so the two measure different difficulties (docs/answer-decision.md).

Usage: python -m benchmarks.answers_articles [--tag T]
    (indexes under benchmarks/out/articles-data, about 3 minutes; outcomes saved to
    benchmarks/out/answers-T-articles.jsonl)
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import defaultdict

from benchmarks.answers import questions, save
from benchmarks.common import OUT, PASSAGES
from rag.config import Settings
from rag.evaluate import AnswerEvaluation, Outcome, answer_metrics, eval_service, read_jsonl

# An article of one or two passages leaves nothing on its topic once the answer is removed.
MIN_PASSAGES = 3


def articles() -> list[tuple[str, list[dict], list[dict]]]:
    """(title, passages, questions) of each article with MIN_PASSAGES and a dev question."""
    passages = read_jsonl(PASSAGES)
    by_title: dict[str, list[dict]] = defaultdict(list)
    for row in passages:
        by_title[row["title"]].append(row)
    title_of = {row["passage_id"]: row["title"] for row in passages}
    asked: dict[str, list[dict]] = defaultdict(list)
    for row in questions():
        asked[title_of[row["passage_id"]]].append(row)
    return [
        (title, by_title[title], asked[title])
        for title in sorted(asked)
        if len(by_title[title]) >= MIN_PASSAGES
    ]


def collect(tag: str) -> list[Outcome]:
    """Every article indexed alone (its own collection), every question asked both ways."""
    folder = OUT / "articles"
    folder.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=OUT / "articles-data", llm_model=None)
    outcomes: list[Outcome] = []
    for title, passages, asked in articles():
        path = folder / f"{hashlib.sha256(title.encode()).hexdigest()[:12]}.jsonl"
        path.write_text(
            "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in passages), encoding="utf-8"
        )
        service = eval_service(settings, path)
        service.every_feature = True
        outcomes += AnswerEvaluation(service, path).run(asked, [])
    print(f"{len(outcomes)} outcomes -> {save(f'{tag}-articles', outcomes)}")
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="current")
    outcomes = collect(parser.parse_args().tag)
    print("| language | questions | answered | near-miss answered | answer-bearing | AUC |")
    print("|---|---|---|---|---|---|")
    for lang in ("fr", "en"):
        f = answer_metrics([o for o in outcomes if o.lang == lang])
        print(
            f"| {lang} | {f['n']} | {f['answered']:.3f} | {f['near_miss_answered']:.3f} "
            f"| {f['answer_bearing']:.3f} | {f['auc']:.3f} |"
        )


if __name__ == "__main__":
    main()
