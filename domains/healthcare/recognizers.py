"""Presidio recognizers for the HIPAA Safe Harbor identifiers in clinical notes.

45 CFR 164.514(b)(2) lists 18 identifier types; those that appear in free-text notes are
names, geographic units smaller than a state (street, city, ZIP), dates other than the year,
ages over 89, phone and fax numbers, email, SSN, medical record, health-plan and account
numbers, licence numbers (NPI), URLs and IP addresses. Presidio's predefined recognizers
(spaCy PERSON / LOCATION / DATE_TIME, phone, email, SSN, URL, IP) find the generic ones; the
pattern recognizers here add the clinical ones, each pattern anchored on its label or on a
title ("Dr.", "Ms.") so bare numbers in vitals and doses are left alone.

`ALLOW` lists clinical abbreviations, units, drug names and note headings that spaCy's small
model tags as PERSON / ORG / GPE; the de-identifier (tasks/deidentify.py) never redacts a span
that is one of them, and trims them off the edges of spaCy's guesses.

Patterns run with Presidio's default flags (case-insensitive); name-shaped parts are wrapped
in `(?-i:...)` because they must see capital letters (Title or UPPER case, see `_words`).
The `regex` module that Presidio uses accepts variable-length look-behind, which keeps labels
("MRN:") out of the span. The pattern helpers are shared with the education domain.
"""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer
from presidio_analyzer.predefined_recognizers import (
    UsHealthInsuranceMemberIdRecognizer,
    UsMbiRecognizer,
    UsNpiRecognizer,
)

ENTITIES = (
    "PERSON", "DATE_TIME", "AGE", "PHONE_NUMBER", "EMAIL_ADDRESS", "URL", "IP_ADDRESS",
    "LOCATION", "STREET_ADDRESS", "ZIP_CODE", "HOSPITAL",
    "MEDICAL_RECORD_NUMBER", "HEALTH_PLAN_ID", "ACCOUNT_NUMBER", "US_SSN", "US_NPI",
    "US_HEALTH_INSURANCE_MEMBER_ID", "US_MBI",
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
Dr Mr Mrs Ms Miss Mx Prof
""".split())

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
SP = r"[ \t]"  # names and places never run across a line break
# Words that look like name tokens in headers and UPPER-CASE notes but never are (checked case-insensitively).
STOP = ("AT|TO|IN|ON|FOR|WITH|AND|OR|OF|THE|IS|WAS|WHO|HAS|HAD|FROM|BY|RE|CALLED|AGREES|BEDSIDE|MD|RN|DO|NP|PA|"
        "PHD|PT|PATIENT|CELL|PH|FAX|NPI|CARDIOLOGY|HOSPITALIST|PCP|AS|ABOUT|SAYS|REPORTS|STATES|NOTES|ARE|WILL|"
        "CAN|NOT|NO|WHILE|AFTER|BEFORE|TODAY|ROOM|GRADE|TUTOR|TEACHER|HUSBAND|WIFE|SON|DAUGHTER|MOTHER|FATHER|"
        "SISTER|BROTHER|SPOUSE|PARTNER|NIECE|NEPHEW|GRANDSON|GRANDDAUGHTER|GUARDIAN|CAREGIVER|AUNT|UNCLE|"
        "GRANDMOTHER|GRANDFATHER|EMERGENCY|CONTACT|NAME|DOB|MRN|ID|DR|MR|MRS|MS|MISS|MX|PROF|COACH|"
        "TRANSFERRED|ADMITTED|SEEN|REFERRED|FOLLOW-UP|FOLLOW|APPT")
NAME_TOKEN = rf"(?!(?i:{STOP})\b)(?-i:[A-Z][a-z'’]+(?:[A-Z][a-z]+)?(?:-[A-Z]?[a-z]+)?|[A-Z][A-Z'’]+(?:-[A-Z]+)?)"
NAME = rf"(?:(?-i:[A-Z])\.{SP}?)?{NAME_TOKEN}(?:{SP}{NAME_TOKEN})?"  # "Patel", "K. Olsen", "Aisha Patel"


def _words(*phrases: str) -> str:
    """An alternation of phrases in Title and UPPER case, spaces as `SP` (for case-sensitive patterns)."""
    forms = [p for phrase in phrases for p in (phrase, phrase.upper())]
    return "(?:" + "|".join(re.escape(f).replace(r"\ ", SP) for f in dict.fromkeys(forms)) + ")"


def labeled(entity: str, name: str, labels: str, value: str, score: float, context: list[str] | None = None,
            ) -> PatternRecognizer:
    """A value right after one of its labels ("MRN# 00482913"); the label stays out of the span."""
    pattern = rf"(?<=\b(?:{labels}){SP}{{0,2}}(?:#|no\.?|number|id)?{SP}{{0,2}}[:#.]?{SP}{{0,3}}){value}"
    return PatternRecognizer(supported_entity=entity, name=name, patterns=[Pattern(name, pattern, score)],
                             context=context)


def titled_person(titles: tuple[str, ...], name: str = "TitledPersonRecognizer") -> PatternRecognizer:
    """Names after a title ("Dr. Patel", "Ms. Ortiz") and "Lopez, Ana" after a name label."""
    patterns = [
        Pattern("title + name", rf"(?<=\b{_words(*titles)}\.?{SP}){NAME}", 0.85),
        Pattern("surname, first", rf"(?<=\b(?:patient|pt|name|student|student{SP}name){SP}{{0,2}}[:\-]?{SP}{{0,3}})"
                rf"{NAME_TOKEN},{SP}{NAME_TOKEN}", 0.85),
    ]
    return PatternRecognizer(supported_entity="PERSON", name=name, patterns=patterns)


def role_person(roles: str, name: str = "RolePersonRecognizer") -> PatternRecognizer:
    """Names next to a role or label: "husband John", "Patient: Ana Lopez", "Ana Lopez, RN", "Ana Lopez, MRN"."""
    patterns = [
        Pattern("role + name", rf"(?<=\b(?:{roles}){SP}{{0,2}}[:\-(]?{SP}{{0,2}}){NAME}", 0.7),
        Pattern("name + credential", rf"{NAME}(?=,?{SP}(?-i:MD|RN|NP|DO|PA-C|LPN|CNA|M\.D\.)\b)", 0.7),
        Pattern("line-initial name + record label", rf"(?<=^|\n){NAME}(?=(?:,{SP}|{SP}\()(?:(?-i:MRN|MR#|DOB|ID)|"
                rf"{_words('Med Rec', 'Medical Record', 'Hosp #', 'District', 'Student')}|district|student))", 0.75),
    ]
    return PatternRecognizer(supported_entity="PERSON", name=name, patterns=patterns)


def clinical_dates(name: str = "ClinicalDateRecognizer") -> PatternRecognizer:
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
        Pattern("m/d", md, 0.3),  # weak: context words may lift it
    ]
    context = ["see", "seen", "dos", "date", "dated", "admit", "admitted", "discharge", "visit", "appt",
               "appointment", "follow", "transfer", "transferred", "session", "next", "dob", "bear", "born"]
    return PatternRecognizer(supported_entity="DATE_TIME", name=name, patterns=patterns, context=context,
                             global_regex_flags=re.DOTALL | re.MULTILINE | re.IGNORECASE)


def street_addresses(name: str = "StreetAddressRecognizer") -> PatternRecognizer:
    suffixes = ("Street", "St", "Avenue", "Ave", "Road", "Rd", "Lane", "Ln", "Drive", "Boulevard", "Blvd", "Court",
                "Way", "Place", "Terrace", "Circle", "Parkway", "Pkwy", "Highway", "Hwy")
    suffix = rf"(?:{_words(*suffixes)}|(?-i:Dr|Ct|Pl|Cir))"  # not "HEAD CT", "DR" in UPPER-CASE notes
    word = rf"(?!(?i:{STOP})\b)(?-i:[A-Z][a-z]+|[A-Z]{{2,}})"
    pattern = (rf"\b\d{{1,5}}{SP}(?:(?-i:[NSEW])\.?{SP})?{word}(?:{SP}{word}){{0,2}}{SP}{suffix}\b\.?"
               rf"(?:,?{SP}(?:apt|unit|suite|#){SP}?\w+)?")
    return PatternRecognizer(supported_entity="STREET_ADDRESS", name=name,
                             patterns=[Pattern("number street suffix", pattern, 0.6)],
                             context=["live", "lives", "address", "reside", "resides", "home"])


STATES = ("AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC "
          "ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC").split()


def city_state_zip(name: str = "CityStateZipRecognizer") -> list[PatternRecognizer]:
    """"Cambridge, MA 02139": the city (LOCATION) and the ZIP; the state itself is allowed by Safe Harbor."""
    states = "(?-i:" + "|".join(STATES) + ")"
    city = rf"(?-i:(?:[A-Z][a-z]+|[A-Z]{{2,}})(?:{SP}(?:[A-Z][a-z]+|[A-Z]{{2,}}))?)"
    after = r"(?<=(?:,|\bin|\bof)[ \t])"
    return [
        PatternRecognizer(supported_entity="LOCATION", name=f"{name}/city", patterns=[
            Pattern("city, state ZIP", rf"{after}{city}(?=,?{SP}{states}{SP}\d{{5}})", 0.8),
            Pattern("city, state", rf"{after}{city}(?=,?{SP}{states}(?:[;.,]|$))", 0.6),
        ]),
        PatternRecognizer(supported_entity="ZIP_CODE", name=f"{name}/zip", patterns=[
            Pattern("ZIP after state", rf"(?<=\b{states}{SP})\d{{5}}(?:-\d{{4}})?\b", 0.8),
            Pattern("ZIP (weak)", r"\b\d{5}(?:-\d{4})?\b", 0.05),
        ], context=["zip", "zipcode", "postal"]),
    ]


def organizations(entity: str, kinds: tuple[str, ...], name: str) -> PatternRecognizer:
    """Named institutions: "University of X" or "St. X's" or up to three capitalised words, then a kind."""
    word = rf"(?!(?i:{STOP})\b)(?-i:[A-Z][a-z'’]+|[A-Z][A-Z'’]+|K-8)"
    pattern = (rf"\b(?:{_words('University of')}{SP})?(?:{_words('St', 'Saint')}\.?{SP})?"
               rf"{word}(?:{SP}{word}){{0,2}}{SP}{_words(*kinds)}\b")
    return PatternRecognizer(supported_entity=entity, name=name,
                             patterns=[Pattern(f"name + {entity.lower()}", pattern, 0.8)])


def recognizers() -> list[EntityRecognizer]:
    """Healthcare recognizers added to Presidio's predefined ones (see `ENTITIES`)."""
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
        PatternRecognizer(supported_entity="PHONE_NUMBER", name="UsPhoneShapeRecognizer", patterns=[
            Pattern("(617) 284-3310 / 617-284-3310", r"(?<![\d-])(?:\+1[ .-]?)?\(\d{3}\) ?\d{3}-\d{4}\b|"
                    r"(?<![\d/-])\d{3}([.-])\d{3}\1\d{4}\b", 0.6)]),
        PatternRecognizer(supported_entity="AGE", name="AgeOver89Recognizer", patterns=[
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
                    rf"grandson|granddaughter|guardian|caregiver|patient|pt|name|contact|attending|signed|"
                    rf"signed{SP}by|seen{SP}by|PCP|NOK"),
        UsNpiRecognizer(),
        UsHealthInsuranceMemberIdRecognizer(),
        UsMbiRecognizer(),
    ]
