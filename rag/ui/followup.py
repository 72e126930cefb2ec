"""Which questions are follow-ups: the page says when one is searched on its own.

With an LLM, the service rewrites a follow-up into a standalone question from the
conversation. Without one, each question is searched alone. Carrying the last question's
content words into a follow-up was measured (``python -m benchmarks.follow_ups``, 8 pairs in
English and French over the seed article, 2026-12-07): 7/8 follow-ups were quoted right
searched alone, 4/8 with the subject carried over (it pulls the search back to the
previous answer's sentence). So nothing is carried; a question that reads as a follow-up
(it opens with "and"/"et", or names its subject only by a pronoun, and is short) gets a
note that follow-ups work best with a language model configured.
"""

from __future__ import annotations

import re

# Opening words and pronouns that point back to an earlier question's subject. French "il"
# (also as "-t-il") and "y" are left out: "combien y a-t-il …" is a question of its own.
_OPENING = re.compile(r"(?i)^\s*(?:and|et|also|aussi|what\s+about|and\s+what\s+about|et\s+pour)\b")
_PRONOUN = re.compile(
    r"(?i)\b(?:they|them|their|theirs|it|its|he|she|him|his|her|those|these|ils|elles|eux|"
    r"leur|leurs|ceux|celles|celui|celle|ces\s+derniers)\b|-(?:ils|elles|elle)\b"
)
# A follow-up is short: a longer question names its subject itself. Over the pairs of
# benchmarks/follow_ups.py the follow-ups have 4 to 8 words.
MAX_FOLLOW_UP_WORDS = 10
FOLLOW_UP_HINT = (
    "Searched on its own: without a language model, a follow-up does not carry over what "
    "the last question was about. Name the subject again, or configure a language model "
    "(follow-ups work best with one)."
)
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*|\d+")


def is_follow_up(question: str) -> bool:
    """Whether ``question`` leans on the one before it for its subject (see the module)."""
    short = len(_WORD.findall(question)) <= MAX_FOLLOW_UP_WORDS
    return short and bool(_OPENING.search(question) or _PRONOUN.search(question))
