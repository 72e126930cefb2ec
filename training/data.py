"""The verifier's training and calibration pairs, built from what the repository holds.

    python -m training.data        # writes training/data/pairs-{train,calib}.jsonl

A pair is (question, candidate sentence, its title, its previous sentence) -> 1 when the
sentence states the answer, 0 when it does not. Sources (counts printed by the command):

- PIAF dev questions (``benchmarks/data/piaf/questions_dev*.jsonl``, French, and the English
  translations of ``benchmarks/data/piaf_dev_en_more.jsonl``) of the *training half* only:
  the half ``benchmarks.answers`` calls fold 0 (``zlib.crc32(id) % 2 == 0``), so fold 1 stays
  a held-out half for the figures. Of fold 0, one question in five (``CALIB_SHARE``, by a
  second hash) is kept out of training for the calibration. Positive: the gold sentence.
- Hard negatives: the other sentences of the gold passage that hold no gold answer, and the
  best BM25 sentences of *other* passages (the product's own lexical tokenizer; the
  near-miss setting, gold passage removed), mined with the French question for both
  languages.
- Synthetic near-misses: the question with one asked element that its sentence states
  (year, number, name, nationality, counted thing) replaced by one that the passage does not
  hold; relation swaps: two names of the sentence exchanged in the question.
- Templated French questions from sentences of PIAF passages that no fold-1 question uses,
  of ``seeds/``, of ``benchmarks/data/narrow`` and of ``training/news`` ("Combien de X
  ... ?", "En quelle année ... ?", "Où ... ?"), each with its near-misses and a hard
  negative.
- Hand-written French news articles (``training/news/``, invented) with natural questions
  in both languages: each direct one with the sentence holding its answer and that
  sentence's near-misses; each near-miss one (the article is on its topic but does not
  state the asked fact) with the article's best BM25 sentences for it.

Never used: ``benchmarks/data/narrow_heldout*`` and ``tests/data/seed_questions.jsonl``.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import bm25s

from rag.text import fold, stopwords, tokenize

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"  # the pairs written
PIAF = ROOT / "benchmarks" / "data" / "piaf"  # MIT; the paragraphs CC BY-SA (its README)
CALIB_SHARE = 5
SEED = 29
# BM25 sentences of other passages kept as hard negatives per question.
MINED = 2
# Sentences of the gold passage (holding no answer) kept as negatives per question.
SIBLINGS = 2
# Hand-written French news articles with natural direct and near-miss questions in both
# languages (training/news/README.md): the product's use, which PIAF and the templates
# are not. Each of their pairs is seen ``NEWS_REPEAT`` times in the epoch.
NEWS = Path(__file__).resolve().parent / "news"
NEWS_REPEAT = 2
# The article's best BM25 sentences a near-miss question is paired with (negatives).
NEWS_MINED = 3
_SENT_END = re.compile(r"(?<=[.!?…])[»\"”’)\]]*\s+|\n+")
_YEAR = re.compile(r"\b(1[0-9]\d\d|20[0-4]\d)\b")
_NUMBER = re.compile(r"\b\d+(?:[ ,.]\d+)*\b")
_NAME = re.compile(r"\b[A-ZÉÈÎÔ][a-zéèêëàâîïôûüç]+(?:[ -][A-ZÉÈ][a-zéèêëàâîïôûüç]+)*")
_COUNT = re.compile(
    r"\b(\d+(?:[ ,.]\d+)*|deux|trois|quatre|cinq|six|sept|huit|neuf|dix|cent|mille)"
    r"(?: (?:millions?|milliards?|mille))? (?:d[e’'] ?)?([a-zéèêàâîôûç]{4,}[sx])\b"
)
_PLACE = re.compile(
    r"\b(?:à|en|au|dans la région de) ([A-Z][a-zéèêëàâîïôûüç]+(?:[ -][A-Z][a-zéèêëàâîïôûüç]+)*)"
)
NATIONALITIES = {
    "fr": [
        "nord-coréens",
        "sud-coréens",
        "chinois",
        "russes",
        "ukrainiens",
        "japonais",
        "américains",
        "allemands",
        "français",
        "britanniques",
        "italiens",
        "espagnols",
        "polonais",
        "vietnamiens",
        "indiens",
        "turcs",
    ],
    "en": [
        "North-Korean",
        "South-Korean",
        "Chinese",
        "Russian",
        "Ukrainian",
        "Japanese",
        "American",
        "German",
        "French",
        "British",
        "Italian",
        "Spanish",
        "Polish",
        "Vietnamese",
        "Indian",
        "Turkish",
    ],
}
COUNTED = [
    "personnes",
    "habitants",
    "soldats",
    "élèves",
    "joueurs",
    "ouvriers",
    "salariés",
    "experts",
    "médecins",
    "touristes",
    "voitures",
    "maisons",
    "livres",
    "églises",
    "villes",
    "communes",
    "espèces",
    "navires",
    "avions",
    "victimes",
    "membres",
    "sièges",
    "emplois",
    "enfants",
    "étudiants",
    "chevaux",
    "arbres",
]


@dataclass(frozen=True)
class Pair:
    """One training example (the verifier's input fields and its label)."""

    question: str
    sentence: str
    title: str
    previous: str
    label: int
    kind: str
    lang: str


def sentences(text: str) -> list[str]:
    """The text's sentences as the product cuts them (``rag.ingest.pipeline``)."""
    return [s.strip() for s in _SENT_END.split(text) if s and s.strip()]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def fold_of(question_id: str) -> int:
    """The half of ``benchmarks.answers.fold_of`` (split 0)."""
    return zlib.crc32(question_id.removesuffix("-en").encode()) % 2


def is_calibration(question_id: str) -> bool:
    key = question_id.removesuffix("-en") + ":calib"
    return zlib.crc32(key.encode()) % CALIB_SHARE == 0


class Corpus:
    """PIAF passages cut into sentences, with a BM25 index over every sentence."""

    def __init__(self, passages: list[dict]) -> None:
        self.passages = {p["passage_id"]: p for p in passages}
        self.sents: list[tuple[str, int]] = []  # (passage id, sentence index)
        self.split = {pid: sentences(p["text"]) for pid, p in self.passages.items()}
        for pid, sents in self.split.items():
            self.sents += [(pid, k) for k in range(len(sents))]
        self.bm25 = bm25s.BM25()
        self.bm25.index(
            [tokenize(self.split[pid][k]) or ["_"] for pid, k in self.sents], show_progress=False
        )
        self.names = sorted({n for p in passages for n in _NAME.findall(p["text"])})

    def pair(self, question: str, pid: str, k: int, label: int, kind: str, lang: str) -> Pair:
        sents = self.split[pid]
        previous = sents[k - 1] if k > 0 else ""
        return Pair(question, sents[k], self.passages[pid]["title"], previous, label, kind, lang)

    def mined(self, question_fr: str, exclude: str, n: int) -> list[tuple[str, int]]:
        """The ``n`` best BM25 sentences outside passage ``exclude``."""
        tokens = tokenize(question_fr)
        if not tokens:
            return []
        ids, _ = self.bm25.retrieve([tokens], k=min(20, len(self.sents)), show_progress=False)
        found = [self.sents[int(i)] for i in ids[0]]
        return [s for s in found if s[0] != exclude][:n]


def gold_sentence(sents: list[str], text: str, answers: list[str]) -> int | None:
    """The index of the sentence holding the first gold answer's start."""
    start = text.find(answers[0]) if answers else -1
    if start < 0:
        return None
    pos = 0
    for k, s in enumerate(sents):
        at = text.find(s, pos)
        if at <= start < at + len(s):
            return k
        pos = max(pos, at)
    return None


_ARTICLES = {
    "le",
    "la",
    "les",
    "l'",
    "il",
    "elle",
    "ils",
    "elles",
    "ce",
    "cette",
    "un",
    "une",
    "des",
    "on",
}
_QUESTION_WORDS = {
    "quel",
    "quelle",
    "quels",
    "quelles",
    "qui",
    "que",
    "quoi",
    "combien",
    "comment",
    "pourquoi",
    "quand",
    "ou",
    "what",
    "which",
    "who",
    "when",
    "where",
    "why",
    "how",
    "est",
    "en",
    "dans",
    "does",
    "did",
    "is",
    "was",
    "are",
    "were",
}


def asked_names(question: str) -> list[str]:
    """Capitalised words and phrases of the question past its first word (not question words)."""
    found = []
    for m in _NAME.finditer(question):
        word = m.group(0)
        if (
            m.start() > 0
            and fold(word) not in _QUESTION_WORDS
            and fold(word) not in stopwords()
            and len(word) > 2
        ):
            found.append(word)
    return found


def _lower_first(words: list[str]) -> list[str]:
    """A clause's first word lower-cased when it is an article or pronoun (not a name)."""
    if words and fold(words[0]) in _ARTICLES:
        return [words[0].lower(), *words[1:]]
    return words


def near_misses(
    question: str, passage: str, lang: str, rng: random.Random, pool: list[str]
) -> Iterator[tuple[str, str]]:
    """(altered question, what was replaced) for each asked element the passage states."""
    low = fold(passage)
    for year in dict.fromkeys(_YEAR.findall(question)):
        other = str(int(year) + rng.choice([-1, 1]) * rng.randint(2, 40))
        if other not in passage:
            yield question.replace(year, other), "year"
    for num in dict.fromkeys(_NUMBER.findall(question)):
        if not _YEAR.fullmatch(num) and num in passage:
            other = str(
                int(re.sub(r"\D", "", num)[:6] or 1) * rng.choice([2, 3, 5]) + rng.randint(1, 9)
            )
            yield question.replace(num, other), "number"
    words = asked_names(question)
    for name in dict.fromkeys(w for w in words if fold(w) in low):
        other = rng.choice(pool)
        if fold(other) not in low and other not in question:
            yield question.replace(name, other), "name"
    for nat in NATIONALITIES[lang]:
        if re.search(rf"\b{re.escape(nat)}\b", question, re.I):
            other = rng.choice([n for n in NATIONALITIES[lang] if n != nat])
            fr = NATIONALITIES["fr"][NATIONALITIES[lang].index(other)]
            if fold(fr) not in low and fold(other) not in low:
                yield re.sub(rf"\b{re.escape(nat)}\b", other, question, flags=re.I), "nationality"
    present = [n for n in dict.fromkeys(words) if fold(n) in low]
    if len(present) >= 2:
        a, b = present[0], present[1]
        swapped = question.replace(a, "\0").replace(b, a).replace("\0", b)
        if swapped != question:
            yield swapped, "swap"


def piaf_pairs(corpus: Corpus, rows: list[dict], rng: random.Random) -> list[Pair]:
    """Positives, siblings, mined negatives and near-misses of PIAF dev questions."""
    pairs: list[Pair] = []
    for row in rows:
        pid, lang = row["passage_id"], row["lang"]
        passage = corpus.passages[pid]["text"]
        sents = corpus.split[pid]
        k = gold_sentence(sents, passage, row["answers"])
        if k is None:
            continue
        q = row["question"]
        pairs.append(corpus.pair(q, pid, k, 1, "piaf", lang))
        for altered, what in near_misses(q, passage, lang, rng, corpus.names):
            pairs.append(corpus.pair(altered, pid, k, 0, f"near_{what}", lang))
        others = [
            j
            for j in range(len(sents))
            if j != k and not any(a in sents[j] for a in row["answers"])
        ]
        for j in rng.sample(others, min(SIBLINGS, len(others))):
            pairs.append(corpus.pair(q, pid, j, 0, "sibling", lang))
        for opid, j in corpus.mined(row.get("question_fr", q), pid, MINED):
            pairs.append(corpus.pair(q, opid, j, 0, "mined", lang))
    return pairs


def _clause(words: list[str], limit: int = 12) -> str:
    text = " ".join(words[:limit]).rstrip(",;:.")
    return re.split(r"[,;:(]", text)[0].strip()


def templated(sentence: str) -> list[tuple[str, str]]:
    """French questions a sentence answers, with the kind of element each asks for."""
    out = []
    m = _COUNT.search(sentence)
    if m:
        rest = _clause(sentence[m.end() :].split(), 10)
        if len(rest.split()) >= 2:
            out.append((f"Combien de {m.group(2)} {rest} ?".replace("  ", " "), "count"))
    y = _YEAR.search(sentence)
    if y:
        before = re.sub(r"\b(en|dès|depuis|in|le|du|au|de)\s*$", "", sentence[: y.start()].strip())
        body = (before + " " + sentence[y.end() :]).strip(" ,")
        words = body.split()
        clause = _clause(_lower_first(words), 14)
        if len(clause.split()) >= 4:
            out.append((f"En quelle année {clause} ?", "year"))
    p = _PLACE.search(sentence)
    if p and p.start() > 10:
        words = sentence[: p.start()].split()
        clause = _clause(_lower_first(words), 12)
        if len(clause.split()) >= 4 and not re.search(r"\d", clause):
            out.append((f"Où {clause} ?", "place"))
    return out


def template_pairs(
    docs: list[tuple[str, str, list[str]]], corpus: Corpus, rng: random.Random
) -> list[Pair]:
    """Templated positives, their near-misses (counted thing, year, name, nationality
    replaced) and a sibling negative, from ``docs`` of (id, title, sentences)."""
    pairs: list[Pair] = []
    for _doc, title, sents in docs:
        text = " ".join(sents)
        for k, s in enumerate(sents):
            prev = sents[k - 1] if k else ""
            for q, what in templated(s)[:2]:
                pairs.append(Pair(q, s, title, prev, 1, f"tpl_{what}", "fr"))
                for altered, kind in near_misses(q, text, "fr", rng, corpus.names):
                    pairs.append(Pair(altered, s, title, prev, 0, f"tpl_near_{kind}", "fr"))
                if what == "count":
                    noun = re.match(r"Combien de (\S+)", q).group(1)
                    other = rng.choice([c for c in COUNTED if c not in fold(text)] or COUNTED)
                    pairs.append(
                        Pair(q.replace(noun, other, 1), s, title, prev, 0, "tpl_near_counted", "fr")
                    )
                others = [j for j in range(len(sents)) if j != k]
                if others:
                    j = rng.choice(others)
                    pairs.append(
                        Pair(q, sents[j], title, sents[j - 1] if j else "", 0, "tpl_sibling", "fr")
                    )
    return pairs


def documents(corpus: Corpus, held: set[str]) -> list[tuple[str, str, list[str]]]:
    """PIAF passages that no held-out question uses, the seed article, the narrow dev corpus
    and the hand-written news articles."""
    docs = [
        (pid, p["title"], corpus.split[pid])
        for pid, p in corpus.passages.items()
        if pid not in held
    ]
    for path in [
        *sorted((ROOT / "seeds").glob("*.txt")),
        *sorted((ROOT / "benchmarks/data/narrow").glob("*.txt")),
        *sorted(NEWS.glob("*.txt")),
    ]:
        title, sents = article(path)
        docs.append((path.stem, title, [s for _, s in sents]))
    return docs


def article(path: Path) -> tuple[str, list[tuple[int, str]]]:
    """A title-on-line-1 article's title and its sentences, each with its 1-based line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0], [(n, s) for n, line in enumerate(lines, 1) if n > 1 for s in sentences(line)]


def article_pairs(
    title: str, sents: list[tuple[int, str]], rows: list[dict], rng: random.Random, pool: list[str]
) -> list[Pair]:
    """One article's pairs: each direct question with the sentence holding its answer
    (positive), that sentence's near-misses and two other sentences (negatives); each
    near-miss question with the article's best BM25 sentences for it (negatives)."""
    texts = [s for _, s in sents]
    text = " ".join(texts)
    bm25 = bm25s.BM25()
    bm25.index([tokenize(s) or ["_"] for s in texts], show_progress=False)
    pairs: list[Pair] = []

    def pair(q: str, k: int, label: int, kind: str, lang: str) -> Pair:
        return Pair(q, texts[k], title, texts[k - 1] if k else "", label, kind, lang)

    for row in rows:
        q, lang = row["question"], row["lang"]
        if row["kind"] == "direct":
            gold = [k for k, (n, s) in enumerate(sents) if n == row["line"] and row["answer"] in s]
            if not gold:
                continue
            pairs.append(pair(q, gold[0], 1, "news", lang))
            for altered, what in near_misses(q, text, lang, rng, pool):
                pairs.append(pair(altered, gold[0], 0, f"news_near_{what}", lang))
            others = [k for k, s in enumerate(texts) if row["answer"] not in s]
            picked = rng.sample(others, min(SIBLINGS, len(others)))
            pairs += [pair(q, k, 0, "news_sibling", lang) for k in picked]
            continue
        n = min(NEWS_MINED, len(texts))
        tokens = tokenize(q)
        mined = (
            [int(i) for i in bm25.retrieve([tokens], k=n, show_progress=False)[0][0]]
            if tokens
            else rng.sample(range(len(texts)), n)
        )
        pairs += [pair(q, k, 0, "news_near_miss", lang) for k in mined]
    return pairs


def news_pairs(rng: random.Random, pool: list[str]) -> list[Pair]:
    """Every hand-written news article's pairs (``article_pairs``), ``NEWS_REPEAT`` times."""
    rows = [r for path in sorted(NEWS.glob("questions-*.jsonl")) for r in read_jsonl(path)]
    pairs: list[Pair] = []
    for path in sorted(NEWS.glob("*.txt")):
        title, sents = article(path)
        mine = [r for r in rows if r["file"] == path.name]
        pairs += article_pairs(title, sents, mine, rng, pool)
    return pairs * NEWS_REPEAT


def question_rows() -> list[dict]:
    fr = [{**r, "lang": "fr"} for r in read_jsonl(PIAF / "questions_dev.jsonl")]
    en = read_jsonl(PIAF / "questions_dev_en.jsonl") + read_jsonl(
        ROOT / "benchmarks/data/piaf_dev_en_more.jsonl"
    )
    return fr + [{**r, "lang": "en"} for r in en]


def build() -> dict[str, list[Pair]]:
    rng = random.Random(SEED)
    corpus = Corpus(read_jsonl(PIAF / "passages.jsonl"))
    rows = question_rows()
    held = {r["passage_id"] for r in rows if fold_of(r["id"]) == 1}
    dev = [r for r in rows if fold_of(r["id"]) == 0]
    train_rows = [r for r in dev if not is_calibration(r["id"])]
    calib_rows = [r for r in dev if is_calibration(r["id"])]
    train = piaf_pairs(corpus, train_rows, rng) + template_pairs(
        documents(corpus, held), corpus, rng
    )
    train += news_pairs(rng, corpus.names)
    rng.shuffle(train)
    # Its own generator: the calibration pairs do not change when training sources do.
    calib = piaf_pairs(corpus, calib_rows, random.Random(SEED))
    return {"train": train, "calib": calib}


def main() -> None:
    for name, pairs in build().items():
        path = DATA / f"pairs-{name}.jsonl"
        path.write_text(
            "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in pairs),
            encoding="utf-8",
        )
        kinds: dict[str, int] = {}
        for p in pairs:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        print(f"{name}: {len(pairs)} pairs, {sum(p.label for p in pairs)} positive -> {path}")
        print("  " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))


if __name__ == "__main__":
    main()
