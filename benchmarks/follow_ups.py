"""Follow-up questions without an LLM: quoted right, searched alone vs with the content
words of the question before carried over (why ``rag.ui.followup`` carries nothing).

Each pair is a first question and a follow-up that names its subject only by a pronoun or
an ellipsis, over the seed article, in English and in French; a follow-up is right when
the answer (not a refusal) quotes the sentence holding the expected words. Offline,
extractive answers, seed index built in a temporary data dir.

Usage: python -m benchmarks.follow_ups
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from rag.config import Settings
from rag.service import RagService
from rag.text import fold, stopwords
from rag.ui.followup import is_follow_up

ROOT = Path(__file__).resolve().parent.parent
# (first question, follow-up, words the right sentence holds)
PAIRS = [
    (
        "How many North Korean specialists are in the Kursk region?",
        "And what will they produce?",
        "munitions",
    ),
    (
        "How many experts does the overall plan provide for?",
        "What will they repair?",
        "réparation des routes",
    ),
    (
        "Is North Korea developing its own drone production?",
        "And what does it show?",
        "ne se limite pas",
    ),
    ("Where are drones made in Russia?", "How many employees will it have?", "quarante mille"),
    (
        "Combien de spécialistes nord-coréens sont dans la région de Kursk ?",
        "Et que vont-ils produire ?",
        "munitions",
    ),
    (
        "Combien d'experts le plan global prévoit-il ?",
        "Que vont-ils réparer ?",
        "réparation des routes",
    ),
    (
        "Où sont fabriqués des drones en Russie ?",
        "Combien d'employés comptera-t-elle ?",
        "quarante mille",
    ),
    (
        "Que deviennent les étrangers qui travaillent à Yelabuga ?",
        "Et ceux qui sont recrutés ?",
        "supervision directe",
    ),
]


def search_question(question: str, previous: str) -> str:
    """``question`` with ``previous``'s content words, when it reads as a follow-up."""
    if not is_follow_up(question):
        return question
    words = [w for w in re.findall(r"[^\W\d_]+(?:['’-][^\W\d_]+)*", previous)]
    subject = " ".join(w for w in words if fold(w) not in stopwords())
    return f"{question} ({subject})"


def right(service: RagService, question: str, expected: str) -> bool:
    answer = service.ask(question)
    return not answer.abstained and any(expected in c.quote for c in answer.citations)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rag-follow-") as tmp:
        service = RagService(Settings(data_dir=Path(tmp) / "data", llm_model=None))
        service.ingest([ROOT / "seeds"], show_progress=False)
        alone = carried = 0
        for first, follow_up, expected in PAIRS:
            searched = search_question(follow_up, first)
            a, c = right(service, follow_up, expected), right(service, searched, expected)
            alone, carried = alone + a, carried + c
            print(f"{'ok ' if a else 'bad'} -> {'ok ' if c else 'bad'}  {searched}")
    n = len(PAIRS)
    print(
        f"follow-ups quoted right ({n} pairs, EN+FR, extractive): searched alone {alone}/{n}, "
        f"with the previous question's words {carried}/{n}"
    )


if __name__ == "__main__":
    main()
