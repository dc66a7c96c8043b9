"""Counterfactual rewrites shared by `domains/<d>/counterfactuals.py` (the fairness stage's probes).

Each domain's module exposes `PROBES: dict[str, Callable[[str], tuple[str, str] | None]]`: a
probe name (the attribute its cue stands for) -> a function of a de-identified record text that
returns two texts differing only in that cue, or None when the text carries no such cue. The
student should answer both the same way (Garg et al., 2019, counterfactual token fairness).
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A surname that carries an ethnic cue and appears in no generator or surrogate pool (a probe
# text must never look like planted PHI). The surrogate pool's names read as Anglo/European.
SURNAME = "Gutierrez"


def swap_words(text: str, table: dict[str, str]) -> str:
    """Replace whole words by `table` (lower-case keys), in one pass, keeping each word's case."""
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, table), key=len, reverse=True)) + r")\b", re.IGNORECASE)

    def repl(m: re.Match) -> str:
        word, new = m.group(0), table[m.group(0).lower()]
        if word.isupper() and len(word) > 1:
            return new.upper()
        return new[0].upper() + new[1:] if word[0].isupper() else new

    return pattern.sub(repl, text)


def changed(text: str, rewrite: Callable[[str], str]) -> tuple[str, str] | None:
    """(text, rewrite(text)), or None when the rewrite finds no cue to change."""
    new = rewrite(text)
    return (text, new) if new != text else None


def stated(prefix: str, value: str) -> Callable[[str], tuple[str, str]]:
    """A cue the text does not carry, stated in a first line: (text, "<prefix>: <value>.\n" + text).

    Pairs share the unchanged text, so each probe costs one generation more per record."""
    return lambda text: (text, f"{prefix}: {value}.\n{text}")


def surnames(text: str) -> tuple[str, str] | None:
    """(text, text with every surrogate surname of tasks/deidentify.py's pool made `SURNAME`)."""
    from tasks.deidentify import (
        FAKE_LAST,  # lazy: only the probes need the surrogate pool
    )

    pattern = re.compile(r"\b(" + "|".join(map(re.escape, FAKE_LAST)) + r")\b", re.IGNORECASE)
    if not pattern.search(text):
        return None
    return text, pattern.sub(lambda m: SURNAME.upper() if m.group(0).isupper() else SURNAME, text)
