"""Presidio recognizers for the HIPAA Safe Harbor identifiers in clinical notes.

45 CFR 164.514(b)(2) lists 18 identifier types; those that appear in free-text notes are
names, geographic units smaller than a state (street, city, ZIP), dates other than the year,
ages over 89, phone and fax numbers, email, SSN, medical record, health-plan and account
numbers, licence numbers (NPI), URLs and IP addresses. Presidio's predefined recognizers
(spaCy PERSON / LOCATION / DATE_TIME, phone, email, SSN, URL, IP) find the generic ones; the
pattern recognizers here add the clinical ones, each pattern anchored on its label or on a
title ("Dr.", "Ms.") so bare numbers in vitals and doses are left alone. `conversation_names`
adds the cues of chats, letters and stories (dialogue speakers, the person spoken to,
greetings and sign-offs, naming, "X lives at", the name line heading a signature block).

`ALLOW` lists clinical abbreviations, units, drug names and note headings that spaCy's small
model tags as PERSON / ORG / GPE; the de-identifier (tasks/deidentify.py) never redacts a span
that is one of them, and trims them off the edges of spaCy's guesses.

Patterns run with Presidio's default flags (case-insensitive); name-shaped parts are wrapped
in `(?-i:...)` because they must see capital letters (Title or UPPER case, see `_words`).
The `regex` module that Presidio uses accepts variable-length look-behind, which keeps labels
("MRN:") out of the span. The pattern helpers are shared with the education domain.
"""

from __future__ import annotations

import functools
import re

import regex
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import (
    UsHealthInsuranceMemberIdRecognizer,
    UsMbiRecognizer,
    UsNpiRecognizer,
)

ENTITIES = (
    "PERSON", "DATE_TIME", "AGE", "PHONE_NUMBER", "EMAIL_ADDRESS", "URL", "IP_ADDRESS",
    "LOCATION", "STREET_ADDRESS", "ZIP_CODE", "HOSPITAL", "ORGANIZATION",
    "MEDICAL_RECORD_NUMBER", "HEALTH_PLAN_ID", "ACCOUNT_NUMBER", "US_SSN", "US_NPI",
    "US_HEALTH_INSURANCE_MEMBER_ID", "US_MBI", "US_DEA", "LICENSE_NUMBER", "DEVICE_ID", "VEHICLE_ID",
    "CREDIT_CARD", "IBAN_CODE", "US_DRIVER_LICENSE", "US_PASSPORT", "US_BANK_NUMBER", "US_ITIN", "MEDICAL_LICENSE",
)

# Clinical abbreviations, units and drug names that must survive de-identification.
ALLOW = frozenset(w.lower() for w in """
SOB DOE PND CP HA N/V NBNB BRBPR HTN HLD DM DM1 DM2 IDDM NIDDM CKD ESRD CAD PCI CABG CHF HFrEF HFpEF COPD OSA
GERD IBS IBD BPH AF A-fib AFib Aflutter MI NSTEMI STEMI ACS CVA TIA SAH SDH ICH PE DVT UTI CAP HAP URI RVR
LBBB RBBB SVT VT VF PVC PAC JVD LE RLE LLE RUE LUE RUQ LUQ RLQ LLQ ECG EKG BP SBP DBP MAP HR RR SpO2 O2 NC
NRB RA CT CTA MRI MRA CXR KUB US ABG VBG BNP CBC BMP CMP LFTs LFT AST ALT ALP GGT BUN Cr Hgb Hct WBC PLT
Tbili INR PTT PT/INR TSH A1c HbA1c LP EEG EMG NIHSS GCS LKW ICU CCU MICU SICU ED ER OR PACU PCP MD RN NP PA
PO IV IM SC SQ SL PR BID TID QID QD QHS PRN NPO IVF LR NS D5W NGT OGT LIWS EGD ERCP TTP ADLs ADL A&O A&Ox2
A&Ox3 A&Ox4 AOx3 NTG ASA tPA TNK BiPAP CPAP MCA ICA ACA PCA RLL LLL RUL LUL RML NKDA NKA EF LVEF TTE TEE
DNR DNI POLST HCP SNF LTAC PT/OT OT SLP CM SW EtOH ETOH IVDU NAD WNL PERRLA EOMI RRR CTAB NTND HEENT ROS
HPI PMH PSH FHx SHx Pt Hx Dx Ddx Sx Tx Rx Fx s/p c/o w/ w/o h/o r/o f/u d/c y/o yo VS Labs Workup Impression
Assessment Plan Exam Results Vitals Contact Portal Records Electronically Signed Attending Insurance Member
Acct Address Triage Consult Admission Progress Note Emergency Department Encounter Urgent Care Visit Clinic
Nursing Provider Documentation Rapid Response Hospital Day Murphy's Bell's Foley Duonebs duoneb albuterol
ipratropium prednisone methylprednisolone solumedrol azithromycin ceftriaxone doxycycline oseltamivir
vancomycin zosyn cefepime levofloxacin aspirin heparin enoxaparin lovenox metoprolol carvedilol atorvastatin
rosuvastatin furosemide lasix diltiazem amiodarone digoxin clopidogrel plavix ticagrelor nitroglycerin
ondansetron zofran pantoprazole protonix famotidine morphine dilaudid hydromorphone fentanyl pip-tazo
piperacillin tazobactam levetiracetam keppra lorazepam ativan sumatriptan metoclopramide reglan insulin
metformin lisinopril losartan amlodipine hydrochlorothiazide warfarin coumadin apixaban eliquis rivaroxaban
xarelto acetaminophen tylenol ibuprofen ketorolac toradol gabapentin troponin trop lipase procalcitonin
lactate guaiac xanthochromia egophony rhonchi crackles wheezes dysarthria aphasia hemiparesis Cardiology
Pulmonology Neurology Neurosurgery Gastroenterology GI Telemetry Hospitalist Medicaid Medicare
Patient Name Date Service Seen Admit Signed Transferred Referred Brought Lives Resides Pain Heart Chest Abd
Email E-mail Portal Phone Fax Cell Med Rec Follow Follow-up Allergies Medications Meds Social Family History
Disposition Dispo CC Chief Complaint Physical Review Systems Procedures Imaging Diagnosis Discharge Summary
Husband Wife Son Daughter Mother Father Sister Brother Spouse Partner Niece Nephew Grandson Granddaughter
mg mcg g kg mL L R mmHg bpm units IU mEq meq mmol Aetna Cigna Humana Kaiser BCBS UnitedHealthcare Tricare
Dr Mr Mrs Ms Miss Mx Prof MRN SSI EMS VAC Caller Travel Symptoms Total Strength Updates Remote Tele Telemetry
Glasgow Apgar Guillain-Barre Guillain Barre Swan-Ganz Swan Ganz Barrett Barrett's Hodgkin Hodgkin's Hashimoto
Hashimoto's Graves Graves' Murphy Murphy's Homan Homan's Braden Babinski Parkinson Parkinson's Alzheimer
Alzheimer's Crohn Crohn's Bell Cushing Cushing's Addison Addison's Down Wells Romberg Kernig Brudzinski Trendelenburg
Valsalva Heimlich Whipple Nissen Roux-en-Y Kussmaul Cheyne-Stokes Korotkoff Tinel Phalen McMurray Lachman Hoffmann
Epley Dix-Hallpike Gram Wernicke Korsakoff Tourette Huntington Raynaud Sjogren Kawasaki Wilms Ewing Kaposi Meckel
Leiden Vitamin Level Zenker Mallory-Weiss Charcot Virchow Eliquis Keppra Zosyn Lopressor Coumadin Xarelto Lasix Norco Percocet Dilaudid
UOP Brief Course Bedside Telehealth Lic Harvard Pilgrim Walgreens CVS Smoker Continue Ambulated Repositioned BS Tufts MassHealth Aetna
Bactrim Flagyl Cipro Levaquin Augmentin Keflex Ativan Haldol Seroquel Zyprexa Ambien Protonix Zofran Tylenol Motrin
Apt Suite Ste BIBA BIBEMS cath
""".split())

@functools.lru_cache(maxsize=256)  # asked of each note by several recognizers and by span selection
def case_counts(text: str) -> tuple[int, int]:
    """(capital letters, letters) of a text."""
    return sum(map(str.isupper, text)), sum(map(str.isalpha, text))


def is_upper_case(text: str) -> bool:
    """An UPPER-CASE note (nursing style): over 80% of its letters are capitals."""
    upper, letters = case_counts(text)
    return upper > 0.8 * max(letters, 1)


def _split_lookbehind(pattern: str) -> tuple[str, str] | None:
    """`(?<=ANCHOR)VALUE` -> (ANCHOR, VALUE); None for a pattern that does not start so."""
    if not pattern.startswith("(?<="):
        return None
    depth, i = 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":  # skip a character class (it may hold parentheses)
            i += 1
            while i < len(pattern) and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return pattern[4:i], pattern[i + 1:]
        i += 1
    return None


class AnchoredRecognizer(PatternRecognizer):
    """Presidio's PatternRecognizer, with look-behind-anchored patterns run anchor first.

    `(?<=MRN:\\s*)\\d+` makes the regex engine try the look-behind at every character of the
    note; searching the anchors ("MRN:", each followed by its value) once and matching the value
    where each ends finds the same spans (up to overlapping anchors) several times faster. Other
    patterns run as in Presidio.
    """

    def __init__(self, *args, gate: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        flags = self.global_regex_flags
        # a cheap regex that any text with a match must contain (e.g. a street word before a number):
        # texts without it skip the recognizer's patterns
        self._gate = regex.compile(gate, flags) if gate else None
        self._compiled = []
        for p in self.patterns:
            split = _split_lookbehind(p.regex)
            # the anchor carries a look-ahead for the value, so that among its alternatives ("ph|phone")
            # the search backtracks to one the value follows, as the look-behind form would
            self._compiled.append((regex.compile(f"(?:{split[0]})(?={split[1]})", flags), regex.compile(split[1], flags))
                                  if split else (None, regex.compile(p.regex, flags)))

    def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):
        results = []
        if self._gate is not None and not self._gate.search(text):
            return results
        for p, (anchor, value) in zip(self.patterns, self._compiled):
            if anchor is None:
                spans = [m.span() for m in value.finditer(text)]
            else:
                spans = [v.span() for a in anchor.finditer(text) if (v := value.match(text, a.end()))]
            for start, end in spans:
                if start == end:
                    continue
                validation = self.validate_result(text[start:end])
                explanation = self.build_regex_explanation(self.name, p.name, p.regex, p.score, validation,
                                                           self.global_regex_flags)
                result = RecognizerResult(
                    entity_type=self.supported_entities[0], start=start, end=end, score=p.score,
                    analysis_explanation=explanation,
                    recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                          RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})
                if validation is not None:
                    result.score = EntityRecognizer.MAX_SCORE if validation else EntityRecognizer.MIN_SCORE
                if self.invalidate_result(text[start:end]):
                    result.score = EntityRecognizer.MIN_SCORE
                if result.score > EntityRecognizer.MIN_SCORE:
                    results.append(result)
        return EntityRecognizer.remove_duplicates(results)


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
SP = r"[ \t]"  # names and places never run across a line break
# Words that look like name tokens in headers and UPPER-CASE notes but never are (checked case-insensitively).
# Words that look like name tokens in headers and UPPER-CASE notes but never are (checked case-insensitively).
STOP = ("AT|TO|IN|ON|FOR|WITH|AND|OR|OF|THE|IS|WAS|WHO|HAS|HAD|FROM|BY|RE|CALLED|AGREES|BEDSIDE|MD|RN|DO|NP|PA|"
        "PHD|PT|PATIENT|CELL|PH|FAX|NPI|DEA|CARDIOLOGY|HOSPITALIST|PCP|AS|ABOUT|SAYS|REPORTS|STATES|NOTES|ARE|WILL|"
        "CAN|NOT|NO|WHILE|AFTER|BEFORE|TODAY|ROOM|GRADE|TUTOR|TEACHER|HUSBAND|WIFE|SON|DAUGHTER|MOTHER|FATHER|"
        "SISTER|BROTHER|SPOUSE|PARTNER|NIECE|NEPHEW|GRANDSON|GRANDDAUGHTER|GUARDIAN|CAREGIVER|AUNT|UNCLE|"
        "GRANDMOTHER|GRANDFATHER|EMERGENCY|CONTACT|NAME|DOB|MRN|ID|DR|MR|MRS|MS|MISS|MX|PROF|COACH|"
        "TRANSFERRED|ADMITTED|SEEN|REFERRED|FOLLOW-UP|FOLLOW|APPT|FOLLOWING|UPDATED|REACHABLE|REFUSED|RESTING|"
        "LEFT|WANTS|NOTIFIED|AWARE|PRESENT|BED|PAGER|CB|TEL|AGE|AGED|YO|THIS|AM|PM|TEAM|COVERING|CONSULTED|"
        "EXAMINED|JOINED|REQUESTS|TOLERATING|TOLERATED|AMBULATING|SLEEPING|VM|HCP|NOK|SW|CM|OT|SLP|PAGED|"
        "LIVES|RESIDES|VISITING|UNIT|FLOOR|CALLBACK|UPDATE|DISCUSSED|SPOKE|GIVEN|HELD|PLAN|ORDERS|DECLINED|"
        "INTERPRETER|USED|REQUESTED|PROTOCOL|PER|RECOMMENDS|REMOVED|PLACE|HOME|REHAB|TOTAL|TRAVEL|REMOTE|"
        "RESTRAINED|DRIVER|UNRESTRAINED|PASSENGER|SMOKER|CONTINUE|AMBULATED|REPOSITIONED|DENIES|ENDORSES|APT|SUITE|STE")
UP, LO = r"\p{Lu}", r"\p{Ll}"  # any script's capital and small letters ("Phạm", "ĐẶNG", "Núñez")
# The `(?=...)` test of the first letter comes before the STOP alternation, which would otherwise
# run at every word start (anchored patterns 15% faster, same matches).
NAME_TOKEN = (rf"(?=(?-i:{UP}))(?!(?i:{STOP})\b)(?-i:{UP}[{UP}'’]*{UP}(?:-{UP}+)?(?![{LO}])|"  # "D'ANGELO" before "D'"
              rf"{UP}[{LO}'’]+(?:{UP}{LO}+)?(?:-{UP}?{LO}+)?)")
# Words that start or end a "Title X Title" phrase without being a name
NOT_FIRST_NAMES = (r"vitamin|hepatitis|factor|type|group|grade|class|stage|phase|lead|leads|zone|level|levels|part|"
                   r"plan|appendix|figure|table|section|room|bed|unit|units|ward|floor|lot|batch|model|series|"
                   r"vaccine|antibody|antigen|deficiency|protein|strep|streptococcus|influenza|flu|blood|cell|cells|"
                   r"test|panel|score|scale|criteria|tier|block|dose|step|day|week|question|problem|item|page|"
                   r"chapter|lesson|module|round|string|result|results|positive|negative|status|mode|team|wing")
PARTICLE = r"(?-i:de|da|das|do|dos|del|della|di|du|van|von|der|den|ten|la|le|bin|ibn|al|el|y)"
INITIAL = rf"(?-i:{UP})\."
# "Patel", "K. Olsen", "Aisha Patel", "Amber J. Young", "María Elena Amaya", "Alana das Neves"
NAME = (rf"(?<![\p{{L}}'’])(?:{INITIAL}{SP}?)?{NAME_TOKEN}"
        rf"(?:{SP}(?:{INITIAL}{SP})?(?:{PARTICLE}{SP})?{NAME_TOKEN}){{0,3}}")
# "Cortes, Reynaldo R.", "Phạm, Hoàng", "FITZPATRICK, CURTIS"
LAST_FIRST = (rf"(?<![\p{{L}}'’])(?:(?i:de|da|das|do|dos|del|van|von|le|la|ten|di|du){SP})?{NAME_TOKEN}(?:[{SP}-]{NAME_TOKEN})?,{SP}"
              rf"{NAME_TOKEN}(?:{SP}{NAME_TOKEN})?(?:{SP}(?-i:{UP})\.?(?![\w]))?")
# names typed in lower case, only after a lower-case cue in a sloppy note ("hcp melissa", "dr. amanda shields")
_LOWER_TOKEN = rf"(?=(?-i:{LO}))(?!(?i:{STOP})\b)(?-i:{LO}[{LO}'’-]+)"
LOWER_NAME = (rf"(?:(?-i:{LO})\.{SP})?{_LOWER_TOKEN}(?:{SP}(?:(?-i:{LO})\.{SP})?{_LOWER_TOKEN}){{0,2}}"
              rf"(?:,{SP}{_LOWER_TOKEN}(?={SP}seen))?")


def _words(*phrases: str) -> str:
    """An alternation of phrases in Title and UPPER case, spaces as `SP` (for case-sensitive patterns)."""
    forms = [p for phrase in phrases for p in (phrase, phrase.upper())]
    return "(?:" + "|".join(re.escape(f).replace(r"\ ", SP) for f in dict.fromkeys(forms)) + ")"


def labeled(entity: str, name: str, labels: str, value: str, score: float, context: list[str] | None = None,
            next_line: bool = False) -> AnchoredRecognizer:
    """A value right after one of its labels ("MRN# 00482913"), or on the next line ("Phone:\n 467 3395")
    with `next_line`; the label stays out of the span."""
    gap = rf"{SP}{{0,3}}(?:\n{SP}{{0,4}})?" if next_line else rf"{SP}{{0,3}}"
    pattern = (rf"(?<=\b(?:{labels})[.:]?{SP}{{0,2}}(?:#|no\.?|number|num|id)?{SP}{{0,2}}[:#.]?{gap})"
               rf"{value}")
    return AnchoredRecognizer(supported_entity=entity, name=name, patterns=[Pattern(name, pattern, score)],
                             context=context)


def titled_person(titles: tuple[str, ...], name: str = "TitledPersonRecognizer") -> AnchoredRecognizer:
    """Names after a title ("Dr. Patel", "Ms. Ortiz") and "Lopez, Ana" after a name label."""
    patterns = [
        Pattern("title + name", rf"(?<=\b{_words(*titles)}\.?{SP}){NAME}", 0.85),
        Pattern("surname, first", rf"(?<=\b(?:patient|pt|name|student|student{SP}name){SP}{{0,2}}[:\-]?{SP}{{0,3}})"
                rf"{NAME_TOKEN},{SP}{NAME_TOKEN}", 0.85),
    ]
    return AnchoredRecognizer(supported_entity="PERSON", name=name, patterns=patterns)


CREDENTIAL = r"(?-i:MD|RN|NP|DO|PA-C|PA|LPN|CNA|M\.D\.|PhD|MSW|LICSW|CNM|APRN|DNP|rn|md|np)"  # not PT: patient
# lower-case cues that a name follows in a sloppy all-lower-case note
LOWER_CUES = (r"(?-i:name:|hcp|nok|pt's (?:son|daughter|wife|husband|mother|father|sister|brother|niece|nephew|grandson|"
              r"granddaughter|partner|hcp)|(?:son|daughter|wife|husband|sister|brother|niece|nephew|grandson|"
              r"granddaughter)|dr\.|signed:|dictated by:|sw|spoke with pt|examined|pt)")


ROLE_SEP = rf"(?:{SP}?[:\-(]{SP}{{0,6}}|{SP}{{1,2}})"  # "husband John", "Patient: Ana", never "RE" + "STING"


def role_person(roles: str, name: str = "RolePersonRecognizer") -> AnchoredRecognizer:
    """Names next to a role or label: "husband John", "Patient: Ana Lopez", "Ana Lopez, RN", "Ana Lopez, MRN",
    "Re: Cortes, Reynaldo R.", "/jm RN" and dictation initials "CM/rr", lower-case names after lower-case cues."""
    patterns = [
        Pattern("role + last, first", rf"(?<=\b(?:{roles}){ROLE_SEP}){LAST_FIRST}", 0.75),
        Pattern("role + name", rf"(?<=\b(?:{roles}){ROLE_SEP}){NAME}", 0.7),
        Pattern("lower-case cue + name", rf"(?<=(?:^|[\s(])(?:{LOWER_CUES}){SP}{{1,2}}){LOWER_NAME}"
                rf"(?=[\s,.;:(@'’]|$)", 0.6),
        Pattern("name + credential", rf"{NAME}(?=,?{SP}{CREDENTIAL}\b)", 0.7),
        Pattern("line-initial lower-case name + credential",
                rf"(?<=(?:^|\n)(?:[-—]{{1,2}}{SP})?|signed:{SP}){LOWER_NAME}(?=,?{SP}(?-i:rn|md|np)\b)", 0.6),
        Pattern("initials + credential", rf"(?<=^|\n)/\p{{L}}{{2,3}}(?={SP}{CREDENTIAL}\b)", 0.7),
        Pattern("name + refused", rf"(?<=(?:^|\.{SP}|\n|\bpt{SP})){LAST_FIRST}(?={SP}(?i:refused|declined|seen)\b)",
                0.7),
        Pattern("lower-case name + refused", rf"(?<=(?:^|\.{SP}|\n|\bpt{SP}))(?:{LOWER_NAME}|(?-i:{UP}\.{UP}\.))"
                rf"(?={SP}(?i:refused|declined)\b)", 0.6),
        Pattern("dictation initials", r"(?-i:\b[A-Z]{2,3}/[a-z]{2,3}\b)", 0.7),
        Pattern("line-initial last, first + record label", rf"(?<=^|\n){LAST_FIRST}(?={SP}{{1,3}}(?-i:MRN|MR#|DOB|\())",
                0.8),
        Pattern("line-initial name + record label", rf"(?<=^|\n){NAME}(?=(?:,{SP}|{SP}\()(?:(?-i:MRN|MR#|DOB|ID)|"
                rf"{_words('Med Rec', 'Medical Record', 'Hosp #', 'District', 'Student')}|district|student))", 0.75),
    ]
    return AnchoredRecognizer(supported_entity="PERSON", name=name, patterns=patterns)


HOLIDAYS = (r"Thanksgiving|Christmas(?:{SP}(?:Eve|Day))?|Easter|New{SP}Year'?’?s(?:{SP}(?:Day|Eve))?|Labor{SP}Day|"
            r"Memorial{SP}Day|Independence{SP}Day|Fourth{SP}of{SP}July|Halloween|Valentine'?’?s{SP}Day|"
            r"Mother'?’?s{SP}Day|Father'?’?s{SP}Day|Veterans{SP}Day|Juneteenth|Hanukkah|Passover|Diwali|"
            r"Lunar{SP}New{SP}Year|MLK{SP}Day|Good{SP}Friday").replace("{SP}", SP)


def clinical_dates(name: str = "ClinicalDateRecognizer") -> AnchoredRecognizer:
    """Dates Presidio's DateRecognizer misses: "7/22", "July 22nd", "Jul 22, 2023", "22 July 2023", "2/3/98"."""
    month = _words(*MONTHS, *(m[:3] for m in MONTHS if m != "May"), "Sept")  # "May" only as a full word
    day = r"(?:[12]\d|3[01]|0?[1-9])"
    md = rf"(?<![\d/.])(?:1[0-2]|0?[1-9])/{day}(?![\d/%])"
    patterns = [
        Pattern("Month day[th][, year]",
                rf"\b{month}\.?{SP}{day}(?-i:st|nd|rd|th|ST|ND|RD|TH)?\b(?:,?{SP}(?:19|20)\d\d\b)?", 0.7),
        Pattern("day Month year", rf"\b{day}{SP}{month}\.?,?{SP}(?:19|20)\d\d\b", 0.7),
        Pattern("day-Mon[-year]", rf"\b{day}-{month}(?:-(?:\d{{4}}|\d{{2}}))?\b", 0.6),
        Pattern("m/d/yy", rf"(?<![\d/])(?:1[0-2]|0?[1-9])/{day}/(?:\d{{4}}|\d{{2}})(?![\d/])", 0.6),
        # "7/22" alone is also a pain score ("7/10") or a strength ("3/5"): a date after a date word
        Pattern("m/d after a date word", rf"(?<=\b(?:on|seen|dos|dated?|since|until|from|by|appt|f/u|next|"
                rf"session|admit(?:ted)?|discharged?|visit|follow-up|log|record|notes?)[:,]?{SP}{{1,2}}(?:-{SP})?)"
                rf"{md}", 0.6),
        Pattern("m/d closing a title line", rf"(?<={SP}-{SP}){md}(?={SP}*$)", 0.6),  # "Check-in - 8/14"
        # no pain score (n/10), strength (n/5) or fraction of doses has a zero-padded part or a day over 12
        Pattern("mm/dd", rf"(?<![\d/.])(?:0[1-9]/{day}|(?:1[0-2]|0?[1-9])/(?:0[1-9]|1[3-9]|2\d|3[01]))(?![\d/%])"
                rf"(?!{SP}(?:doses|tabs?|of)\b)", 0.6),
        Pattern("m/d", md, 0.3),  # weak: context words may lift it
        Pattern("on the 5th", rf"(?<=\b(?:on|for|by|until|before|after|since|from|of|due){SP}the{SP})"
                rf"{day}(?-i:st|nd|rd|th|ST|ND|RD|TH)\b", 0.6),
        Pattern("3rd of March", rf"\b{day}(?:st|nd|rd|th){SP}of{SP}{month}\b(?:,?{SP}(?:19|20)\d\d\b)?", 0.7),
        Pattern("19MAR2023", rf"\b{day}{month}(?:\d{{4}}|\d{{2}})\b", 0.7),
        Pattern("20240427", r"\b(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b", 0.55),
        Pattern("holiday", rf"\b(?:{HOLIDAYS})\b", 0.6),
    ]
    context = ["see", "seen", "dos", "date", "dated", "admit", "admitted", "discharge", "visit", "appt",
               "appointment", "follow", "transfer", "transferred", "session", "next", "dob", "bear", "born",
               "home", "colonoscopy", "last", "fall", "prior", "onset", "since", "echo", "surgery", "procedure",
               "injury", "cath", "scan", "mri", "ct", "started", "stopped", "until", "from"]
    return AnchoredRecognizer(supported_entity="DATE_TIME", name=name, patterns=patterns, context=context,
                             global_regex_flags=re.DOTALL | re.MULTILINE | re.IGNORECASE)


def street_addresses(name: str = "StreetAddressRecognizer") -> AnchoredRecognizer:
    suffixes = ("Street", "St", "Avenue", "Ave", "Road", "Rd", "Lane", "Ln", "Drive", "Boulevard", "Blvd", "Court",
                "Way", "Place", "Terrace", "Circle", "Parkway", "Pkwy", "Highway", "Hwy")
    suffix = rf"(?:{_words(*suffixes)}|(?-i:Dr|Ct|Pl|Cir))"  # not "HEAD CT", "DR" in UPPER-CASE notes
    word = rf"(?=(?-i:[A-Z]))(?!(?i:{STOP})\b)(?-i:[A-Z][a-z]+|[A-Z]{{2,}})"
    pattern = (rf"\b\d{{1,5}}{SP}(?:(?-i:[NSEW])\.?{SP})?{word}(?:{SP}{word}){{0,2}}{SP}{suffix}\b\.?"
               rf"(?:,?{SP}(?:apt|unit|suite|#){SP}?\w+)?")
    return AnchoredRecognizer(supported_entity="STREET_ADDRESS", name=name,
                             patterns=[Pattern("number street suffix", pattern, 0.6)],
                             context=["live", "lives", "address", "reside", "resides", "home"])


STATES = ("AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC "
          "ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC").split()


def city_state_zip(name: str = "CityStateZipRecognizer") -> list[AnchoredRecognizer]:
    """"Cambridge, MA 02139": the city (LOCATION) and the ZIP; the state itself is allowed by Safe Harbor."""
    states = "(?-i:" + "|".join(STATES) + ")"
    # "Cambridge", "SOUTH THOMASCHESTER", "Vieja San Vicente y las Granadinas"
    word = rf"(?:{UP}[{LO}'’]+(?:-{UP}?{LO}+)?|{UP}{{2,}})"
    city = rf"(?-i:{word}(?:{SP}(?:(?:y|de|del|la|las|los|el|of|on|upon|bajos|altos){SP})*{word}){{0,4}}(?:{SP}los{SP}bajos)?)"
    lower_city = rf"(?-i:[{LO}]+(?:{SP}[{LO}]+){{0,3}})"
    after = r"(?<=(?:,|\bin|\bof)[ \t])"
    return [
        AnchoredRecognizer(supported_entity="LOCATION", name=f"{name}/city", patterns=[
            Pattern("city, state ZIP", rf"{after}{city}(?=,?{SP}{states}{SP}\d{{5}})", 0.8),
            Pattern("city, state", rf"{after}{city}(?=,?{SP}{states}(?:[;.,]|$))", 0.6),
            Pattern("lower-case city, state ZIP", rf"(?<=,{SP}){lower_city}(?=,{SP}(?-i:[a-z]{{2}}){SP}\d{{5}})", 0.7),
        ]),
        AnchoredRecognizer(supported_entity="ZIP_CODE", name=f"{name}/zip", patterns=[
            Pattern("ZIP after state", rf"(?<=\b(?:{states}|(?-i:[a-z]{{2}})){SP})\d{{5}}(?:-\d{{4}})?\b", 0.8),
            Pattern("ZIP (weak)", r"\b\d{5}(?:-\d{4})?\b", 0.05),
        ], context=["zip", "zipcode", "postal"]),
    ]


def organizations(entity: str, kinds: tuple[str, ...], name: str) -> AnchoredRecognizer:
    """Named institutions: "University of X" or "St. X's" or up to three capitalised words, then a kind."""
    word = rf"(?=(?-i:[A-Z]))(?!(?i:{STOP})\b)(?-i:[A-Z][a-z'’]+|[A-Z][A-Z'’]+|K-8)"
    pattern = (rf"\b(?:{_words('University of')}{SP})?(?:{_words('St', 'Saint')}\.?{SP})?"
               rf"{word}(?:{SP}{word}){{0,2}}{SP}(?-i:{_words(*kinds)})\b")  # not "Brief hospital course"
    # most notes name no institution: the kind words alone are a cheap test before the full pattern
    return AnchoredRecognizer(supported_entity=entity, name=name, gate=rf"(?-i:{_words(*kinds)})\b",
                             patterns=[Pattern(f"name + {entity.lower()}", pattern, 0.8)])


PAYERS = (r"Aetna|Cigna|Humana|Tufts|Harvard{SP}Pilgrim|MassHealth|UnitedHealthcare|UHC|Kaiser|Anthem|Molina|"
          r"Tricare|BCBS|Blue{SP}Cross|Medicaid|Medicare|Ambetter|Oscar|WellCare|Centene|Highmark").replace("{SP}", SP)


def clinical_identifiers() -> list[AnchoredRecognizer]:
    """Safe Harbor items 7-16 beyond MRN and plan ids: DEA and licence numbers, device serials and
    UDIs, vehicle plates and VINs, visit/encounter accounts, SSN last four; each after its label."""
    has_digit = r"(?=[\w()\-]*\d)"
    return [
        labeled("US_DEA", "DeaRecognizer", r"DEA", r"[A-Z][A-Z9]\d{7}\b", 0.9),
        labeled("LICENSE_NUMBER", "LicenseRecognizer",
                rf"Lic|License|Licence|DL|driver'?s{SP}licen[cs]e|medical{SP}licen[cs]e|RN{SP}licen[cs]e",
                rf"{has_digit}[A-Z]{{0,3}}-?[A-Z\d]{{4,14}}\b", 0.85),
        labeled("DEVICE_ID", "DeviceIdRecognizer",
                rf"SN|S/N|serial(?:{SP}(?:no|number|#))?|UDI|transmitter{SP}ID|device{SP}ID|model/serial|IMEI|MAC",
                rf"{has_digit}\(?[A-Z0-9][A-Z0-9()\-:]{{4,48}}[A-Z0-9]", 0.85),
        labeled("VEHICLE_ID", "VehicleIdRecognizer", rf"plate|license{SP}plate|tag|VIN",
                r"(?=[\w -]{0,12}\d)[A-Z0-9]{1,4}(?:[ -][A-Z0-9]{2,4}|[A-Z0-9]{2,13})\b", 0.85),
        labeled("US_SSN", "SsnLabelRecognizer", rf"SS#|SSN|Social|Social{SP}Security(?:{SP}(?:no|number|#))?",
                r"\d{3}[- ]?\d{2}[- ]?\d{4}\b", 0.85),
        labeled("ACCOUNT_NUMBER", "VisitNumberRecognizer", r"Visit|FIN|Encounter|CSN|Claim|Invoice",
                r"[A-Z]{0,2}\d[\d-]{4,14}\d\b", 0.8),
        labeled("HEALTH_PLAN_ID", "PayerIdRecognizer",
                rf"(?:{PAYERS})(?:{SP}(?:HP|health{SP}plan|member|subscriber|policy))?",
                r"[A-Z]{0,4}-?\d[A-Z\d-]{4,16}[A-Z\d]\b", 0.85),
        labeled("ACCOUNT_NUMBER", "CardNumberRecognizer",  # a mistyped card number (no Luhn) still identifies
                rf"card|credit{SP}card|debit{SP}card|card{SP}number|IBAN|account|acct|bank{SP}account",
                r"(?:[A-Z]{2}\d{2}[A-Z0-9]{10,30}|\d[\d -]{10,30}\d)\b", 0.75),
        # a run of 12-19 digits is an identifier wherever it stands (a card or account number whose
        # label is a sentence away: "charge my credit card. Number is 4152488713445952355")
        AnchoredRecognizer(supported_entity="ACCOUNT_NUMBER", name="LongNumberRecognizer", patterns=[
            Pattern("12-19 digits", r"(?<![\w.,/-])\d{12,19}(?![\w/]|[.,]\d)", 0.6)]),
        labeled("US_SSN", "SsnLastFourRecognizer", rf"SSN{SP}(?:last{SP}(?:4|four)|ending(?:{SP}in)?)|last{SP}4{SP}of{SP}SSN",
                r"\d{4}\b", 0.85),
    ]


PHONE_US = r"(?:\+?1[ .-]?)?\(?\d{3}\)?[ .\-/]?\d{3}[ .-]?\d{4}"
EXTENSION = rf"(?:{SP}?(?:x|ext\.?|extension){SP}?\d{{1,6}})?"


def contact_numbers() -> list[AnchoredRecognizer]:
    """Phone, fax and pager numbers after their label, with extensions, 7-digit local numbers and
    international groupings ("+41 (0)96 471 07 95", "78 651 450")."""
    labels = (r"ph|phone|tel|telephone|cell|mobile|fax|home|work|office|desk|callback|cb|call|contact|"
              r"reach(?:ed)?{SP}(?:me{SP})?(?:at|on)|answering{SP}at|registered|text|whatsapp|number|"
              r"(?:call|text|ring){SP}(?:me|us){SP}(?:at|on)|messages{SP}to").replace("{SP}", SP)
    # "+41 (0)96 471 07 95", "(37) 788-063", "+447700 921 916", "21 284 698 2548", "467 3395"
    international = r"(?:\+|\()?\d{1,4}\)?(?:[ .\-]?\(0\)[ .\-]?\d{1,4}|[ .\-]?\d{2,6})(?:[ .\-]\d{2,5}){0,4}"
    return [
        labeled("PHONE_NUMBER", "LabeledContactNumberRecognizer", labels,
                rf"(?:{PHONE_US}{EXTENSION}|\d{{3}}[-.]\d{{4}}\b|{international}(?<=(?:\d\D*){{6}}))", 0.75,
                next_line=True),
        labeled("PHONE_NUMBER", "PagerRecognizer", r"pager|beeper|pgr|beep", r"\d[\d-]{3,10}\d\b", 0.8),
        AnchoredRecognizer(supported_entity="PHONE_NUMBER", name="PhoneExtensionRecognizer", patterns=[
            Pattern("US number + extension", rf"(?<![\d-]){PHONE_US}{SP}?(?:x|ext\.?){SP}?\d{{1,6}}\b", 0.7),
            Pattern("number + office/fax suffix", rf"{international}(?=[-{SP}]?(?i:office|fax|mobile|cell|home)\b)",
                    0.6),
        ]),
    ]


# USPS street suffixes (Publication 28, appendix C1), the common ones
STREET_SUFFIXES = """Alley Annex Arcade Avenue Ave Bayou Beach Bend Bluff Bluffs Bottom Boulevard Blvd Branch Bridge Brook
Brooks Burg Burgs Bypass Camp Canyon Cape Causeway Center Centers Circle Cir Circles Cliff Cliffs Club Common Commons
Corner Corners Course Court Ct Courts Cove Coves Creek Crescent Crest Crossing Crossroad Curve Dale Dam Divide Drive
Dr Drives Estate Estates Expressway Extension Extensions Falls Ferry Field Fields Flat Flats Ford Fords Forest Forge
Forges Fork Forks Fort Freeway Garden Gardens Gateway Glen Glens Green Greens Grove Groves Harbor Harbors Haven
Heights Highway Hwy Hill Hills Hollow Inlet Island Islands Isle Junction Junctions Key Keys Knoll Knolls Lake Lakes
Land Landing Lane Ln Light Lights Loaf Lock Locks Lodge Loop Mall Manor Manors Meadow Meadows Mews Mill Mills Mission
Motorway Mount Mountain Mountains Neck Orchard Oval Overpass Park Parks Parkway Pkwy Parkways Pass Passage Path Pike
Pine Pines Place Pl Plain Plains Plaza Point Points Port Ports Prairie Radial Ramp Ranch Rapid Rapids Rest Ridge
Ridges River Road Rd Roads Route Row Rue Run Shoal Shoals Shore Shores Skyway Spring Springs Spur Spurs Square Sq
Squares Station Stravenue Stream Street St Streets Summit Terrace Ter Throughway Trace Track Trafficway Trail Trl
Trailer Tunnel Turnpike Underpass Union Unions Valley Valleys Viaduct View Views Village Villages Ville Vista Walk
Walks Wall Way Ways Well Wells""".split()

FACILITY_KINDS = ("Medical Center", "Hospital", "Clinic", "Health Center", "Health System", "Health Alliance",
                  "Infirmary", "Urgent Care", "Nursing Home", "Rehabilitation Center", "Rehab Center", "Rehab",
                  "Nursing and Rehabilitation Center", "Assisted Living", "Senior Living", "SeniorLife", "Hospice",
                  "Group Home", "Care Center", "Healthcare", "Health Care", "Regional", "Memorial", "Manor",
                  "Gardens", "House", "Inn", "Shelter", "Residence", "Village", "Center for Homeless Veterans", "Home",
                  "Healthcare Center", "Hospital Center", "Cancer Institute", "Skilled Nursing Facility",
                  "Nursing Facility", "Facility", "Hospice House", "Care Home", "Retirement Community")


# Safe Harbor keeps states and countries; a town cue ("originally from") followed by one is no identifier.
NOT_TOWNS = ("Alabama Alaska Arizona Arkansas California Colorado Connecticut Delaware Florida Georgia Hawaii Idaho "
             "Illinois Indiana Iowa Kansas Kentucky Louisiana Maine Maryland Massachusetts Michigan Minnesota "
             "Mississippi Missouri Montana Nebraska Nevada Ohio Oklahoma Oregon Pennsylvania Tennessee Texas Utah "
             "Vermont Virginia Washington Wisconsin Wyoming Mexico Canada Guatemala Honduras Haiti Jamaica Cuba "
             "Brazil Colombia Peru Ecuador Venezuela Argentina Chile Ireland England Scotland Wales Germany France "
             "Italy Spain Portugal Poland Russia Ukraine China Japan Korea Vietnam Cambodia Laos Thailand India "
             "Pakistan Bangladesh Nepal Nigeria Ghana Kenya Ethiopia Somalia Egypt Morocco Iran Iraq Syria Lebanon "
             "Israel Turkey Greece Philippines Indonesia").split() + ["New York", "New Jersey", "New Mexico",
             "New Hampshire", "North Carolina", "South Carolina", "North Dakota", "South Dakota", "Rhode Island",
             "West Virginia", "Puerto Rico", "El Salvador", "Dominican Republic", "Cape Verde", "the US",
             "United States", "South Korea", "Sierra Leone", "Costa Rica", "Sri Lanka", "Hong Kong"]
_NOT_TOWN = "(?!(?i:" + "|".join(t.replace(" ", SP) for t in NOT_TOWNS) + r")\b)"


def places() -> list[AnchoredRecognizer]:
    """Streets with a USPS suffix (any case), hospital units ("4 West", "Baker 6"), facilities and towns
    named after a movement cue ("transferred from X", "discharged to X", "visiting from X")."""
    suffix = "(?:" + "|".join(STREET_SUFFIXES) + r")\.?"
    word = rf"(?=\p{{L}})(?!(?i:{STOP})\b)(?:{UP}[{LO}'’]+|{UP}{{2,}}|{LO}+)"
    street = (rf"\b\d{{1,6}}{SP}(?:[NSEW]\.?{SP})?(?:{word}{SP}){{1,3}}(?i:{suffix})(?![\w])"
              rf"(?:,?{SP}(?i:apt|apartment|unit|suite|ste|#)\.?{SP}?#?\w+)?")
    moves = (r"transferred{SP}from|transfer{SP}from|admitted{SP}from|discharged{SP}to|d/c{SP}to|dc{SP}to|"
             r"resides{SP}at|returns{SP}to|returned{SP}to|biba{SP}from|brought{SP}from|sent{SP}from|from|"
             r"progress{SP}note{SP}-|note{SP}-|at|to").replace("{SP}", SP)
    cap_words = (rf"(?:(?i:the){SP})?{NAME_TOKEN}(?:{SP}(?:(?i:and|of|for|&){SP})?{NAME_TOKEN}){{0,5}}"
                 rf"(?:{SP}(?-i:de|del|la|las|los|el|y)(?:{SP}{NAME_TOKEN})?)?(?:{SP}(?-i:los{SP}bajos|altos))?")
    lower_words = rf"(?-i:[{LO}]+(?:{SP}[{LO}]+){{0,3}})"
    kinds = "|".join(k.replace(" ", SP) for k in FACILITY_KINDS)
    lower_kinds = "|".join(k.lower().replace(" ", SP) for k in FACILITY_KINDS)
    phone_next = rf"(?=,?{SP}(?i:tel|ph|phone|fax)\b|{SP}[\d(+])"  # "at BIDMC 339-…", ", MGH, ph 212-…"
    unit_cues = (r"bed{SP}on|unit|transfer{SP}to|transferred{SP}to|admitted{SP}to|to|on|floor").replace("{SP}", SP)
    # after an address cue, the whole block up to the end of the sentence, across line breaks
    # ("Billing address: 28245 Puruntie 82 Apt. 595\n LAPPEENRANTA\n 53650"): international
    # addresses put the number after the street, the ZIP before the town, the country last
    address_cue = (r"address(?:{SP}is)?|lives{SP}at|living{SP}at|located{SP}at|is{SP}at|moved{SP}to|mail(?:ed)?{SP}to|"
                   r"send{SP}(?:it|them|a{SP}new{SP}one|the{SP}\w+){SP}to|ship(?:ped)?{SP}to").replace("{SP}", SP)
    block = rf"(?=[^.?!\n]{{0,40}}\d)\w[^?!]{{3,150}}?(?=\.?(?:[?!]|\.(?:\s|$)|\n\n|$)|{SP}(?i:w/|with|for){SP})"
    return [
        AnchoredRecognizer(supported_entity="STREET_ADDRESS", name="UspsStreetRecognizer",
                          patterns=[Pattern("number + words + USPS suffix", street, 0.8)],
                          context=["live", "lives", "address", "reside", "resides", "home", "at"]),
        AnchoredRecognizer(supported_entity="STREET_ADDRESS", name="AddressBlockRecognizer", patterns=[
            Pattern("cue + address block", rf"(?<=\b(?i:{address_cue})[:]?(?:{SP}{{1,3}}|{SP}*\n{SP}*)){block}", 0.6),
        ]),
        AnchoredRecognizer(supported_entity="HOSPITAL", name="FacilityRecognizer", patterns=[
            Pattern("cue + facility kind", rf"(?<=\b(?i:{moves}){SP}){cap_words}{SP}(?i:{kinds})\b", 0.8),
            Pattern("cue + named facility", rf"(?<=\b(?i:transferred{SP}from|admitted{SP}from|discharged{SP}to|"
                    rf"d/c{SP}to|resides{SP}at|returns{SP}to|biba{SP}from|note{SP}-){SP}){cap_words}", 0.6),
            Pattern("lower-case facility", rf"(?<=\b(?-i:from|at|to|in){SP})(?!home\b){lower_words}{SP}"
                    rf"(?-i:{lower_kinds})\b", 0.6),
            Pattern("lower-case cue + facility", rf"(?<=\b(?-i:biba{SP}from|resides{SP}at|admitted{SP}from|returns{SP}to|"
                    rf"discharged{SP}to){SP})(?!home\b){lower_words}(?={SP}(?:c/o|in)\b|[.,])", 0.55),
            Pattern("practice before a phone", rf"(?<=(?:\bat|,){SP}){cap_words}{phone_next}", 0.6),
            Pattern("lower-case practice before a phone", rf"(?<=\b(?-i:at){SP})(?!home\b){lower_words}(?={SP}\d)",
                    0.5),
            Pattern("note title - facility", rf"(?<={SP}-{SP}){cap_words}(?={SP}*\n)", 0.6),
        ]),
        AnchoredRecognizer(supported_entity="LOCATION", name="HospitalUnitRecognizer", patterns=[
            Pattern("4 West", rf"(?<=\b(?i:{unit_cues}){SP})\d{{1,2}}{SP}(?i:north|south|east|west|tower)\b", 0.7),
            Pattern("Baker 6", rf"(?<=\b(?i:{unit_cues}){SP}){NAME_TOKEN}(?:{SP}{NAME_TOKEN})?{SP}\d{{1,2}}\b"
                    rf"(?!{SP}?(?:mg|ml|units|%|am|pm|/|:))", 0.65),
            Pattern("WANG ACC", rf"(?<=\b(?i:to|unit|bed{SP}on){SP}){NAME_TOKEN}{SP}(?-i:ACC|ICU|CCU)\b", 0.65),
        ]),
        AnchoredRecognizer(supported_entity="LOCATION", name="TownAfterCueRecognizer", patterns=[
            Pattern("cue + town", rf"(?<=\b(?i:visiting{SP}from|moved{SP}from|originally{SP}from|lives{SP}in|"
                    rf"resides{SP}in|grew{SP}up{SP}in|home{SP}in|born{SP}in|raised{SP}in){SP}){_NOT_TOWN}{cap_words}", 0.6),
            Pattern("cue + lower-case town", rf"(?<=\b(?-i:visiting{SP}from|moved{SP}from|originally{SP}from|"
                    rf"lives{SP}in|grew{SP}up{SP}in|home{SP}in|born{SP}in){SP}){_NOT_TOWN}{lower_words}(?=[,.;]|{SP}c/o|$)",
                    0.5),
            Pattern("facility in town", rf"(?<=\b(?i:{kinds}){SP}(?i:in){SP}){cap_words}", 0.6),
            Pattern("facility in lower-case town", rf"(?<=\b(?-i:{lower_kinds}){SP}in{SP}){lower_words}(?=[,.;]|$)",
                    0.5),
            Pattern("place in town", rf"(?<=\b(?i:resides{SP}at|admitted{SP}from|returns{SP}to){SP}{cap_words}{SP}"
                    rf"(?i:in){SP}){cap_words}", 0.55),
        ]),
    ]


# Line labels of chats, forms and letters that are no one's name ("Bot: …", "User: …", "Q: …")
NOT_SPEAKERS = frozenset("""bot user agent customer client me you q a question answer speaker interviewer interviewee
host guest system assistant caller operator moderator admin support staff team note notes re subject from to cc bcc
date time when where who what why how address phone tel email e-mail name website web mobile desk fax office home work
cell title company job occupation position status reason comment comments update summary answer response reply
result results example source ps p.s nb warning error info details message topic total price cost order item step
tip hint fact edit update translation lyrics chorus verse bridge intro outro narrator everyone all both""".split())
_SPEAKER = regex.compile(r"(?m)^[ \t>*•-]*(?P<name>\p{Lu}[\p{Ll}'’\-]+(?:[ \t]\p{Lu}[\p{Ll}'’\-]+)?|\p{Ll}[\p{Ll}'’\-]+)"
                         r"[ \t]*:[ \t]*(?P<said>\S[^\n]*)")
# what people say rather than what a form lists: a quotation, a first- or second-person word, a question or an exclamation
_SPEECH = regex.compile(r"^[\"“'‘]|\b(?i:i|i'm|i'll|me|my|mine|you|your|you're|we|us|our)\b|[?!][\"”'’)]*\s*$")


class DialogueSpeakerRecognizer(EntityRecognizer):
    """Speakers of a dialogue or chat transcript: "Ubul: What a wife.\nNicole: Remember me?".

    A line label is a speaker when at least two lines of the text are labelled turns that read
    as speech (a quotation, "I" / "you" / "we", a question or an exclamation) and the label is
    neither a form field nor a role (`NOT_SPEAKERS`, the clinical terms and note words of
    `ALLOW` and `STOP`, English stop words), and two turns so labelled read as speech; then
    every labelled line is a turn ("Ubul: What a wife."). "Plan: continue lasix" is no turn,
    "Bot: What's your name?" no person.
    """

    def __init__(self, not_names: frozenset[str] = frozenset()):
        self.not_names = NOT_SPEAKERS | frozenset(w.lower() for w in not_names)
        super().__init__(supported_entities=["PERSON"], name="DialogueSpeakerRecognizer")

    def load(self) -> None:
        pass

    def _may_be_name(self, turn) -> bool:
        words = turn["name"].lower().split()
        if any(w in self.not_names for w in words):
            return False
        return not turn["name"].islower() or turn["said"].islower()  # lower-case labels only in lower-case chats

    def analyze(self, text, entities, nlp_artifacts=None):
        if text.count(":") < 2:
            return []
        turns = [m for m in _SPEAKER.finditer(text) if self._may_be_name(m)]
        # a dialogue: two turns say something; then every labelled line is a turn
        if sum(bool(_SPEECH.search(m["said"])) for m in turns) < 2:
            return []
        results = []
        for m in turns:
            results.append(RecognizerResult("PERSON", m.start("name"), m.end("name"), 0.6, recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.name, RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
        return results


class NameBeforeCueRecognizer(EntityRecognizer):
    """A name right before a cue ("Evander Quist lives at …", "Zak shouted at …"): the cue is
    searched first and the name only in the 80 characters before it, since a forward pattern
    would try the name at every capital letter of the note (~0.5 ms per clinical note each)."""

    def __init__(self, name: str, cues: dict[str, str], before: str, score: float):
        self.cues = regex.compile("|".join(f"(?:{c})" for c in cues.values()), regex.IGNORECASE)
        self.before = regex.compile(rf"(?:{before})[ \t]+\Z", regex.IGNORECASE | regex.MULTILINE)
        self.score = score
        super().__init__(supported_entities=["PERSON"], name=name)

    def load(self) -> None:
        pass

    def analyze(self, text, entities, nlp_artifacts=None):
        results = []
        for cue in self.cues.finditer(text):
            window = max(0, cue.start() - 80)
            if m := self.before.search(text, window, cue.start()):
                results.append(RecognizerResult("PERSON", m.start(), m.start() + len(m.group().rstrip()), self.score,
                                                recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                                      RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
        return results


def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


def conversation_names() -> list[EntityRecognizer]:
    """Names that the way people talk and write gives away, in chats, letters and stories: dialogue
    speakers, the person spoken to ("shouted at Todd", "said Gladys to Logan", "Warrane, can I…"),
    greetings and sign-offs ("Dear Ana,", "Best,\nTom"), naming ("she named him Luís", "was called
    Lily Nolan"), the subject of "lives at/in", and the name line that heads a signature or address
    block (a line of names only, above a street, unit, phone or address line)."""
    greeting = (rf"hi|hello|hey|dear|thanks|thank{SP}you|cheers|bye|goodbye|good{SP}(?:morning|afternoon|evening|night)|"
                rf"congratulations|congrats|welcome(?:{SP}back)?|sorry|love")
    sign_off = (rf"best|regards|best{SP}regards|kind{SP}regards|warm{SP}regards|sincerely|yours(?:{SP}(?:truly|sincerely))?|"
                rf"cheers|thanks|many{SP}thanks|thank{SP}you|love|warmly|respectfully|take{SP}care|all{SP}the{SP}best")
    spoke = r"said|says|shouted|yelled|screamed|whispered|cried|replied|answered|snapped|muttered|laughed"
    contact_line = (rf"(?:\d{{1,6}}{SP}+\S|(?i:p\.?{SP}?o\.?{SP}?box|apt|apartment|suite|unit|psc|box|phone|tel|mobile|"
                    rf"cell|e-?mail|address|personal{SP}info)\b|\S+@\S+)")
    name_line = (rf"(?:{NAME_TOKEN}(?:{SP}(?:{INITIAL}|(?-i:{UP})|{PARTICLE}))*(?:{SP}{NAME_TOKEN}){{1,2}}|"
                 rf"(?-i:{LO}[{LO}'’\-]+(?:{SP}(?:{LO}\.?|{PARTICLE}))*(?:{SP}{LO}[{LO}'’\-]+){{1,2}}))")
    # a sentence's first word before a comma is often a word of its own ("Cool, what's the address?")
    not_vocative = (r"cool|ok|okay|yes|yeah|yep|no|nope|well|so|now|great|sure|right|alright|oh|hey|hi|hmm|please|"
                    r"sorry|thanks|wow|fine|good|nice|anyway|also|then|and|but|or|honestly|seriously|listen|look|"
                    r"wait|sir|madam|ma'am|guys|folks|everyone|doctor|nurse|mom|dad|mum|baby|honey|dear|friend|"
                    r"first|second|finally|however|meanwhile|today|tomorrow|yesterday|tonight|here|there|again")
    pronoun = r"(?<![\p{L}'’])(?=(?-i:\p{Lu}))(?!(?i:he|she|it|they|we|i|you|who|which|that|this|there|someone|somebody|nobody|everyone|one|family)\b)"
    return [
        DialogueSpeakerRecognizer(ALLOW | frozenset(w.lower() for w in STOP.split("|")) | _stop_words()),
        NameBeforeCueRecognizer("NameBeforeCueRecognizer", {
            "X shouted at": rf"\b(?:{spoke}){SP}(?:at|to)\b",
            "X lives at": rf"\b(?:lives|lived|resides|resided|grew{SP}up|was{SP}born){SP}(?:at|on|in|with)\b",
        }, rf"{pronoun}{NAME}", 0.6),
        AnchoredRecognizer(supported_entity="PERSON", name="ConversationNameRecognizer", patterns=[
            Pattern("spoken to", rf"(?<=\b(?i:{spoke}){SP}(?:(?i:at|to|back{SP}at|back{SP}to){SP})?{NAME}\b(?:'s)?{SP}?(?i:to){SP})"
                    rf"{NAME}", 0.6),
            Pattern("shouted at X", rf"(?<=\b(?i:{spoke}|waved|smiled|glared|stared|pointed){SP}(?i:at|to){SP}){NAME}", 0.6),
            Pattern("said X to", rf"(?<=\b(?i:{spoke}){SP}){NAME}(?={SP}(?i:to|at)\b)", 0.6),
            Pattern("greeting", rf"(?<=(?:^|\n|[.!?]{SP})(?i:{greeting}),?{SP}){NAME}(?=[ \t]*(?:[,.!?:;]|\n|$))", 0.6),
            Pattern("sign-off", rf"(?<=(?:^|\n)[ \t]*(?i:{sign_off})[,.!]?[ \t]*\n[ \t]*(?:[-—~]{{1,2}}[ \t]*)?)"
                    rf"(?:{NAME}|{LOWER_NAME})(?=[ \t]*(?:\n|$))", 0.6),
            Pattern("vocative", rf"(?<=(?:^|\n|[.!?]{SP}))(?!(?i:{not_vocative})\b){NAME_TOKEN}(?=,{SP}(?i:can|could|would|will|please|do|did|are|"
                    rf"have|i|we|you|thank|thanks|let|listen|look|come|wait|stop|where|what|why|how|when)\b)", 0.55),
            Pattern("naming", rf"(?<=\b(?i:named(?:{SP}(?:him|her|them|it))?|(?:was|is|were|are){SP}called|goes{SP}by|"
                    rf"known{SP}as|nicknamed|call{SP}(?:him|her)){SP}){NAME}", 0.6),
            Pattern("lower-case x lives at", rf"(?<=(?:^|[.!?]{SP}))(?!(?i:he|she|it|they|we|i|you|who|someone|one|family)\b)(?!(?i:mom|dad|mum|friend|nobody|everybody|my|his|her|our|their|your|the|a|an|no|each|every)\b)"
                    rf"(?-i:{LO}[{LO}'’\-]+{SP}{LO}[{LO}'’\-]+)(?={SP}(?-i:lives|resides){SP}(?-i:at|on|in)\b)", 0.55),
            Pattern("asked for a name", rf"(?<=\bname\b[^?\n]{{0,30}}\?{SP}*(?:(?i:user|customer|me|a|caller|client):{SP}*)?)"
                    rf"{NAME}", 0.6),
            Pattern("name line heading a block", rf"(?<=(?:\A|\n[ \t>?*•]*\n)[ \t>?*•]*|(?:\A|\n)[ \t]*(?i:name|attn|attention|to|"
                    rf"billing{SP}address|address):[ \t]*){name_line}(?=[ \t]*\n(?:[^\n]*\n){{0,6}}?[ \t>?*•]*{contact_line})", 0.55),
        ]),
    ]


def recognizers() -> list[EntityRecognizer]:
    """Healthcare recognizers added to Presidio's predefined ones (see `ENTITIES`)."""
    from domains.healthcare.addresses import addresses  # it builds on the helpers above
    from domains.healthcare.gazetteer import GazetteerNameRecognizer

    mrn_labels = (rf"MRN|MR|Med\.?{SP}?Rec(?:ord)?|Medical{SP}Record|Hosp(?:ital)?|Chart|Patient{SP}ID|Pt{SP}ID|"
                  rf"CSN|Encounter")
    return [
        labeled("MEDICAL_RECORD_NUMBER", "MrnRecognizer", mrn_labels, r"[A-Z]{0,3}-?\d[\d-]{4,12}\d\b", 0.85,
                context=["mrn", "record", "chart"]),
        labeled("ACCOUNT_NUMBER", "AccountNumberRecognizer", r"Acct|Account|Billing|FIN",
                r"[A-Z]{0,3}\d[\d-]{4,14}\d\b", 0.8),
        labeled("HEALTH_PLAN_ID", "HealthPlanIdRecognizer",
                rf"Member|Subscriber|Policy|Plan|Health{SP}plan|Insurance|Ins|Medicaid|Medicare|MBI|Group|BCBS",
                r"[A-Z]{0,4}-?\d[A-Z\d-]{4,16}[A-Z\d]\b", 0.85),
        labeled("US_NPI", "NpiLabelRecognizer", r"NPI", r"\d{10}\b", 0.9),
        labeled("PHONE_NUMBER", "LabeledPhoneRecognizer",
                r"ph|phone|tel|cell|mobile|fax|home|work|pager|callback|contact|call|at",
                r"(?:\+1[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b", 0.75),
        AnchoredRecognizer(supported_entity="PHONE_NUMBER", name="UsPhoneShapeRecognizer", patterns=[
            Pattern("(617) 284-3310 / 617-284-3310", r"(?<![\d-])(?:\+1[ .-]?)?\(\d{3}\) ?\d{3}-\d{4}\b|"
                    r"(?<![\d/-])\d{3}([.-])\d{3}\1\d{4}\b", 0.6)]),
        AnchoredRecognizer(supported_entity="AGE", name="AgeOver89Recognizer", patterns=[
            Pattern("age 90+ with unit",
                    r"\b(?:9\d|1[01]\d) ?(?:-? ?(?:years?|yrs?|y)[- ]?old\b|y/o\b|y\.o\.|yo\b|yo(?=[MF]\b))", 0.85),
            Pattern("aged 90+", r"(?<=\b(?:age|aged) )(?:9\d|1[01]\d)\b", 0.85),
        ]),
        clinical_dates(),
        street_addresses(),
        *city_state_zip(),
        organizations("HOSPITAL", ("Medical Center", "Hospital", "Clinic", "Health Center", "Health System",
                                   "Infirmary", "Urgent Care", "Nursing Home", "Rehabilitation Center",
                                   "Rehab Center"), "HospitalRecognizer"),
        titled_person(("Dr", "Mr", "Mrs", "Ms", "Miss", "Mx", "Prof")),
        role_person(rf"husband|wife|son|daughter|mother|father|sister|brother|spouse|partner|niece|nephew|"
                    rf"grandson|granddaughter|guardian|caregiver|patient|name|contact|attending|signed|"
                    rf"signed{SP}by|seen{SP}by|PCP|NOK|HCP|SW|CM|Re|Dictated{SP}by|cc|examined|covering|"
                    rf"spoke{SP}with{SP}pt|with{SP}pt|discussed{SP}w/|caller"),
        AnchoredRecognizer(supported_entity="PERSON", name="PatientNameRecognizer", patterns=[
            # "PT MORGAN O'NEIL (AGE 68 F)", "Pt German Perea Tellez refused": after "pt" only with a
            # sign that a name, not a verb, follows
            Pattern("pt + name", rf"(?<=\bpt{SP}){NAME}(?={SP}?\((?:age|aged|\d|MRN|MR|Hosp|Med|DOB|ID|Acct|#)|,{SP}|"
                    rf"{SP}(?i:seen|refused|is|"
                    rf"was|agrees|this|states|reports|and|tolerat\w*|declined))", 0.7),
            Pattern("name + refused", rf"(?<=(?:^|\.{SP}|\n)){NAME}(?={SP}(?i:refused|declined|agrees|"
                    rf"requests|states|reports|tolerated|ambulated)\b)", 0.6),
            Pattern("initials J.P.", rf"(?<=\b(?i:examined|pt|seen|saw){SP})(?-i:{UP}\.{UP}\.)", 0.7),
            Pattern("self-introduction", rf"(?<=\b(?i:my{SP}name{SP}is|name{SP}is|i'?m|i{SP}am|this{SP}is|call{SP}me|"
                    rf"named|speak{SP}(?:to|with)|talk{SP}to|ask{SP}for|my{SP}(?:kid|son|daughter|wife|husband)){SP})"
                    rf"{NAME}", 0.65),
            Pattern("asked name", rf"(?<=\b(?i:(?:last|first|maiden|middle|full){SP}name|surname)(?:{SP}is|\?|:){SP}{{1,3}})"
                    rf"{NAME}", 0.65),
            # lower-case chat ("my name is lena andersson"): only after cues that leave no doubt
            Pattern("lower-case self-introduction", rf"(?<=\b(?-i:my{SP}name{SP}is|my{SP}name's|call{SP}me|"
                    rf"(?:last|first|maiden|middle|full){SP}name{SP}is|name{SP}on{SP}the{SP}account{SP}is){SP})"
                    rf"{LOWER_NAME}", 0.6),
            Pattern("by + full name", rf"(?<=\b(?i:by):?{SP}{{1,6}}){NAME_TOKEN}(?:{SP}{INITIAL})?{SP}{NAME_TOKEN}", 0.6),
            # "Ravil G Yefimov", "Ella H. Snider": first name, middle initial, surname, in any sentence
            # (not "Vitamin D Level", "Hepatitis B Vaccine", "Factor V Leiden")
            Pattern("first + initial + last", rf"(?<![\p{{L}}'’.])(?!(?i:{NOT_FIRST_NAMES})\b)(?-i:{UP}{LO}+{SP}{UP}\.?{SP}"
                    rf"(?!(?i:{NOT_FIRST_NAMES})\b){UP}{LO}{{2,}}(?:-{UP}{LO}+)?)(?![\p{{L}}'’])", 0.6),
        ]),
        *conversation_names(),
        GazetteerNameRecognizer(),
        *clinical_identifiers(),
        *contact_numbers(),
        *places(),
        *addresses(),
        UsNpiRecognizer(),
        UsHealthInsuranceMemberIdRecognizer(),
        UsMbiRecognizer(),
    ]
