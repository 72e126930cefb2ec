"""What to pick out inside a quoted sentence: the words that answer the question.

An English question often gets a French sentence; the reader should see at once which words
answer it. For a "how many" question that is the amount with its noun ("plus de mille
spécialistes"), for a "when" question the date ("le 3 mars 2024"), found with the answer
type ``rag.answering.answer_type`` reads from the question. French number words are also
given in digits in the question's language ("more than 1,000"). Pure functions: offsets are
into the sentence, and the caller escapes everything it renders.

Invariant: an emphasised span is always a span of the quoted sentence; the digits are shown
apart from the quote, never inside it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_FRENCH_UNITS = "deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze "
_FRENCH_UNITS += "quinze seize"
_ENGLISH_UNITS = "two three four five six seven eight nine ten eleven twelve"
_VALUES = {
    word: n for units in (_FRENCH_UNITS, _ENGLISH_UNITS) for n, word in enumerate(units.split(), 2)
}
_VALUES |= {
    "vingt": 20, "vingts": 20, "trente": 30, "quarante": 40, "cinquante": 50, "soixante": 60,
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90, "cent": 100, "cents": 100, "hundred": 100, "mille": 1000,
    "thousand": 1000, "million": 10**6, "millions": 10**6, "milliard": 10**9,
    "milliards": 10**9, "billion": 10**9,
}  # fmt: skip
_QUALIFIERS = {
    "plus de": ("more than", "plus de"),
    "plus d'": ("more than", "plus de"),
    "moins de": ("fewer than", "moins de"),
    "près de": ("nearly", "près de"),
    "environ": ("about", "environ"),
}
_NUMBER_WORD = "|".join(sorted(_VALUES, key=len, reverse=True))
_AMOUNT = re.compile(
    r"(?i)\b(?P<q>plus\s+de\s+|plus\s+d['’]|moins\s+de\s+|près\s+de\s+|environ\s+|more\s+than\s+"
    r"|fewer\s+than\s+|about\s+|nearly\s+|over\s+)?"
    rf"(?P<n>\d+(?:[\s\u00a0\u202f.,]\d{{3}})*(?:[.,]\d+)?|(?:{_NUMBER_WORD})"
    rf"(?:[\s-]+(?:et[\s-]+)?(?:{_NUMBER_WORD}))*)\b"
    r"(?P<noun>\s+[^\W\d_]{3,}(?:-[^\W\d_]+)*)?"
)
_MONTHS = (
    "janvier|février|fevrier|mars|avril|mai|juin|juillet|août|aout|septembre|octobre|"
    "novembre|décembre|decembre|january|february|march|april|may|june|july|august|"
    "september|october|november|december"
)
_DATE = re.compile(
    rf"(?i)\b(?:\d{{1,2}}(?:er)?\s+(?:{_MONTHS})(?:\s+\d{{4}})?|(?:{_MONTHS})\s+\d{{1,2}}"
    rf"(?:st|nd|rd|th)?,?\s+\d{{4}}|(?:{_MONTHS})\s+\d{{4}}|(?:1[5-9]|20)\d{{2}})\b"
)
_YEAR = re.compile(r"(?:1[5-9]|20)\d{2}")
_FRENCH_COMMON = "le la les des du de un une et est sont dans pour par sur avec qui"
_ENGLISH_COMMON = "the a an and is are in for by on with who what how many of"
_FRENCH_WORDS = frozenset(_FRENCH_COMMON.split())
_ENGLISH_WORDS = frozenset(_ENGLISH_COMMON.split())
_WORD = re.compile(r"[^\W\d_]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
# Words an example question keeps after "how many": fewer say too little to be answered,
# more make a question nobody would type.
EXAMPLE_WORDS = (4, 14)


def text_lang(text: str) -> str:
    """``"fr"`` or ``"en"``: whichever language's common words the text uses more (the
    corpus is French news, questions come in both), for ``lang`` and the digits' wording."""
    words = [w.lower() for w in _WORD.findall(text)]
    french = sum(w in _FRENCH_WORDS for w in words)
    return "fr" if french > sum(w in _ENGLISH_WORDS for w in words) else "en"


def answer_spans(question: str, sentence: str) -> list[tuple[int, int]]:
    """Offsets in ``sentence`` of what answers ``question``: its amounts (with their noun)
    for a "how many"/"how much" question, its dates for a "when" question, else nothing."""
    from rag.answering.answer_type import expected
    from rag.text import fold, stopwords

    kind = expected(question, lambda word: fold(word) in stopwords()).kind
    if kind == "date":
        return [m.span() for m in _DATE.finditer(sentence)]
    if kind != "number":
        return []
    return [(m.start(), end) for m, end in _amounts(sentence)]


def _amounts(sentence: str) -> Iterator[tuple[re.Match, int]]:
    """Each amount of ``sentence`` and where it ends: after its noun when it has one."""
    from rag.text import fold, stopwords

    for m in _AMOUNT.finditer(sentence):
        if _YEAR.fullmatch(m["n"]) and not m["q"]:
            continue  # "en 2023" dates the fact; it is not the amount asked for
        noun = (m["noun"] or "").strip()
        if re.fullmatch(_MONTHS, noun, re.IGNORECASE):
            continue  # "3 mars" is a date
        yield m, m.end() if noun and fold(noun) not in stopwords() else m.end("n")


def example_questions(texts: Iterable[str], limit: int = 2) -> list[str]:
    """Questions the documents answer, to show before the first one: a sentence that states
    an amount of something ("plus de mille spécialistes nord-coréens participent à …")
    becomes "Combien de spécialistes nord-coréens participent à … ?" (in its language)."""
    found: list[str] = []
    for text in texts:
        for sentence in _SENTENCE.split(text):
            rest = next(
                (sentence[m.start("noun") :] for m, end in _amounts(sentence) if end > m.end("n")),
                None,
            )
            words = (rest or "").strip().rstrip(".!?;:").split()
            if not EXAMPLE_WORDS[0] <= len(words) <= EXAMPLE_WORDS[1]:
                continue
            if text_lang(sentence) == "en":
                found.append(f"How many {' '.join(words)}?")
            else:
                de = "d’" if words[0][0].lower() in "aeiouyéèêh" else "de "
                found.append(f"Combien {de}{' '.join(words)} ?")
            if len(found) == limit:
                return found
            break  # one question per document
    return found


def in_digits(phrase: str, lang: str) -> str | None:
    """A French or English amount in words, in digits in ``lang`` ("plus de mille" ->
    "more than 1,000"); None when the amount is in digits already or not a number."""
    m = _AMOUNT.match(phrase)
    if m is None or m["n"][0].isdigit():
        return None
    value = _words_value(re.split(r"[\s-]+", m["n"].lower()))
    shown = f"{value:,}" if lang == "en" else f"{value:,}".replace(",", "\u00a0")
    qualifier = " ".join(m["q"].lower().replace("’", "'").split()) if m["q"] else ""
    words = _QUALIFIERS.get(qualifier, (qualifier, qualifier))[lang != "en"]
    return f"{words} {shown}".strip()


def _words_value(words: list[str]) -> int:
    """The value of number words: "trois cents" 300, "deux mille" 2000, "quatre vingt" 80."""
    total = current = 0
    for word in words:
        value = _VALUES.get(word)
        if value is None:  # "et" in "vingt et un"
            continue
        if value == 100:
            current = max(current, 1) * 100
        elif value >= 1000:
            total += max(current, 1) * value
            current = 0
        elif value == 20 and current == 4:
            current = 80
        else:
            current += value
    return total + current
