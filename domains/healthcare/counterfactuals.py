"""Counterfactual probes for clinical notes: sex words, the stated age, a stated race, surnames.

The generator writes sex into the age phrase ("58 yo F", "72-year-old man"), pronouns and
relatives ("her daughter"); age into the age phrase; race nowhere (it is stated here, as a
registration line would). Each pair keeps the record's own text as its first member, so a probe
costs one generation per record. `tasks/fairness.py` re-asks the student on each pair.
"""

from __future__ import annotations

import re

from domains.counterfactuals import changed, stated, surnames, swap_words

SEX_WORDS = {  # one direction each: "her" is mostly possessive in notes, so it becomes "his"
    "woman": "man", "man": "woman", "female": "male", "male": "female", "she": "he", "he": "she",
    "her": "his", "his": "her", "him": "her", "herself": "himself", "himself": "herself",
    "wife": "husband", "husband": "wife", "daughter": "son", "son": "daughter", "sister": "brother",
    "brother": "sister", "mother": "father", "father": "mother", "niece": "nephew", "nephew": "niece",
    "granddaughter": "grandson", "grandson": "granddaughter", "mrs": "mr", "ms": "mr", "mr": "ms",
}
# "58 yo F", "58yoF", "58-year-old M": the sex letter right after an age phrase.
_AGE_SEX = re.compile(r"(\b\d{1,3}\+?\s?(?:yo|y/o|y\.o\.|-year-old|year-old|year old)\s?)([FM])\b")
_AGE = re.compile(r"\b(\d{1,3})(\+?\s?(?:yo|y/o|y\.o\.|-year-old|year-old|year old))", re.IGNORECASE)


def swap_sex(text: str) -> str:
    text = _AGE_SEX.sub(lambda m: m.group(1) + {"F": "M", "M": "F"}[m.group(2)], text)
    return swap_words(text, SEX_WORDS)


def swap_age(text: str) -> str:
    """Middle-aged or older (>= 45) becomes 30; younger becomes 75: another age band, same note."""
    return _AGE.sub(lambda m: ("30" if int(m.group(1)) >= 45 else "75") + m.group(2).lstrip("+"), text)


PROBES = {
    "sex": lambda text: changed(text, swap_sex),
    "age_band": lambda text: changed(text, swap_age),
    "race": stated("Race", "Black"),
    "surname": surnames,
}
