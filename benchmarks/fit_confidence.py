"""Fit the answer confidence (rag/confidence.py) on PIAF dev and its near-miss questions.

Positives: the 600 French and 600 English PIAF dev questions as asked; negatives: the same
questions with every chunk holding a gold answer left out of retrieval (benchmarks/answers.py
builds and caches both). For each question the features of its best candidate sentences
are computed with the product's code; a logistic regression (numpy, L2) is fitted on
standardised features, each language weighted equally. Printed: the coefficients to paste
into rag/confidence.py, AUCs (in-sample and 5-fold cross-validated by question), the
operating points, and the same checks on the seed article and the narrow corpus.

Usage: python -m benchmarks.fit_confidence
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import numpy as np

from benchmarks.answers import Case, load_cases
from benchmarks.common import OUT
from rag.answer import rank_sentences
from rag.confidence import FEATURES, candidate_features
from rag.evaluate import auc

FEATURE_CACHE = OUT / "confidence-features.pkl"
L2 = 1e-2


def features_of(cases: Sequence[Case], services, token_states) -> list[np.ndarray]:
    """(candidates, features) for every case, cached in benchmarks/out."""
    if FEATURE_CACHE.exists():
        return pickle.loads(FEATURE_CACHE.read_bytes())
    idf = {name: s.lexical().idf for name, s in services.items()}
    out = []
    for case in cases:
        ranked = rank_sentences(case.question, case.retrieval, idf[case.corpus])
        out.append(candidate_features(case.question, ranked, case.retrieval, token_states))
    FEATURE_CACHE.write_bytes(pickle.dumps(out))
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted L2 logistic regression by Newton's method; returns [bias, coefficients...]."""
    xb = np.hstack([np.ones((len(x), 1)), x])
    beta = np.zeros(xb.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-xb @ beta))
        grad = xb.T @ (w * (p - y)) + L2 * np.r_[0, beta[1:]]
        hess = (xb * (w * p * (1 - p))[:, None]).T @ xb + L2 * np.diag(
            np.r_[0, np.ones(len(beta) - 1)]
        )
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta


def design(feats: list[np.ndarray], names: Sequence[str]) -> np.ndarray:
    """The top candidate's features (zeros when nothing was retrieved), chosen columns."""
    cols = [FEATURES.index(n) for n in names]
    return np.asarray([f[0, cols] if len(f) else np.zeros(len(cols)) for f in feats])


def weights(cases: Sequence[Case]) -> np.ndarray:
    """Each language and each label weighs the same in the fit."""
    keys = [(c.lang, c.kind) for c in cases]
    counts = {k: keys.count(k) for k in set(keys)}
    return np.asarray([1.0 / counts[k] for k in keys]) * len(keys) / len(counts)


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise, fit; returns (beta, means, scales)."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    return fit_logistic((x - mean) / scale, y, w), mean, scale


def predict(model, x: np.ndarray) -> np.ndarray:
    beta, mean, scale = model
    return 1 / (1 + np.exp(-(beta[0] + ((x - mean) / scale) @ beta[1:])))


def cross_validated(x, y, w, groups: list[str], folds: int = 5) -> np.ndarray:
    """Out-of-fold predictions, folds by question (a question's versions stay together)."""
    fold_of = {g: i % folds for i, g in enumerate(sorted(set(groups)))}
    fold = np.asarray([fold_of[g] for g in groups])
    out = np.zeros(len(y))
    for k in range(folds):
        model = fit(x[fold != k], y[fold != k], w[fold != k])
        out[fold == k] = predict(model, x[fold == k])
    return out


def aucs(cases: Sequence[Case], scores: np.ndarray, corpus: str = "piaf") -> str:
    """AUC of ``scores``, direct vs near-miss questions of ``corpus``, per language."""
    cells = []
    for lang in ("fr", "en"):
        pos, neg = (
            [s for c, s in zip(cases, scores) if (c.corpus, c.lang, c.kind) == (corpus, lang, kind)]
            for kind in ("direct", "near_miss")
        )
        cells.append(f"{lang} {auc(pos, neg):.3f}")
    return ", ".join(cells)


def main() -> None:
    from rag.onnx_e5 import OnnxE5

    cases, services = load_cases()
    feats = features_of(cases, services, OnnxE5().token_states)
    train = [i for i, c in enumerate(cases) if c.corpus == "piaf" and c.kind != "off_corpus"]
    tcases = [cases[i] for i in train]
    y = np.asarray([c.kind == "direct" for c in tcases], dtype=float)
    w = weights(tcases)
    groups = [c.group for c in tcases]
    old = np.asarray([f[0, 0] + 0.1 * f[0, 1] if len(f) else 0.0 for f in feats])
    print(
        f"old evidence score: AUC {aucs(cases, old)}; seed {aucs(cases, old, 'seed')}; "
        f"narrow {aucs(cases, old, 'narrow')}"
    )
    for name in FEATURES:
        col = design(feats, [name])[:, 0]
        print(f"{name:>12}: AUC {aucs(cases, col)}")
    subsets = {
        "all": FEATURES,
        "no background/coverage": [n for n in FEATURES if n not in ("background", "coverage")],
        "similarity+lexical": ["similarity", "lexical"],
        "similarity+align": ["similarity", "align_min", "align_mean", "name_min"],
    }
    for label, names in subsets.items():
        x = design(feats, names)
        model = fit(x[train], y, w)
        cv = cross_validated(x[train], y, w, groups)
        every = predict(model, x)
        print(
            f"[{label}] in-sample {aucs(cases, every)}; 5-fold {aucs(tcases, cv)}; "
            f"seed {aucs(cases, every, 'seed')}; narrow {aucs(cases, every, 'narrow')}"
        )
    x = design(feats, FEATURES)
    model = fit(x[train], y, w)
    beta, mean, scale = model
    print("INTERCEPT =", round(float(beta[0]), 4))
    for name, b, m, s in zip(FEATURES, beta[1:], mean, scale):
        print(f"    {name!r}: ({b:.4f}, {m:.4f}, {s:.4f}),")
    top = predict(model, x)
    best = np.asarray([predict(model, f).max() if len(f) else 0.0 for f in feats])
    print(
        f"top candidate: AUC {aucs(cases, top)}; most confident of the top {len(feats[0])}: "
        f"AUC {aucs(cases, best)}; seed {aucs(cases, best, 'seed')}; "
        f"narrow {aucs(cases, best, 'narrow')}"
    )
    operating_points(cases, best)


COLUMNS = {
    "FR answered": ("piaf", "fr", "direct"),
    "FR near-miss": ("piaf", "fr", "near_miss"),
    "EN answered": ("piaf", "en", "direct"),
    "EN near-miss": ("piaf", "en", "near_miss"),
    "off-corpus": ("piaf", None, "off_corpus"),
    "seed direct": ("seed", None, "direct"),
    "seed near-miss": ("seed", None, "near_miss"),
    "narrow direct": ("narrow", None, "direct"),
    "narrow near-miss": ("narrow", None, "near_miss"),
}


def operating_points(cases: Sequence[Case], conf: np.ndarray) -> None:
    """Answered shares at a range of thresholds (top candidate's confidence)."""

    def share(corpus: str, lang: str | None, kind: str, t: float) -> float:
        sel = [
            s
            for c, s in zip(cases, conf)
            if (c.corpus, c.kind) == (corpus, kind) and lang in (None, c.lang)
        ]
        return float(np.mean(np.asarray(sel) >= t))

    print("| threshold | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for t in np.arange(0.05, 0.96, 0.05):
        cells = [share(*key, t) for key in COLUMNS.values()]
        print(f"| {t:.2f} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")


if __name__ == "__main__":
    main()
