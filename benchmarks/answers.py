"""Answer-level evaluation and the answer decision's operating point (docs/verifier.md).

    python -m benchmarks.answers collect [--tag T] [--part dev|held] [--every K]  # ask, save
    python -m benchmarks.answers collect-narrow      # the narrow dev corpus
    python -m benchmarks.answers fit [--tag T]       # combined model, thresholds, the choice
    python -m benchmarks.answers judge [--tag T]     # the previous feature model's fit
    python -m benchmarks.answers report [--tag T] [--plot PNG]  # before/after, the curve
    python -m benchmarks.answers_narrow              # seed article and narrow corpora check
    python -m benchmarks.answers_articles            # each PIAF article as its own corpus

``collect`` asks PIAF dev questions (French, and their English translations: the 33 of
``questions_dev_en.jsonl`` and the 567 of ``benchmarks/data/piaf_dev_en_more.jsonl``) of
the PIAF index, each as is and as a near-miss (``rag.evaluate.AnswerEvaluation``), and the
100 off-corpus questions, at a threshold of 0 (so every answer's quotes are recorded), and
saves every outcome with its scores to ``benchmarks/out/answers-TAG.jsonl``. It asks only
the questions the figures use: the held-out half (fold 1 of ``fold_of``, whose questions
and passages the verifier never trained on) and the calibration questions of fold 0
(``training.data.is_calibration``: kept out of training).

``fit`` prints the dev answer-bearing rate per language (``print_bearing``), fits the
combined model (``COMBINED``) and chooses each score's operating point on dev only (fold 0's
calibration questions, fold 0's off-corpus questions): the highest threshold at which it
answers at least 95 % of the French and 93 % of the English direct questions; it prints the
held-out half's and the narrow dev corpus's figures at that threshold and writes
``rag/answering/decision.json``. ``judge`` is the previous decision's fit (a logistic model
over the judge's features, cross-fitted on halves), kept to measure it on the same outcomes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import zlib
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from benchmarks.answers_narrow import asked, on_target
from benchmarks.common import OUT, PASSAGES, PIAF, ROOT, bench_settings
from rag.answering.decision import DECISION_FILE, MODEL_FILE
from rag.evaluate import AnswerEvaluation, Outcome, answer_metrics, auc, eval_service, read_jsonl
from training.data import is_calibration

DATA = ROOT / "benchmarks" / "data"
EN_MORE = DATA / "piaf_dev_en_more.jsonl"
OFF_FILES = [DATA / "off_corpus_questions.jsonl", DATA / "off_corpus_more.jsonl"]
TARGETS = {"fr": 0.95, "en": 0.93}
# Off-corpus questions are 100 against 1,200 near-misses; this weight makes them count as
# much as 400, since refusing them is the product's first promise.
OFF_WEIGHT = 4.0
# French near-misses count 1.2 each. With one threshold, the language that reaches its
# answered target last sets it: English, so French was answered 96 % and its near-misses
# 56 % (held out). Weighting them moves the two languages' scores until both targets bind
# together (held out on four collections, t1 / t7 / t8 / final5: FR near-miss 0.550-0.557 at
# weight 1, 0.530-0.538 at 1.1, 0.517-0.525 at 1.2 with FR answered 95.0 % and EN
# near-miss 0.615-0.632; 1.4 pushes EN near-miss to 0.643-0.662 and off-corpus up; on six
# other halvings of t1, ``fit --splits 6``: FR near-miss 0.515-0.542, unweighted 0.540-0.568).
FRENCH_NEAR_MISS_WEIGHT = 1.2
L2 = 1.0
# The LLM is asked unless the confidence is below what this share of answerable questions
# score: only questions with nothing relevant at all are refused without it.
GATE_QUANTILE = 0.02
# Each narrow-corpus question counts twice: 42 questions against 2,500 PIAF outcomes, they
# are the only ones from a corpus of a few articles (measured: weight 2 to 10 gave the same
# seed-article results, 2 kept PIAF's figures closest to a PIAF-only fit).
NARROW_WEIGHT = 2.0
# The combined decision's features: the verifier's logit for its best sentence and the
# judge's signals of that sentence that depend on the question and the sentence only
# (``Judge._independent``: no idf, no corpus size), the question's language, and the best
# chunk's cosine (``dense_top``: no corpus statistics; an unrelated document could move it
# only by being closer to the question than every chunk of the corpus). Chosen on dev by
# 5-fold cross-validation over the dev questions (docs/verifier.md).
INDEPENDENT = (
    "verifier_logit",
    "best_cos",
    "best_align",
    "best_worst",
    "best_chunk_align",
    "best_name_miss",
    "best_type_miss",
    "best_occlusion",
)
COMBINED = (*INDEPENDENT, "french", "dense_top")
# The scores ``fit`` may ship: those whose confidence does not depend on the rest of the
# corpus (the stability test of tests/integration/test_verifier.py). The feature model
# ("judge") reads idf and the corpus's size, and its dev figures are in-sample (it was fitted
# on all of PIAF dev); its cost is printed beside them, not chosen (docs/verifier.md).
SHIPPABLE = ("verifier", "combined")
# Features recorded for the report (the previous release's evidence score, the other
# decisions' scores and inputs), not fitted into the feature model.
REPORT_ONLY = {"evidence", "judge", "verifier", "combined", *INDEPENDENT}
HEADER = (
    "| threshold | FR answered | FR near-miss answered | EN answered | EN near-miss answered "
    "| off-corpus answered |"
)
# The previous release's decision: evidence >= 0.85.
BEFORE_THRESHOLD = 0.85


def questions() -> list[dict]:
    """The held-out half and fold 0's calibration questions (module docstring)."""
    fr = [{**r, "lang": "fr"} for r in read_jsonl(PIAF / "questions_dev.jsonl")]
    en = read_jsonl(PIAF / "questions_dev_en.jsonl") + read_jsonl(EN_MORE)
    rows = fr + [{**r, "lang": "en"} for r in en]
    return [r for r in rows if is_dev(r["id"]) or _fold(r["id"]) == 1]


def _fold(question_id: str) -> int:
    return zlib.crc32(question_id.removesuffix("-en").encode()) % 2


def is_dev(question_id: str, kind: str = "direct") -> bool:
    """Fold 0's off-corpus questions and its questions kept out of the verifier's training."""
    if kind == "off_corpus":
        return _fold(question_id) == 0
    return _fold(question_id) == 0 and is_calibration(question_id)


def sampled(question_id: str, every: int) -> bool:
    """One question in ``every`` (by the hash bits above the fold's; a question and its
    translation together), for a quicker collection on a busy machine."""
    return zlib.crc32(question_id.removesuffix("-en").encode()) // 2 % every == 0


def off_corpus() -> list[dict]:
    return [
        {**r, "id": f"{path.stem}-{n}"}
        for path in OFF_FILES
        for n, r in enumerate(read_jsonl(path))
    ]


def collect(tag: str, part: str, every: int = 1) -> Path:
    """Outcomes of the dev questions (``part`` "dev") or of the held-out half ("held"),
    saved as ``answers-TAG-PART.jsonl`` (``fit`` chooses on the first, reports the second);
    with ``every`` > 1, one PIAF question in ``every`` of them (``sampled``; the 100
    off-corpus questions are cheap and few, so all of the part's are asked)."""
    tiny = {"abstain_threshold": 1e-6, "llm_gate": 1e-6, "answer_score": "verifier"}
    settings = bench_settings().model_copy(update=tiny)
    service = eval_service(settings, PASSAGES)
    service.every_feature = True
    dev = part == "dev"
    rows = [r for r in questions() if is_dev(r["id"]) == dev and sampled(r["id"], every)]
    off = [r for r in off_corpus() if is_dev(r["id"], "off_corpus") == dev]
    outcomes = AnswerEvaluation(service, PASSAGES).run(rows, off)
    path = save(f"{tag}-{part}", outcomes)
    print(f"{len(outcomes)} outcomes -> {path}")
    return path


def collect_narrow(tag: str) -> Path:
    """The narrow corpus's direct and near-miss questions (a dev set fitted with PIAF: it
    is what tells the model how a corpus of a few articles behaves); ``bearing`` here means
    a citation on the expected line."""
    outcomes = []
    for row, found in asked("narrow", "verifier"):
        answer = found.extractive
        outcomes.append(
            Outcome(
                row["id"],
                row["lang"],
                row["kind"],
                not answer.abstained,
                row["kind"] == "direct" and not answer.abstained and on_target(answer, row),
                float(answer.confidence or 0.0),
                found.judgement.features,
            )
        )
    path = save(f"{tag}-narrow", outcomes)
    print(f"{len(outcomes)} narrow-corpus outcomes -> {path}")
    return path


def save(tag: str, outcomes: list[Outcome]) -> Path:
    """Write outcomes where ``load(tag)`` reads them."""
    path = OUT / f"answers-{tag}.jsonl"
    path.write_text("".join(json.dumps(asdict(o)) + "\n" for o in outcomes), encoding="utf-8")
    return path


def load(tag: str) -> list[Outcome]:
    return [Outcome(**json.loads(line)) for line in (OUT / f"answers-{tag}.jsonl").open()]


def fold_of(o: Outcome, split: int = 0) -> int:
    """The half an outcome falls in: the split docs/answer-decision.md reports (0) or another.

    Off-corpus questions are split one by one: split whole, their two files hashed to the
    same half, and the model scoring them had never seen one. The other splits hash with
    BLAKE2: a salted CRC's low bit is linear in the input, so its "other" splits repeat.
    """
    key = o.id.removesuffix("-en")
    if split == 0:
        return zlib.crc32(key.encode()) % 2
    return hashlib.blake2b(f"{split}:{key}".encode(), digest_size=1).digest()[0] % 2


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted L2 logistic regression by Newton's method; x has a constant column last."""
    beta = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], L2)
    penalty[-1] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(x @ beta)))
        grad = x.T @ (w * (p - y)) + penalty * beta
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta


def design(outcomes: list[Outcome], names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray([[o.features[n] for n in names] for o in outcomes], dtype=float)
    y = np.asarray([o.kind == "direct" for o in outcomes], dtype=float)
    w = np.asarray([weight(o) for o in outcomes])
    return x, y, w


def weight(o: Outcome) -> float:
    """How much one outcome counts in the fit (OFF_WEIGHT, FRENCH_NEAR_MISS_WEIGHT)."""
    if o.kind == "off_corpus":
        return OFF_WEIGHT
    return FRENCH_NEAR_MISS_WEIGHT if o.kind == "near_miss" and o.lang == "fr" else 1.0


def model(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, beta) of a model fitted on standardised features."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    return mean, scale, fit_logistic(z, y, w)


def predict(m: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    mean, scale, beta = m
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    return 1.0 / (1.0 + np.exp(-(z @ beta)))


def operating_point(outcomes: list[Outcome], scores: np.ndarray) -> float:
    """The highest threshold answering at least TARGETS of each language's direct questions."""
    limits = []
    for lang, target in TARGETS.items():
        mine = np.sort(
            [s for o, s in zip(outcomes, scores) if o.kind == "direct" and o.lang == lang]
        )
        limits.append(float(mine[int(np.floor((1 - target) * len(mine)))]))
    return min(limits)


def cross_scores(
    outcomes: list[Outcome],
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    narrow: tuple[np.ndarray, np.ndarray, np.ndarray],
    split: int = 0,
) -> np.ndarray:
    """Each outcome scored by the model fitted on the other half (plus the narrow corpus)."""
    (x, y, w), (xn, yn, wn) = data, narrow
    folds = np.asarray([fold_of(o, split) for o in outcomes])
    scores = np.zeros(len(outcomes))
    for k in (0, 1):
        train = folds != k
        fitted = model(
            np.vstack([x[train], xn]),
            np.concatenate([y[train], yn]),
            np.concatenate([w[train], wn]),
        )
        scores[folds == k] = predict(fitted, x[folds == k])
    return scores


def fit(tag: str) -> None:
    """Each score's operating point chosen on dev, the held-out half's figures at it, and
    the shippable score (``SHIPPABLE``) that measures best on dev (fewest near-miss and
    off-corpus questions answered at the answered targets, plus the narrow dev corpus's
    near-misses answered when ``collect-narrow`` saved them) written to DECISION_FILE with its
    threshold and gate.

    The combined model (``COMBINED``) is fitted on the dev outcomes first; its dev figures
    are in-sample, its held-out and narrow figures are not."""
    dev = load(f"{tag}-dev")
    held = load(f"{tag}-held") if (OUT / f"answers-{tag}-held.jsonl").exists() else []
    narrow = load(f"{tag}-narrow") if (OUT / f"answers-{tag}-narrow.jsonl").exists() else []
    combined = model(*design(dev, list(COMBINED)))
    print_bearing(dev)
    chosen: dict[str, tuple[float, float, float]] = {}
    for key in ("verifier", "judge", "combined"):
        scores = score_of(dev, key, combined)
        threshold = operating_point(dev, scores)
        direct = [s for o, s in zip(dev, scores) if o.kind == "direct"]
        gate = float(np.quantile(direct, GATE_QUANTILE))
        r = rates(dev, scores, threshold)
        cost = r["fr_near"] + r["en_near"] + r["off"]
        print(f"{key} on dev ({len(dev)} outcomes): threshold {threshold:.3f}, gate {gate:.3f}")
        print_table(dev, scores, threshold)
        held_figures(dev, scores, threshold, key)
        for name, rows in (("held-out half", held), ("narrow dev corpus", narrow)):
            if rows:
                print(f"{key} on the {name} ({len(rows)} outcomes)")
                held_figures(rows, score_of(rows, key, combined), threshold, key)
        if narrow:
            near = [s >= threshold for o, s in zip(narrow, score_of(narrow, key, combined))]
            cost += float(np.mean([a for o, a in zip(narrow, near) if o.kind == "near_miss"]))
        print(f"{key}: dev cost {cost:.3f}")
        chosen[key] = (cost, threshold, gate)
    best = min(SHIPPABLE, key=lambda k: chosen[k][0])
    write_decision(tag, best, chosen, combined, len(dev))


def print_bearing(outcomes: list[Outcome]) -> None:
    """Each language's share of direct questions whose quotes hold a gold answer, which the
    cost (what is answered) does not show. ``collect`` asks at a threshold of 0, so all the
    sentences the verifier reads are quoted: the share measures retrieval and the judge's
    ranking, not the verifier's order (docs/verifier.md, "Recipes tried")."""
    for lang in TARGETS:
        direct = [o.bearing for o in outcomes if o.kind == "direct" and o.lang == lang]
        print(f"answer-bearing {lang} (all {len(direct)} direct questions): {np.mean(direct):.3f}")


def score_of(
    outcomes: list[Outcome], key: str, combined: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    """Each outcome's score ``key``: recorded, or the combined model's prediction."""
    if key == "combined":
        return predict(combined, design(outcomes, list(COMBINED))[0])
    return np.asarray([o.features.get(key, 0.0) for o in outcomes])


def write_decision(
    tag: str,
    key: str,
    chosen: dict[str, tuple[float, float, float]],
    combined: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_dev: int,
) -> None:
    """DECISION_FILE: the shipped score ``key``, each score's operating points and the
    combined model's coefficients."""
    judge = json.loads(MODEL_FILE.read_text(encoding="utf-8"))
    fitted_on = (
        f"benchmarks/out/answers-{tag}-dev.jsonl: {n_dev} dev outcomes (fold 0 "
        "calibration questions and off-corpus questions)"
    )
    mean, scale, beta = combined
    points = {k: {"threshold": round(v[1], 3), "gate": round(v[2], 3)} for k, v in chosen.items()}
    decision = {
        "score": key,
        "verifier": {**points["verifier"], "fitted_on": fitted_on},
        "combined": {
            **points["combined"],
            "features": list(COMBINED),
            "mean": mean.round(6).tolist(),
            "scale": scale.round(6).tolist(),
            "coef": beta[:-1].round(6).tolist(),
            "intercept": round(float(beta[-1]), 6),
            "fitted_on": fitted_on,
        },
        # the feature model keeps the operating points fitted with it on all of PIAF
        "judge": {k: judge[k] for k in ("threshold", "gate", "fitted_on")},
    }
    DECISION_FILE.write_text(json.dumps(decision, indent=1) + "\n", encoding="utf-8")
    print(f"{key} measures best on dev -> {DECISION_FILE}")


def held_figures(outcomes: list[Outcome], scores: np.ndarray, threshold: float, key: str) -> None:
    """The acceptance figures of ``outcomes`` for score ``key`` at ``threshold``
    (answer-bearing: the quotes of the recorded answer, ranked as the collection did)."""
    rows = [
        replace(o, answered=bool(s >= threshold), confidence=float(s))
        for o, s in zip(outcomes, scores)
    ]
    print("| score | language | answered | near-miss answered | answer-bearing | AUC |")
    print("|---|---|---|---|---|---|")
    for lang in TARGETS:
        mine = [o for o in rows if o.lang == lang and o.kind != "off_corpus"]
        if not mine:
            continue
        f = answer_metrics(mine)
        print(
            f"| {key} | {lang} | {f['answered']:.3f} | {f['near_miss_answered']:.3f} "
            f"| {f['answer_bearing']:.3f} | {f['auc']:.3f} |"
        )
    off = [o.answered for o in rows if o.kind == "off_corpus"]
    if off:
        print(f"| {key} | off-corpus | {np.mean(off):.3f} ({len(off)}) | | | |")


def fit_judge(tag: str, without: frozenset[str] = frozenset(), splits: int = 0) -> None:
    """Held-out figures (also at the operating points of ``splits`` other random halvings),
    then the shipped model written to MODEL_FILE; with ``without`` (features left out, to
    measure what they bring) only the held-out figures."""
    outcomes = [o for o in load(f"{tag}-dev") + load(f"{tag}-held") if o.features]
    narrow = load(f"{tag}-narrow")
    names = sorted(n for n in outcomes[0].features if n not in REPORT_ONLY | without)
    x, y, w = design(outcomes, names)
    xn, yn, _ = design(narrow, names)
    wn = np.full(len(narrow), NARROW_WEIGHT)
    held_out = cross_scores(outcomes, (x, y, w), (xn, yn, wn))
    held_out_point = operating_point(outcomes, held_out)
    print(f"held-out operating point {held_out_point:.3f}")
    print_table(outcomes, held_out, held_out_point)
    for split in range(1, splits + 1):
        scores = cross_scores(outcomes, (x, y, w), (xn, yn, wn), split)
        r = rates(outcomes, scores, operating_point(outcomes, scores))
        print(f"split {split}: " + " ".join(f"{k} {v:.3f}" for k, v in r.items()))
    if without:
        return
    mean, scale, beta = model(np.vstack([x, xn]), np.concatenate([y, yn]), np.concatenate([w, wn]))
    shipped = predict((mean, scale, beta), x)
    threshold = operating_point(outcomes, shipped)
    direct = [s for o, s in zip(outcomes, shipped) if o.kind == "direct"]
    gate = float(np.quantile(direct, GATE_QUANTILE))
    print(f"shipped model: operating point {threshold:.3f}, LLM gate {gate:.3f}")
    MODEL_FILE.write_text(
        json.dumps(
            {
                "features": names,
                "mean": mean.round(6).tolist(),
                "scale": scale.round(6).tolist(),
                "coef": beta[:-1].round(6).tolist(),
                "intercept": round(float(beta[-1]), 6),
                "threshold": round(threshold, 3),
                "gate": round(gate, 3),
                "fitted_on": f"benchmarks/out/answers-{tag}.jsonl ({len(outcomes)} PIAF "
                f"outcomes) and answers-{tag}-narrow.jsonl ({len(narrow)}, weight {NARROW_WEIGHT})",
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    for n, c in sorted(zip(names, beta[:-1]), key=lambda nc: -abs(nc[1])):
        print(f"  {n:18s} {c:+.3f}")
    print(f"-> {MODEL_FILE}")


def rates(outcomes: list[Outcome], scores: np.ndarray, t: float) -> dict[str, float]:
    def share(lang: str | None, kind: str) -> float:
        picked = [
            s >= t
            for o, s in zip(outcomes, scores)
            if o.kind == kind and (lang is None or o.lang == lang)
        ]
        return float(np.mean(picked)) if picked else float("nan")

    return {
        "fr": share("fr", "direct"),
        "fr_near": share("fr", "near_miss"),
        "en": share("en", "direct"),
        "en_near": share("en", "near_miss"),
        "off": share(None, "off_corpus"),
    }


def print_table(outcomes: list[Outcome], scores: np.ndarray, threshold: float) -> None:
    for lang in TARGETS:
        pos = [s for o, s in zip(outcomes, scores) if o.lang == lang and o.kind == "direct"]
        neg = [s for o, s in zip(outcomes, scores) if o.lang == lang and o.kind == "near_miss"]
        print(f"AUC {lang}: {auc(pos, neg):.3f}")
    print(HEADER)
    print("|---|---|---|---|---|---|")
    for t in sorted({*np.round(np.arange(0.05, 0.96, 0.05), 2), threshold}):
        r = rates(outcomes, scores, t)
        mark = "**" if t == threshold else ""
        cells = " | ".join(f"{r[k]:.3f}" for k in ("fr", "fr_near", "en", "en_near", "off"))
        print(f"| {mark}{t:.3f}{mark} | {cells} |")


def report(tag: str, plot: Path | None) -> None:
    """The product's figures at its operating point against the previous release's
    decision (evidence >= 0.85) on the same retrievals, and the trade-off curve."""
    outcomes = [o for o in load(f"{tag}-dev") + load(f"{tag}-held") if o.features]
    evidence = np.asarray([o.features["evidence"] for o in outcomes])
    before = [
        replace(o, answered=bool(e >= BEFORE_THRESHOLD), confidence=float(e))
        for o, e in zip(outcomes, evidence)
    ]
    print("| decision | language | answered | near-miss answered | answer-bearing | AUC |")
    print("|---|---|---|---|---|---|")
    for label, rows in (("before (evidence >= 0.85)", before), ("after (confidence)", outcomes)):
        for lang in TARGETS:
            mine = [o for o in rows if o.lang == lang and o.kind != "off_corpus"]
            f = answer_metrics(mine)
            bearing = f["answer_bearing"] if label.startswith("after") else float("nan")
            print(
                f"| {label} | {lang} | {f['answered']:.3f} | {f['near_miss_answered']:.3f} "
                f"| {bearing:.3f} | {f['auc']:.3f} |"
            )
        off = [o.answered for o in rows if o.kind == "off_corpus"]
        print(f"| {label} | off-corpus | {np.mean(off):.3f} ({len(off)}) | | | |")
    if plot:
        draw(outcomes, plot)


def draw(outcomes: list[Outcome], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = np.asarray([o.confidence for o in outcomes])
    ts = np.linspace(0, 1, 201)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    evidence = np.asarray([o.features["evidence"] for o in outcomes])
    for lang, colour in (("fr", "tab:blue"), ("en", "tab:orange")):
        pts = [rates(outcomes, evidence, t) for t in np.linspace(0.6, 1.1, 201)]
        near, answered = [p[f"{lang}_near"] for p in pts], [p[lang] for p in pts]
        ax.plot(near, answered, "--", color=colour, alpha=0.6, label=f"{lang.upper()}, before")
    for lang, colour in (("fr", "tab:blue"), ("en", "tab:orange")):
        pts = [rates(outcomes, scores, t) for t in ts]
        ax.plot(
            [p[f"{lang}_near"] for p in pts],
            [p[lang] for p in pts],
            color=colour,
            label=f"{lang.upper()}, confidence",
        )
    threshold = json.loads(DECISION_FILE.read_text())["threshold"]
    r = rates(outcomes, scores, threshold)
    for lang, colour in (("fr", "tab:blue"), ("en", "tab:orange")):
        ax.plot(r[f"{lang}_near"], r[lang], "o", color=colour)
    ax.set_xlabel("near-miss questions answered (wrongly)")
    ax.set_ylabel("answerable questions answered")
    ax.set_title(f"Answer decision on PIAF dev (dots: default threshold {threshold:.2f})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"-> {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["collect", "collect-narrow", "fit", "judge", "report"])
    parser.add_argument("--part", default="dev,held", help="collect: dev, held or both")
    parser.add_argument("--tag", default="current")
    parser.add_argument("--every", type=int, default=1, help="collect: one question in EVERY")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument(
        "--without",
        default="",
        help="judge: comma-separated features to leave out; prints held-out figures only",
    )
    parser.add_argument(
        "--splits",
        type=int,
        default=0,
        help="judge: also print held-out figures for this many other random halvings",
    )
    args = parser.parse_args()
    if args.command == "collect":
        for part in args.part.split(","):
            collect(args.tag, part, args.every)
    elif args.command == "collect-narrow":
        collect_narrow(args.tag)
    elif args.command == "fit":
        fit(args.tag)
    elif args.command == "judge":
        fit_judge(args.tag, frozenset(filter(None, args.without.split(","))), args.splits)
    else:
        report(args.tag, args.plot)


if __name__ == "__main__":
    main()
