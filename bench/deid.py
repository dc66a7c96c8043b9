"""De-identification quality and speed: Stillhouse's de-identifier vs Presidio's defaults, one run.

    python bench/deid.py                       # both corpora, both systems
    python bench/deid.py --corpus clinical --n 2000 --show-misses 20

Corpora, each with gold character spans:
  presidio_synth  ../shared/data/presidio_synth/synth_dataset_v2.json (1,500 short sentences by
                  Microsoft's presidio-research; Faker-made names, addresses and ids);
  clinical        bench/clinical_notes.py: ~800-character notes in nursing (UPPER CASE),
                  progress, discharge and triage styles with every Safe Harbor format.
Systems, on the same texts:
  presidio        `AnalyzerEngine()` with its predefined recognizers on the same spaCy model,
                  `analyze(text)` one note at a time (Presidio's documented loop);
  stillhouse      `tasks.deidentify.detect` with the healthcare domain (what the stage runs).

Scores per category (names, dates, ids, phones, locations, other), type-agnostic because
what matters for privacy is whether the characters are gone, not what they were called:
  span recall     gold spans whose every identifying letter and digit is inside some predicted span;
  char recall     gold identifying letters and digits inside predicted spans;
  char precision  predicted letters and digits (of the category's predicted types) inside gold spans.
Identifying: every letter and digit of a gold span except the parts Safe Harbor lets a record
keep or that name no one, by the same rule for both systems (`exempt_chars`): in a place or
address span a country or US state name ("Uruguay", "Cyprus (Greek)"; as a whole span these
are "PERMITTED", see `safe_harbor_view`) and Faker's "nan" for a missing region; in a name span
a leading title or a trailing credential ("Dr.", "Mrs.", "MD", "DDS"). So a gold block
"6750 Koskikatu 25 Apt. 864\nArtilleros\n, CO\n Uruguay 64677" counts as recalled when street,
unit, town, region code and postcode are covered, even though "Uruguay" stays.
Speed: notes/s of the analysis alone (models loaded before the clock starts), and the ratio.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "presidio_synth" / "synth_dataset_v2.json"
CATEGORIES = ("names", "dates", "ids", "phones", "locations", "other")
TARGETED = ("names", "dates", "ids", "phones", "locations")

GOLD = {  # gold entity type (or clinical "kind") -> category
    "PERSON": "names", "DATE_TIME": "dates", "DATE": "dates",
    "CREDIT_CARD": "ids", "IBAN_CODE": "ids", "US_SSN": "ids", "US_DRIVER_LICENSE": "ids", "ID": "ids",
    "PHONE_NUMBER": "phones", "PHONE": "phones",
    "STREET_ADDRESS": "locations", "GPE": "locations", "ZIP_CODE": "locations", "LOCATION": "locations",
}
PREDICTED = {  # predicted entity type -> category (unlisted types count as "other")
    "PERSON": "names", "DATE_TIME": "dates", "PHONE_NUMBER": "phones",
    **dict.fromkeys(("LOCATION", "STREET_ADDRESS", "ZIP_CODE", "HOSPITAL", "SCHOOL", "GPE", "WARD"), "locations"),
    **dict.fromkeys(("MEDICAL_RECORD_NUMBER", "ACCOUNT_NUMBER", "HEALTH_PLAN_ID", "US_NPI", "US_SSN", "CREDIT_CARD",
                     "IBAN_CODE", "US_DRIVER_LICENSE", "US_HEALTH_INSURANCE_MEMBER_ID", "US_MBI", "STUDENT_ID",
                     "DEA_NUMBER", "LICENSE_NUMBER", "DEVICE_ID", "VEHICLE_ID", "US_BANK_NUMBER", "US_PASSPORT",
                     "US_ITIN", "MEDICAL_LICENSE", "ID"), "ids"),
}


_WEEKDAY = re.compile(r"(?i)(?:mon|tues|wednes|thurs|fri|satur|sun)day")
_ISO_TIME = re.compile(r"(\d{4}-\d\d-\d\d)[ T]\d\d:\d\d(?::\d\d)?")


@functools.lru_cache(maxsize=1)
def _kept_places() -> frozenset[str]:
    """Countries and US states (Faker's lists): Safe Harbor lets a record keep them."""
    from faker.providers.address.en_US import Provider

    return frozenset(p.lower() for p in (*Provider.countries, *Provider.states, "United States", "USA", "UK"))


_TITLE = re.compile(r"^(?:(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+)+", re.IGNORECASE)
_CREDENTIAL = re.compile(r"(?:,?\s+(?:MD|M\.D\.|DDS|DMD|DVM|PhD|RN|NP|Esq\.?))+$")
_NAN = re.compile(r"(?<![\w'])nan(?![\w'])")  # Faker writes a missing region as "nan"


@functools.lru_cache(maxsize=1)
def _kept_place_pattern() -> re.Pattern:
    """Country and US state names (Faker's lists and pycountry's ISO 3166 names), with an
    optional qualifier in parentheses ("Cyprus (Greek)"), as whole words in any case."""
    import pycountry

    names = set(_kept_places())
    names |= {n.lower() for c in pycountry.countries for n in (c.name, getattr(c, "common_name", c.name))}
    names = sorted((n for n in names if "," not in n), key=len, reverse=True)
    return re.compile(r"(?<![\w'])(?:" + "|".join(map(re.escape, names)) + r")(?:\s\([^)\n]{1,20}\))?(?![\w'])",
                      re.IGNORECASE)


def exempt_chars(span: dict, text: str) -> set[int]:
    """Positions in a gold span that identify no one (see the module docstring): countries, US
    states and "nan" in place spans; a leading title and trailing credentials in name spans."""
    start, end, kind = span["start"], span["end"], span["entity_type"]
    value, out = text[start:end], set()
    if GOLD.get(kind) == "locations":
        for pattern in (_kept_place_pattern(), _NAN):
            for m in pattern.finditer(value):
                out.update(range(start + m.start(), start + m.end()))
    elif GOLD.get(kind) == "names":
        if m := _TITLE.match(value):
            out.update(range(start, start + m.end()))
        if m := _CREDENTIAL.search(value):
            out.update(range(start + m.start(), end))
    return out


def safe_harbor_view(span: dict, text: str) -> dict:
    """Presidio's gold marks some values Safe Harbor lets a de-identified record keep (45 CFR
    164.514(b)(2)(i)(B), (C)): a year, a weekday or a clock time alone, a country or US state, an
    age under 90, and Faker's "nan" for a missing region. Those become "PERMITTED" (scored under
    "other"); "2006-04-07 09:00:27" keeps its date."""
    value, kind = text[span["start"]:span["end"]], span["entity_type"]
    if kind == "DATE_TIME" and (re.fullmatch(r"(?:19|20)\d\d|\d{1,2}:\d\d(?::\d\d)?", value)
                                or _WEEKDAY.fullmatch(value)):
        return {**span, "entity_type": "PERMITTED"}
    if kind == "DATE_TIME" and (m := _ISO_TIME.fullmatch(value)):
        return {**span, "end": span["start"] + len(m[1])}
    if kind == "GPE" and value.lower() in _kept_places() or kind == "AGE" and value.isdigit() and int(value) < 90:
        return {**span, "entity_type": "PERMITTED"}
    exempt = exempt_chars(span, text)
    if exempt and all(i in exempt for i in range(span["start"], span["end"]) if text[i].isalnum()):
        return {**span, "entity_type": "PERMITTED"}  # "nan", "Cyprus (Greek)": nothing to remove
    return span


def load_presidio_synth(path: Path = SHARED) -> list[dict]:
    rows = json.loads(path.read_text())
    notes = []
    for i, r in enumerate(rows):
        spans = [{"start": s["start_position"], "end": s["end_position"], "entity_type": s["entity_type"]}
                 for s in r["spans"]]
        notes.append({"id": f"synth-{i}", "text": r["full_text"],
                      "spans": [safe_harbor_view(s, r["full_text"]) for s in spans]})
    return notes


# Unit types every hospital has are not identifiers of anyone; the corpus marks them WARD.
GENERIC_UNITS = frozenset("ICU MICU SICU CCU CVICU NICU PICU PACU ED ER OR TICU NSICU".split())


def load_clinical(n: int, seed: int) -> list[dict]:
    from bench.clinical_notes import generate
    notes = generate(n, seed)
    for note in notes:
        for s in note["spans"]:
            if s.get("kind") == "WARD" and s["value"].upper() in GENERIC_UNITS:
                s["entity_type"] = "GENERIC_UNIT"  # scored under "other"
    return notes


def _mask(text: str, spans) -> list[bool]:
    covered = [False] * len(text)
    for start, end in spans:
        for i in range(max(0, start), min(end, len(text))):
            covered[i] = True
    return covered


def score(notes: list[dict], predictions: list[list[tuple[int, int, str]]]) -> dict:
    """Span recall, char recall and char precision per category (see the module docstring)."""
    spans_total, spans_hit = Counter(), Counter()
    gold_chars, gold_hit = Counter(), Counter()
    pred_chars, pred_hit = Counter(), Counter()
    misses, false_positives = defaultdict(list), defaultdict(list)
    for note, pred in zip(notes, predictions, strict=True):
        text = note["text"]
        covered = _mask(text, [(a, b) for a, b, _ in pred])
        in_gold = _mask(text, [(s["start"], s["end"]) for s in note["spans"]])
        for s in note["spans"]:
            category = GOLD.get(s["entity_type"], "other")
            exempt = exempt_chars(s, text)
            chars = [i for i in range(s["start"], s["end"]) if text[i].isalnum() and i not in exempt]
            hit = sum(covered[i] for i in chars)
            spans_total[category] += 1
            gold_chars[category] += len(chars)
            gold_hit[category] += hit
            if hit == len(chars):
                spans_hit[category] += 1
            else:
                misses[category].append((s["entity_type"] + ("/" + s["kind"] if s.get("kind") else ""),
                                         text[s["start"]:s["end"]], text[max(0, s["start"] - 40):s["end"] + 40]))
        for a, b, entity in pred:
            category = PREDICTED.get(entity, "other")
            chars = [i for i in range(a, b) if text[i].isalnum()]
            pred_chars[category] += len(chars)
            hit = sum(in_gold[i] for i in chars)
            pred_hit[category] += hit
            if hit < len(chars):
                false_positives[category].append((entity, text[a:b], text[max(0, a - 40):b + 40]))
    table = {}
    for c in CATEGORIES:
        table[c] = {
            "spans": spans_total[c],
            "span_recall": spans_hit[c] / spans_total[c] if spans_total[c] else None,
            "char_recall": gold_hit[c] / gold_chars[c] if gold_chars[c] else None,
            "char_precision": pred_hit[c] / pred_chars[c] if pred_chars[c] else None,
        }
    table["all"] = {
        "spans": sum(spans_total.values()),
        "span_recall": sum(spans_hit.values()) / max(1, sum(spans_total.values())),
        "char_recall": sum(gold_hit.values()) / max(1, sum(gold_chars.values())),
        "char_precision": sum(pred_hit.values()) / max(1, sum(pred_chars.values())),
    }
    return {"table": table, "misses": misses, "false_positives": false_positives}


TERMS = re.compile(r"\b(?:SOB|HTN|HLD|CHF|COPD|CAD|CKD|NSTEMI|STEMI|GERD|NKDA|PRN|BID|NPO|CXR|ABG|BMP|ECG|EKG|"
                   r"A&Ox\d|I&O|metoprolol|lasix|heparin|zosyn|keppra|eliquis|ondansetron|albuterol|ceftriaxone|"
                   r"Foley|Murphy's|Glasgow|Babinski|Braden|Apgar|Swan-Ganz|Parkinson's|Crohn's|Bell's)\b", re.I)


def terms_kept(notes: list[dict], predictions: list) -> tuple[int, int]:
    """Clinical terms outside gold spans that no predicted span touches: (kept, total)."""
    kept = total = 0
    for note, pred in zip(notes, predictions):
        gold = [(s["start"], s["end"]) for s in note["spans"]]
        for m in TERMS.finditer(note["text"]):
            if any(a < m.end() and m.start() < b for a, b in gold):
                continue  # "Foley, Kelsey" is a name
            total += 1
            kept += not any(a < m.end() and m.start() < b for a, b, _ in pred)
    return kept, total


def presidio_default():
    """Presidio's AnalyzerEngine with its defaults, on the same spaCy model (lg is not installable here)."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from tasks.deidentify import SPACY_MODEL, OfflineEmailRecognizer

    engine = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": SPACY_MODEL}]}).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    analyzer.registry.remove_recognizer("EmailRecognizer")  # the default one downloads a suffix list
    analyzer.registry.add_recognizer(OfflineEmailRecognizer())

    def run(texts: list[str]) -> list[list[tuple[int, int, str]]]:
        return [[(r.start, r.end, r.entity_type) for r in analyzer.analyze(text, language="en")] for text in texts]
    return run


def stillhouse(domain: str = "healthcare", n_process: int = 1, ner: bool = True):
    from collections import Counter

    from domains import get_domain
    from tasks.deidentify import build_analyzer, detect_all
    from tasks.params import Deidentify

    the_domain, config = get_domain(domain), Deidentify(n_process=n_process, ner=ner)
    build_analyzer(domain, ner)

    def run(texts: list[str]) -> list[list[tuple[int, int, str]]]:
        return [[(s.start, s.end, s.entity) for s in spans] for spans in detect_all(the_domain, texts, config, Counter())]
    return run


def timed(run, texts: list[str]) -> tuple[list, float]:
    from tasks.deidentify import forget_sentences

    forget_sentences()  # no system reuses the sentences an earlier one tagged (workers fork the memo)
    run(texts[:8])  # warm-up: lazy imports, regex compilation
    start = time.perf_counter()
    out = run(texts)
    return out, time.perf_counter() - start


def fmt(x: float | None) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=("presidio_synth", "clinical", "both"), default="both")
    ap.add_argument("--n", type=int, default=1000, help="clinical notes to generate")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--systems", default="presidio,stillhouse")
    ap.add_argument("--show-misses", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write all scores here")
    ap.add_argument("--plot", type=Path, help="write a PNG of span recall and char precision per category")
    args = ap.parse_args()

    corpora = {}
    if args.corpus in ("presidio_synth", "both"):
        if SHARED.exists():
            corpora["presidio_synth"] = load_presidio_synth()
        else:
            print(f"skipping presidio_synth: {SHARED} not found")
    if args.corpus in ("clinical", "both"):
        corpora["clinical"] = load_clinical(args.n, args.seed)
    systems = {"presidio": presidio_default, "stillhouse": stillhouse,
               "stillhouse-2proc": lambda: stillhouse(n_process=2),  # worker processes from 1,000 notes
               "stillhouse-noner": lambda: stillhouse(ner=False),
               "stillhouse-noner-2proc": lambda: stillhouse(n_process=2, ner=False)}
    runners = {name: systems[name]() for name in args.systems.split(",")}

    results = {}
    for corpus, notes in corpora.items():
        texts = [n["text"] for n in notes]
        chars = sum(map(len, texts)) / len(texts)
        print(f"\n== {corpus}: {len(notes)} notes, {chars:.0f} characters on average")
        speed = {}
        for name, run in runners.items():
            predictions, seconds = timed(run, texts)
            scored = score(notes, predictions)
            speed[name] = len(texts) / seconds
            results[corpus, name] = {"scores": scored["table"], "notes_per_s": speed[name]}
            print(f"-- {name}: {speed[name]:.1f} notes/s")
            print(f"   {'category':<10} {'spans':>6} {'span R':>7} {'char R':>7} {'char P':>7}")
            for c, row in scored["table"].items():
                print(f"   {c:<10} {row['spans']:>6} {fmt(row['span_recall'])}  {fmt(row['char_recall'])}  "
                      f"{fmt(row['char_precision'])}")
            wrong = Counter(value.strip().lower() for c in CATEGORIES for _, value, _ in scored["false_positives"][c])
            print(f"   false positives: {sum(wrong.values())} spans; most frequent: "
                  + ", ".join(f"{v!r} x{k}" for v, k in wrong.most_common(8)))
            kept = terms_kept(notes, predictions)
            print(f"   clinical terms kept (abbreviations, drugs, eponyms): {kept[0]} of {kept[1]}")
            if args.show_misses and name == "stillhouse":
                for c in CATEGORIES:
                    for kind, value, context in scored["misses"][c][:args.show_misses]:
                        print(f"   MISS {c:<9} {kind:<18} {value!r:<32} …{context!r}")
                    for kind, value, context in scored["false_positives"][c][:args.show_misses]:
                        print(f"   FP   {c:<9} {kind:<18} {value!r:<32} …{context!r}")
        for name in speed:
            if name != "presidio" and "presidio" in speed:
                print(f"speed-up {name} / presidio default loop: {speed[name] / speed['presidio']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({f"{c}/{s}": v for (c, s), v in results.items()}, indent=1))
    if args.plot:
        plot(results, args.plot)


def plot(results: dict, path: Path) -> None:
    """Span recall and character precision per category, one panel per corpus, a bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = sorted({c for c, _ in results})
    fig, axes = plt.subplots(2, len(corpora), figsize=(6 * len(corpora), 6), squeeze=False)
    for col, corpus in enumerate(corpora):
        systems = [s for c, s in results if c == corpus]
        for row, metric in enumerate(("span_recall", "char_precision")):
            ax = axes[row][col]
            for k, system in enumerate(systems):
                table = results[corpus, system]["scores"]
                values = [table[c][metric] or 0 for c in TARGETED]
                ax.bar([i + k * 0.8 / len(systems) for i in range(len(TARGETED))], values,
                       width=0.8 / len(systems), label=f"{system} ({results[corpus, system]['notes_per_s']:.0f} notes/s)")
            ax.axhline(0.98 if metric == "span_recall" else 0.75, color="grey", linestyle="--", linewidth=1)
            ax.set_xticks([i + 0.4 - 0.4 / len(systems) for i in range(len(TARGETED))], TARGETED)
            ax.set_ylim(0, 1.05)
            ax.set_title(f"{corpus}: {metric.replace('_', ' ')}")
            ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
