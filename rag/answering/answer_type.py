"""What kind of answer a question asks for, and whether a sentence can hold it.

A question asking *how many* of something is not answered by a sentence that gives no number
of that thing, however well every other asked word is supported: a question about a plant's
monthly output finds the sentence about the plant, whose numbers count its employees. A
*when* question needs a date. Term alignment cannot see this, since every asked word but the
counted one is in the sentence (the seed article's near-miss tests of this kind were all
answered before this signal; docs/answer-decision.md).

``support`` is 1 when the question asks for no quantity or date, else how well the sentence
provides one: a number (digits or a number word, French or English) with a counterpart of
the counted noun among the words around it (the same stem, or a translation by single-word
vectors, as in term alignment), or for a date question a year, month, weekday or century.
Questions asking for a share, an amount or an age need a number only. The rules are plain
patterns; how much a miss counts is fitted with the other signals on PIAF and the narrow
corpus (``benchmarks/answers.py``), never on the seed article's questions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from rag.text import fold, tokenize

_NUMBERS = """
    deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize
    vingt vingtaine vingtaines trente trentaine quarante cinquante soixante cent cents
    centaine centaines mille millier milliers million millions milliard milliards douzaine
    douzaines dizaine dizaines moitie tiers quart quarts
    two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty
    sixty seventy eighty ninety hundred hundreds thousand thousands million millions
    billion billions dozen dozens half third quarter percent pourcent
"""
_DATES = """
    janvier fevrier mars avril mai juin juillet aout septembre octobre novembre decembre
    january february march april may june july august september october november december
    lundi mardi mercredi jeudi vendredi samedi dimanche monday tuesday wednesday thursday
    friday saturday sunday siecle siecles century centuries
"""
_NUMBER_WORDS = frozenset(_NUMBERS.split())
_DATE_WORDS = frozenset(_DATES.split())
_WHEN = re.compile(
    r"\b(?:when|quand|(?:in\s+)?(?:what|which)\s+(?:year|century|date)|en\s+quelle\s+année"
    r"|quelle\s+année|à\s+quelle\s+(?:date|époque)|(?:quel|en\s+quel)\s+siècle)\b",
    re.IGNORECASE,
)
# Markers after which the counted thing is named ("how many X", "combien de X") ...
_COUNT = re.compile(
    r"\b(?:how\s+many|combien\s+(?:de|d['’])|(?:quel|what\s+is\s+the)\s+(?:est\s+le\s+)?"
    r"(?:nombre|number)\s+(?:de|d['’]|of))\s*",
    re.IGNORECASE,
)
# ... and those that ask for a number of no particular thing (an amount, a share, an age).
_AMOUNT = re.compile(
    r"\b(?:how\s+(?:much|old|long|far|tall|high|big|large)|combien|quel(?:le)?\s+(?:est\s+"
    r"(?:le|la|l['’])\s*)?(?:pourcentage|proportion|part|taux|montant|prix|coût|âge|"
    r"superficie|population|durée|distance|altitude|hauteur|longueur|taille|température)|"
    r"what\s+(?:is\s+the\s+)?(?:percentage|proportion|share|amount|price|cost|age|size|"
    r"population|temperature|distance))\b",
    re.IGNORECASE,
)
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
# Counted nouns too general to look for beside the number ("combien de temps": years, days).
_VAGUE = frozenset({"temps", "fois", "time", "times", "personnes", "people", "gens"})
# Words around a number in which the counted thing is looked for: "plus de mille
# spécialistes nord-coréens", "4 200 pièces", "un train sur trois".
_BEFORE, _AFTER = 3, 5


@dataclass(frozen=True)
class Asked:
    """What a question asks for: ``kind`` is None, "number" or "date"; ``counted`` is the
    counted noun of a "how many" question, when it names one."""

    kind: str | None
    counted: str | None = None


def expected(question: str, is_stop: Callable[[str], bool]) -> Asked:
    """The answer type of ``question``; ``is_stop`` tells function words (ends a noun phrase)."""
    if _WHEN.search(question):
        return Asked("date")
    count = _COUNT.search(question)
    if count:
        english = count.group(0).lower().startswith(("how", "what"))
        return Asked("number", _counted(question[count.end() :], english, is_stop))
    if _AMOUNT.search(question):
        return Asked("number")
    return Asked(None)


def _counted(rest: str, english: bool, is_stop: Callable[[str], bool]) -> str | None:
    """The counted noun after "how many"/"combien de": French names it first ("soldats
    nord-coréens"), English last ("North Korean soldiers"), so the phrase up to the first
    function word is read and its last plural taken, else its first word."""
    phrase = []
    for word in _TOKEN.findall(rest.lower()):
        if is_stop(word) or word.isdigit():
            break
        phrase.append(word)
    if not phrase:
        return None
    plural = [w for w in phrase if w.endswith(("s", "x")) and len(w) > 3]
    noun = plural[-1] if english and plural else phrase[0]
    return None if noun in _VAGUE else noun


def _is_number(token: str) -> bool:
    """Digits or a number word ("mille", "dozen"): what can state a quantity."""
    return token.isdigit() or fold(token) in _NUMBER_WORDS


def support(asked_for: Asked, sentence: str, similar: Callable[[str, str], float]) -> float:
    """How well ``sentence`` can answer what was asked, 0..1 (1: nothing in particular asked).

    ``similar(a, b)`` scores two words 0..1 (1 = translations); the counted noun must match
    a word near a number."""
    if asked_for.kind is None:
        return 1.0
    tokens = _TOKEN.findall(sentence)
    if asked_for.kind == "date":
        return float(any(t.isdigit() or fold(t) in _DATE_WORDS for t in tokens))
    at = [i for i, t in enumerate(tokens) if _is_number(t)]
    if not at:
        return 0.0
    noun = asked_for.counted
    if noun is None:
        return 1.0
    stems = set(tokenize(noun))
    best = 0.0
    for i in at:
        for word in tokens[max(0, i - _BEFORE) : i + 1 + _AFTER]:
            if _is_number(word):
                continue
            if stems and set(tokenize(word)) == stems:
                return 1.0
            best = max(best, similar(noun, word.lower()))
    return best
