"""Counterfactual probes for tutoring logs: gendered words, English-learner status and phrasing,
school locale, surnames.

The generator writes gender through pronouns and guardians ("she", "his", "mother"); learner
status and locale nowhere, so they are stated; English-learner phrasing drops articles and the
copula from the text, as a beginner's English would, without touching any number.
"""

from __future__ import annotations

import re

from domains.counterfactuals import changed, stated, surnames, swap_words

GENDER_WORDS = {
    "she": "he", "he": "she", "her": "his", "his": "her", "him": "her", "herself": "himself",
    "himself": "herself", "girl": "boy", "boy": "girl", "mother": "father", "father": "mother",
    "aunt": "uncle", "uncle": "aunt", "grandmother": "grandfather", "grandfather": "grandmother",
    "daughter": "son", "son": "daughter", "sister": "brother", "brother": "sister",
}
_LEARNER = re.compile(r"\b(?:the|a|an|is|are)\s+", re.IGNORECASE)


def learner_phrasing(text: str) -> str:
    """"There are 12 apples in a bin." -> "There 12 apples in bin.": same numbers, learner syntax."""
    return _LEARNER.sub("", text)


PROBES = {
    "gender": lambda text: changed(text, lambda t: swap_words(t, GENDER_WORDS)),
    "ell": lambda text: (text, f"{text}\nStudent is an English learner (ELL), receives ESL support."),
    "ell_phrasing": lambda text: changed(text, learner_phrasing),
    "school_type": stated("School setting", "rural"),
    "surname": surnames,
}
