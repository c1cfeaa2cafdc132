"""Answer normalization shared by verifiers (voting, grounding) and evaluation (EM, F1)."""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# Units spelled out or abbreviated name the same quantity: "8,848.86 metres" equals "8848.86 m".
_UNITS = {
    "square kilometres": "km2", "square kilometers": "km2", "km²": "km2", "sq km": "km2",
    "square miles": "mi2", "sq mi": "mi2", "kilometres": "km", "kilometers": "km",
    "kilometre": "km", "kilometer": "km", "metres": "m", "meters": "m", "metre": "m",
    "meter": "m", "feet": "ft", "foot": "ft", "miles": "mi", "mile": "mi",
    "km2": "km2", "mi2": "mi2", "km": "km", "m": "m", "ft": "ft", "mi": "mi",
}
_UNIT = re.compile(r"(?<=\d) ?(" + "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
                   + r")\b")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")


def normalize_answer(text: str) -> str:
    """SQuAD/FlashRAG normalization: lower-case, drop punctuation and articles, collapse spaces;
    before that, thousands separators are dropped and a unit after a number is abbreviated, so
    "8,848.86 metres" and "8848.86 m" compare equal (a different unit still differs)."""
    text = _THOUSANDS.sub("", text.lower())
    text = _UNIT.sub(lambda m: " " + _UNITS[m.group(1)], text)
    text = text.translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())
