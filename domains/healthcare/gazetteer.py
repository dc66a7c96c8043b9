"""Names that no cue gives away, told by gazetteers of given names and surnames.

A name with no title, role or label before it ("Why is Natasja so quiet?", "Marrero and Quist
were there", "follow up with olga krylova") is found by what the word is rather than where it
stands: a given name (gender-guesser's list of ~45,000 names from 50 countries, Faker's lists)
or a surname (Faker's lists of 70 locales), checked against an English dictionary (the
lower-case entries of GCIDE and Webster's 2nd, english-words) so that "Will", "Grace" or "Brown"
alone stay: a word that is also an English word counts as a name only beside another name.

Rules, each on capitalised words in mixed-case text (an UPPER-CASE note is left to the
patterns) and on lower-case words only in a sentence typed all in lower case, where case tells
nothing:
  pair       a given name then a surname or a word no dictionary knows, or an unknown word then
             a surname ("Maha Cazares", "Lina Artemova", "patricia desrosiers", "eric g. seiler");
  single     a gazetteer name that is no English word ("Natasja", "Živković", "cormac");
  list       coordinated single words ("Graves, Monjeau and Reed"), each a gazetteer name or
             no English word, one of them a gazetteer name (no clinical term), one no English word.
Never a name: allow-listed clinical terms (`ALLOW`), note words (`STOP`), English stop words,
months, weekdays, countries and US states (Safe Harbor keeps those).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from pathlib import Path

import regex
from presidio_analyzer import EntityRecognizer, RecognizerResult

from domains.healthcare.recognizers import is_upper_case

# the gazetteers' Latin-script entries (the text is matched in any script)
_LATIN = re.compile(r"[A-Za-z\u00C0-\u024F'’-]+")


@functools.lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """Given names, lower case: gender-guesser's nam_dict (single names only) and Faker's lists."""
    import gender_guesser

    names = set()
    path = Path(gender_guesser.__file__).parent / "data" / "nam_dict.txt"
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line[:1] not in "#=" and len(parts := line.split()) > 1 and "+" not in parts[1]:
                names.add(parts[1].lower())
    names |= _faker_names(("first_names", "first_names_male", "first_names_female", "first_names_nonbinary"))
    return frozenset(n for n in names if _LATIN.fullmatch(n) and len(n) > 1)


@functools.lru_cache(maxsize=1)
def surnames() -> frozenset[str]:
    """Surnames, lower case: Faker's lists across its locales (Latin script)."""
    names = _faker_names(("last_names", "last_names_male", "last_names_female"))
    return frozenset(n for n in names if _LATIN.fullmatch(n) and len(n) > 1)


def _faker_names(attributes: tuple[str, ...]) -> set[str]:
    import faker.providers.person as person

    names = set()
    for module in pkgutil.iter_modules(person.__path__):
        provider = getattr(importlib.import_module(f"{person.__name__}.{module.name}"), "Provider", None)
        for attribute in attributes:
            values = getattr(provider, attribute, None)
            if isinstance(values, (list, tuple, dict, set, frozenset)):  # some are properties
                names.update(v.lower() for v in values)
    return names


@functools.lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """Words an English dictionary lists in lower case (GCIDE and Webster's 2nd): "will", "brown"."""
    from english_words import get_english_words_set

    return frozenset(w for w in get_english_words_set(["gcide", "web2"], lower=False, alpha=True) if w.islower())


_INFLECTION = re.compile(r"(?:ies|es|s|ed|d|ing|er|ers|ly)$")


def is_english_word(word: str, words: frozenset[str]) -> bool:
    """`word` (lower case) or its stem is a dictionary word: the dictionaries list "sale", not "sales"."""
    if word in words:
        return True
    m = _INFLECTION.search(word)
    if not m or len(word) - len(m.group()) < 3:
        return False
    stem = word[:m.start()]
    return any(s in words for s in (stem, stem + "e", stem + "y", stem[:-1] if stem[-1:] == stem[-2:-1] else stem))


@functools.lru_cache(maxsize=1)
def never_names() -> frozenset[str]:
    """Words the gazetteers hold that are never taken for a name here (lower case)."""
    import pycountry
    from spacy.lang.en.stop_words import STOP_WORDS

    from domains.healthcare.recognizers import MONTHS, NOT_TOWNS, STOP

    words = {w.lower() for w in STOP_WORDS} | {w.lower() for w in STOP.split("|")}
    words |= {m.lower() for m in MONTHS} | {m[:3].lower() for m in MONTHS}
    words |= {d.lower() for d in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")}
    words |= {t.lower() for t in NOT_TOWNS}
    words |= {"hi", "hello", "hey", "dear", "bye", "thanks", "ok", "okay", "yes", "yeah", "sir", "madam"}  # "Hi Ana"
    words |= {n.lower() for c in pycountry.countries for n in (c.name, getattr(c, "common_name", c.name))}
    # the major languages ("English", "Norwegian"; not ISO 639-3's thousands, among them "Ari")
    words |= {lang.name.lower() for lang in pycountry.languages if hasattr(lang, "alpha_2") and " " not in lang.name}
    return frozenset(words)


_TOKEN = regex.compile(r"(?<![\p{L}\p{N}'’])\p{L}[\p{L}'’-]*(?<!['’-])")
_GAP = regex.compile(r"[ \t](?:\p{L}\.?[ \t])?")  # one space, or an initial between ("eric g. seiler")
_POSSESSIVE = re.compile(r"['’]s$", re.I)
_CONTRACTION = re.compile(r"['’](?:m|re|ve|ll|d|t)$")  # "I'm", "they'll": no names
_SENTENCE = regex.compile(r"(?:[^\n.!?]|(?<=(?<![\p{L}'’])\p{L})\.)+")  # an initial's dot ends no sentence


@functools.lru_cache(maxsize=65_536)  # notes repeat their words; the lookups are per word, not per place
def _word_facts(token: str) -> tuple[int, str, str, bool, bool, bool, bool, bool]:
    """(length without a possessive, key, case, never, allowed, first, last, common) of a token."""
    first, last, common, never, allow = GazetteerNameRecognizer._gazetteer()
    word = _POSSESSIVE.sub("", token)
    key = word.lower()
    case = "lower" if word.islower() else "title" if word[0].isupper() and not word.isupper() else \
        "upper" if word.isupper() else "mixed"
    is_never = key in never or bool(_CONTRACTION.search(key))
    allowed = key in allow  # a clinical term; an eponym ("Graves") may still be a name in a list
    return (len(word), key, case, is_never, allowed, key in first and not is_never, key in last and not is_never,
            is_never or is_english_word(key, common))


class _Word:
    __slots__ = ("start", "end", "key", "case", "first", "last", "common", "never", "allowed")

    def __init__(self, m):
        self.start = m.start()
        length, self.key, self.case, self.never, self.allowed, self.first, self.last, self.common = _word_facts(m.group())
        self.end = self.start + length

    @property
    def known(self) -> bool:
        return self.first or self.last

    @property
    def unambiguous(self) -> bool:  # a gazetteer name and no English word or clinical term
        return self.known and not self.common and not self.allowed


class GazetteerNameRecognizer(EntityRecognizer):
    """PERSON spans from the given-name and surname gazetteers (see the module docstring)."""

    # Presidio keeps the higher score of two PERSON results on one span: spaCy's (0.55) over a single
    # or a pair, a list item (0.56) over spaCy's, which the allow list would drop ("Graves")
    PAIR, SINGLE, LIST = 0.5, 0.45, 0.56

    def __init__(self):
        super().__init__(supported_entities=["PERSON"], name="GazetteerNameRecognizer")

    def load(self) -> None:
        pass

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def _gazetteer():
        from domains.healthcare.recognizers import ALLOW

        return first_names(), surnames(), english_words(), never_names(), ALLOW

    def analyze(self, text, entities, nlp_artifacts=None):
        if is_upper_case(text):
            return []  # an UPPER-CASE note: names come from the anchored patterns
        gazetteer, spans = self._gazetteer(), []
        for sentence in _SENTENCE.finditer(text):
            lower = not any(c.isupper() for c in sentence.group())
            words = [_Word(m) for m in _TOKEN.finditer(text, sentence.start(), sentence.end())]
            for w1, w2 in zip(words, words[1:]):  # neither word of a two-word place ("Puerto Rico") is a name
                if f"{w1.key} {w2.key}" in gazetteer[3] and text[w1.end:w2.start] == " ":
                    w1.never = w2.never = True
            words = [w for w in words if len(w.key) > 1 and not w.never
                     and (w.case == "title" or lower and w.case == "lower")]
            spans += self._pairs(text, words) + self._singles(words, lower) + self._lists(text, words)
        return [RecognizerResult("PERSON", a, b, score, recognition_metadata={
            RecognizerResult.RECOGNIZER_NAME_KEY: self.name, RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})
            for a, b, score in spans]

    def _pairs(self, text: str, words: list[_Word]) -> list[tuple[int, int, float]]:
        """A given name and a surname, one space (and maybe an initial) apart."""
        out = []
        for w1, w2 in zip(words, words[1:]):
            gap = text[w1.end:w2.start]
            if not _GAP.fullmatch(gap) or w1.allowed or w1.case != w2.case:
                continue
            given = w1.first and not w1.common  # "Tünde Hoffmann": an eponym after a given name is a surname
            if w2.allowed and not given:
                continue
            if (w1.first and w2.last and not (w1.common and w2.common)) or (given and not w2.common) \
                    or (not w1.common and w2.last and not w2.common) \
                    or (w1.first and w1.case == "title" and not w2.common):  # "Lina Artemova"
                out.append((w1.start, w2.end, self.PAIR))
        return out

    def _singles(self, words: list[_Word], lower: bool) -> list[tuple[int, int, float]]:
        """A gazetteer name that is no English word: three letters or more, four in lower case."""
        return [(w.start, w.end, self.SINGLE) for w in words
                if w.unambiguous and len(w.key) >= (4 if lower else 3)]

    _COORDINATION = regex.compile(r",[ \t]|,?[ \t](?:and|&)[ \t]")

    def _lists(self, text: str, words: list[_Word]) -> list[tuple[int, int, float]]:
        """Coordinated single words ("A, B and C"), each a name or no English word, one of them a
        gazetteer name that is no clinical term (an eponym among names is a name, "Marrero and
        Murphy"; not "mwf and parkinson"), one no English word."""
        out, run = [], []
        for w in words + [None]:
            if w is not None and run and w.case == run[-1].case \
                    and self._COORDINATION.fullmatch(text[run[-1].end:w.start]):
                run.append(w)
                continue
            if len(run) >= 2 and regex.search(r"and|&", text[run[-2].end:run[-1].start]) \
                    and all(x.known or not x.common for x in run) and any(x.known and not x.allowed for x in run) \
                    and any(not x.common for x in run):
                out += [(x.start, x.end, self.LIST) for x in run]
            run = [w] if w is not None else []
        return out
