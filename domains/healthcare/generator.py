"""Synthetic clinical encounter notes carrying realistic HIPAA Safe Harbor identifiers.

    from domains.healthcare.generator import generate
    rows = generate(400, seed=0)   # deterministic for (n, seed); 10,000 notes in about a second

Each row is `{"encounter_id", "note", "diagnosis", "sex", "race", "age_band", "phi", "phi_types"}`.
The note (~500-900 characters; a fifth in UPPER-CASE nursing style) is assembled from
shuffled sections with many phrasings, so the diagnosis (cardiac, respiratory,
gastrointestinal, neurological) is inferable from symptoms, exam and work-up, while past
history and a stray secondary complaint add noise from other systems. Identifiers planted
in the note (names, dates, MRN, phone/fax, address, ages over 89, hospital, email, SSN,
health-plan, account and NPI numbers) are listed verbatim in `phi`, their type in the
parallel `phi_types`; the de-identify tests use them to measure leakage. Nothing here is
ever written to disk by the pipeline.

Name and place pools here must stay disjoint from the surrogate pools in
`tasks/deidentify.py` (a test checks), so a surrogate can never look like a leak.
"""

from __future__ import annotations

import datetime as dt
import random

LABELS = ("cardiac", "respiratory", "gastrointestinal", "neurological")

FIRST_F = (
    "Maria", "Linda", "Patricia", "Deborah", "Aisha", "Keisha", "Latoya", "Mei", "Priya", "Sofia",
    "Guadalupe", "Ana", "Yolanda", "Margaret", "Dorothy", "Evelyn", "Helen", "Gloria", "Nadia", "Fatima",
    "Hye-jin", "Thi", "Lakshmi", "Ingrid", "Colleen", "Brenda", "Tamika", "Rosalind", "Consuelo", "Esperanza",
)
FIRST_M = (
    "John", "Robert", "Michael", "William", "James", "Jamal", "DeShawn", "Terrence", "Wei", "Hiroshi",
    "Rajesh", "Arjun", "Carlos", "Jose", "Luis", "Miguel", "Thomas", "Gerald", "Harold", "Walter",
    "Ahmed", "Omar", "Tuan", "Sung-min", "Dmitri", "Kwame", "Darnell", "Francisco", "Eduardo", "Bernard",
)
SURNAMES = (
    "Carter", "Lopez", "Nguyen", "Okafor", "Hernandez", "Washington", "Kowalski", "Patel", "Chen", "Johansson",
    "Rodriguez", "Jefferson", "Yamamoto", "Gonzalez", "Abernathy", "Fitzgerald", "Delacroix", "Ramirez",
    "Thibodeaux", "Kim", "Mbeki", "Castellano", "Oyelaran", "McAllister", "Brennan", "Sandoval", "Rosenberg",
    "Villanueva", "Ivanova", "Haddad", "Kaczmarek", "Albright", "Whitfield", "Osei", "Takahashi", "Moreno",
    "Goldstein", "Pham", "Bianchi", "Schreiber", "Dubois", "Okonkwo", "Lindqvist", "Ferreira", "Castillo",
)
CITIES = (  # (city, state, ZIP prefix)
    ("Cambridge", "MA", "021"), ("Worcester", "MA", "016"), ("Hartford", "CT", "061"), ("Providence", "RI", "029"),
    ("Albany", "NY", "122"), ("Rochester", "NY", "146"), ("Trenton", "NJ", "086"), ("Allentown", "PA", "181"),
    ("Baltimore", "MD", "212"), ("Richmond", "VA", "232"), ("Raleigh", "NC", "276"), ("Charleston", "SC", "294"),
    ("Savannah", "GA", "314"), ("Tampa", "FL", "336"), ("Birmingham", "AL", "352"), ("Nashville", "TN", "372"),
    ("Louisville", "KY", "402"), ("Columbus", "OH", "432"), ("Dayton", "OH", "454"), ("Lansing", "MI", "489"),
    ("Milwaukee", "WI", "532"), ("Duluth", "MN", "558"), ("Omaha", "NE", "681"), ("Wichita", "KS", "672"),
    ("Tulsa", "OK", "741"), ("El Paso", "TX", "799"), ("Lubbock", "TX", "794"), ("Albuquerque", "NM", "871"),
    ("Tucson", "AZ", "857"), ("Boise", "ID", "837"), ("Spokane", "WA", "992"), ("Eugene", "OR", "974"),
    ("Fresno", "CA", "937"), ("Oakland", "CA", "946"), ("Sacramento", "CA", "958"), ("Reno", "NV", "895"),
)
STREETS = (
    "Elm", "Maple", "Oakwood", "Chestnut", "Sycamore", "Magnolia", "Juniper", "Hawthorne", "Beacon", "Summit",
    "Willow Creek", "Harbor View", "Lakeshore", "Prospect", "Fairmount", "Kensington", "Briarwood", "Cypress",
)
STREET_SUFFIX = ("Street", "St", "Avenue", "Ave", "Road", "Rd", "Lane", "Ln", "Drive", "Boulevard", "Court", "Way")
HOSPITAL_PLACE = (
    "Mercy", "Good Samaritan", "Lakeview", "Bayside", "Northfield", "Brookhaven", "Cedar Hills", "Pinecrest",
    "Holy Cross", "Saint Agnes", "St. Vincent's", "St. Luke's", "Baptist", "Methodist", "Covenant",
)
HOSPITAL_KIND = (
    "Medical Center", "Hospital", "General Hospital", "Memorial Hospital", "Regional Medical Center",
    "Community Hospital", "Health Center", "Clinic", "Urgent Care Clinic",
)
EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "aol.com", "icloud.com", "comcast.net", "hotmail.com")
AREA_CODES = ("617", "508", "860", "401", "518", "585", "609", "610", "410", "804", "919", "843", "912",
              "813", "205", "615", "502", "614", "937", "517", "414", "218", "402", "316", "918", "915",
              "505", "520", "208", "509", "541", "559", "510", "916", "775")
PLANS = ("BCBS", "Aetna", "Cigna", "UnitedHealthcare", "Humana", "Medicaid", "Kaiser", "Tufts HP", "Harvard Pilgrim")
RELATIONS_F = ("wife", "daughter", "sister", "mother", "niece", "granddaughter")
RELATIONS_M = ("husband", "son", "brother", "father", "nephew", "grandson")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
PMH_ALL = ("HTN", "HLD", "DM2", "CKD stage 3", "GERD", "hypothyroidism", "OSA on CPAP", "obesity", "depression",
           "BPH", "osteoarthritis", "anxiety", "gout", "anemia", "asthma", "COPD", "CAD s/p PCI", "A-fib",
           "migraines", "prior CVA", "IBS", "cholelithiasis")

# Per-label clinical content: chief complaints, history, exam, work-up, impression, treatment.
CLINICAL = {
    "cardiac": {
        "cc": ("chest pain", "CP", "substernal chest pressure", "palpitations", "chest tightness radiating to L arm",
               "exertional chest discomfort", "syncope with exertion", "DOE and bilateral leg swelling"),
        "hpi": ("pain radiates to the jaw and L arm", "diaphoretic on arrival", "assoc nausea and diaphoresis",
                "worse w/ exertion, relieved by rest", "pressure-like, rated 8/10", "3-pillow orthopnea and PND",
                "15 lb weight gain over 2 wks", "heart racing since this AM", "took 2 SL NTG at home w/o relief"),
        "exam": ("S3 gallop", "JVD to angle of jaw", "irregularly irregular rhythm", "2+ pitting edema bilat LE",
                 "holosystolic murmur at apex", "cool clammy extremities", "bibasilar crackles"),
        "workup": ("troponin 0.42 (H)", "trop I 1.8, repeat pending", "ECG: ST elevation V2-V4", "EKG w/ new LBBB",
                   "ECG: AF w/ RVR rate 142", "BNP 1240", "echo: EF 30%, global hypokinesis",
                   "CXR: cardiomegaly, vascular congestion", "ECG: ST depressions II, III, aVF"),
        "impression": ("NSTEMI", "inferior STEMI", "ACS", "unstable angina", "new-onset AF w/ RVR",
                       "acute decompensated CHF", "symptomatic bradycardia", "demand ischemia"),
        "plan": ("ASA 325 mg chewed", "NTG 0.4 mg SL", "heparin gtt per ACS protocol", "metoprolol 25 mg PO",
                 "atorvastatin 80 mg", "furosemide 40 mg IV", "diltiazem 10 mg IV push", "clopidogrel load 600 mg",
                 "cardiology consulted", "cath lab activated", "admit to telemetry", "serial troponins q3h"),
    },
    "respiratory": {
        "cc": ("SOB", "shortness of breath", "productive cough", "wheezing", "cough and fever", "hemoptysis",
               "worsening dyspnea", "cough x1 wk w/ yellow sputum"),
        "hpi": ("green sputum", "fevers to 101.8 at home", "using rescue inhaler q2h", "sick contacts at home",
                "former smoker, 40 pack-yrs", "unable to speak full sentences", "pleuritic pain w/ deep breaths",
                "recent URI"),
        "exam": ("diffuse expiratory wheezes", "rhonchi R base", "decreased breath sounds L base",
                 "accessory muscle use", "tachypneic to 28", "egophony RLL", "prolonged expiratory phase"),
        "workup": ("SpO2 88% on RA", "CXR: RLL consolidation", "CXR: hyperinflation, no infiltrate",
                   "ABG 7.31/58/62", "CTA chest neg for PE", "RVP + influenza A", "procalcitonin 1.2",
                   "peak flow 180 (40% predicted)", "CXR: L pleural effusion"),
        "impression": ("CAP", "COPD exacerbation", "asthma exacerbation", "influenza pneumonia", "acute bronchitis",
                       "parapneumonic effusion", "hypoxic resp failure"),
        "plan": ("duonebs q4h", "albuterol neb x3", "prednisone 40 mg x5d", "azithromycin 500 mg", "ceftriaxone 1 g IV",
                 "methylprednisolone 125 mg IV", "doxycycline 100 mg BID", "oseltamivir 75 mg BID",
                 "BiPAP trial", "O2 via NC titrate SpO2 > 92%", "pulmonology consulted"),
    },
    "gastrointestinal": {
        "cc": ("abdominal pain", "abd pain", "N/V", "nausea and vomiting", "RUQ pain", "epigastric pain",
               "diarrhea", "BRBPR", "melena", "coffee-ground emesis"),
        "hpi": ("pain after fatty meals", "worse after eating", "pain radiates to the back",
                "unable to tolerate PO", "6 episodes of NBNB emesis", "last BM 3 days ago, no flatus",
                "drinks 6 beers/day", "dark tarry stools x2 days", "watery stools 8-10x/day"),
        "exam": ("RUQ tenderness, + Murphy's sign", "epigastric TTP", "RLQ tenderness w/ rebound",
                 "abd distended, tympanic", "hypoactive bowel sounds", "voluntary guarding", "guaiac + stool"),
        "workup": ("lipase 1,240", "LFTs: AST 212, ALT 340, T bili 3.1", "RUQ US: gallstones w/ GB wall thickening",
                   "CT A/P: dilated SB loops w/ transition point", "Hgb 7.9 (baseline 12)",
                   "CT A/P: appendix 12 mm w/ fat stranding", "stool cx and C diff pending", "BUN 48"),
        "impression": ("acute cholecystitis", "acute pancreatitis", "SBO", "acute appendicitis", "upper GI bleed",
                       "viral gastroenteritis", "sigmoid diverticulitis"),
        "plan": ("ondansetron 4 mg IV", "pantoprazole 40 mg IV BID", "NPO, IVF", "LR 1 L bolus", "morphine 4 mg IV",
                 "pip-tazo 3.375 g IV", "NGT to LIWS", "GI consulted for EGD", "general surgery consulted",
                 "type and screen, transfuse Hgb < 7"),
    },
    "neurological": {
        "cc": ("headache", "HA", "L-sided weakness", "slurred speech", "facial droop", "seizure", "vertigo",
               "acute confusion", "numbness R arm"),
        "hpi": ("worst headache of life", "thunderclap onset", "LKW 08:30", "witnessed tonic-clonic sz ~2 min",
                "postictal on arrival", "photophobia and neck stiffness", "word-finding difficulty",
                "tongue laceration, urinary incontinence", "sx started abruptly while at breakfast"),
        "exam": ("R facial droop", "L pronator drift", "dysarthria", "expressive aphasia", "NIHSS 7",
                 "nuchal rigidity", "GCS 13", "L hemiparesis, strength 3/5", "R visual field cut"),
        "workup": ("CT head: no acute bleed", "CT head: hyperdense L MCA sign", "MRI brain: acute R MCA infarct",
                   "LP: xanthochromia", "EEG ordered", "CTA head/neck: L ICA occlusion", "POC glucose 112",
                   "CT head: SAH in basal cisterns"),
        "impression": ("acute ischemic stroke", "TIA", "SAH", "migraine w/ aura", "new-onset seizure",
                       "Bell's palsy", "bacterial meningitis", "ICH"),
        "plan": ("tPA given", "levetiracetam 1 g IV", "lorazepam 2 mg IV", "sumatriptan 6 mg SC",
                 "metoclopramide 10 mg IV", "stroke alert activated", "neurology consulted",
                 "neuro checks q1h", "neurosurgery consulted", "SBP goal < 140"),
    },
}
SECONDARY = ("mild cough", "some nausea", "occasional HA", "chronic low back pain", "intermittent palpitations",
             "mild dizziness", "loose stools yesterday", "seasonal allergies")
HEADERS = ("ED PROVIDER NOTE", "Emergency Department Encounter", "Triage Note", "H&P", "Admission H&P",
           "Urgent Care Visit", "Progress Note - Hospital Day 2", "Consult Note", "ED Physician Documentation",
           "Clinic Visit Note", "Rapid Response Note")
# (probabilities of group values per label; no value maps to one label)
AGE_BAND_P = {
    "cardiac": (0.15, 0.35, 0.38, 0.12), "respiratory": (0.30, 0.28, 0.32, 0.10),
    "gastrointestinal": (0.38, 0.32, 0.23, 0.07), "neurological": (0.22, 0.30, 0.36, 0.12),
}
AGE_BANDS = (("18-44", 18, 44), ("45-64", 45, 64), ("65-89", 65, 89), ("90+", 90, 104))
RACES = ("White", "Black", "Hispanic", "Asian", "Other")
RACE_P = (0.42, 0.2, 0.2, 0.12, 0.06)


class _Note:
    """Collects note sections and every identifier string planted in them."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.phi: list[str] = []
        self.types: list[str] = []

    def plant(self, kind: str, value: str) -> str:
        self.phi.append(value)
        self.types.append(kind)
        return value


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def phone(rng: random.Random) -> str:
    area, exch, line = rng.choice(AREA_CODES), str(rng.randint(201, 989)), digits(rng, 4)
    if exch in ("555", "211", "311", "411", "511", "611", "711", "811", "911"):
        exch = "284"
    return rng.choice((
        f"({area}) {exch}-{line}", f"{area}-{exch}-{line}", f"{area}.{exch}.{line}", f"{area} {exch} {line}",
        f"+1 {area}-{exch}-{line}", f"({area}){exch}-{line}",
    ))


def _ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def _npi(rng: random.Random) -> str:
    """A 10-digit NPI with a valid Luhn check digit over the "80840" prefix (CMS spec)."""
    body = rng.choice("12") + digits(rng, 8)
    values = [int(c) for c in "80840" + body]
    total = 0
    for i, d in enumerate(reversed(values)):  # the check digit will sit to the right
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return body + str((10 - total % 10) % 10)


def _mrn(rng: random.Random) -> str:
    return rng.choice((
        digits(rng, 8), digits(rng, 7), "00" + digits(rng, 6), rng.choice("EHMK") + digits(rng, 7),
        f"{digits(rng, 3)}-{digits(rng, 3)}-{digits(rng, 3)}", f"{digits(rng, 6)}-{rng.randint(0, 9)}",
    ))


def _ordinal(day: int) -> str:
    return f"{day}{'th' if 11 <= day % 100 <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th')}"


def _date(rng: random.Random, d: dt.date, with_year: bool = True) -> str:
    month = MONTHS[d.month - 1]
    full = (f"{d.month}/{d.day}/{d.year}", f"{d:%Y-%m-%d}", f"{d:%m/%d/%Y}", f"{month} {d.day}, {d.year}",
            f"{month[:3]} {d.day}, {d.year}", f"{d.day} {month} {d.year}", f"{d.month}/{d.day}/{d:%y}",
            f"{d.day}-{month[:3]}-{d.year}")
    short = (f"{d.month}/{d.day}", f"{month} {_ordinal(d.day)}", f"{d.day}-{month[:3]}", f"{month} {d.day}")
    return rng.choice(full if with_year else full + short + short)


def _person(rng: random.Random, sex: str) -> tuple[str, str]:
    return rng.choice(FIRST_F if sex == "female" else FIRST_M), rng.choice(SURNAMES)


def _hospital(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return f"{rng.choice(SURNAMES)} Memorial Hospital"
    if rng.random() < 0.2:
        return f"University of {rng.choice(CITIES)[0]} Medical Center"
    return f"{rng.choice(HOSPITAL_PLACE)} {rng.choice(HOSPITAL_KIND)}"


def _age_phrase(rng: random.Random, age: int, sex: str) -> tuple[str, str]:
    """('93 yo woman', '93 yo'): the whole phrase, and the part that identifies when age > 89."""
    s = "F" if sex == "female" else "M"
    word = rng.choice(("woman", "female", "F")) if sex == "female" else rng.choice(("man", "male", "M"))
    core = rng.choice((f"{age} yo", f"{age}-year-old", f"{age} y/o", f"{age} y.o.", f"{age} year old", f"{age}yo"))
    return (f"{core}{s}" if core.endswith("yo") and rng.random() < 0.3 else f"{core} {word}"), core


def _pick(rng: random.Random, items, k: int) -> list:
    return rng.sample(items, min(k, len(items)))


def _one(rng: random.Random, label: str) -> dict:
    clin = CLINICAL[label]
    note = _Note(rng)
    plant = note.plant
    sex = rng.choice(("female", "male"))
    race = rng.choices(RACES, RACE_P)[0]
    band, lo, hi = rng.choices(AGE_BANDS, AGE_BAND_P[label])[0]
    age = rng.randint(lo, hi)
    first, last = _person(rng, sex)
    visit = dt.date(2014, 1, 1) + dt.timedelta(days=rng.randint(0, 3650))
    dob = visit - dt.timedelta(days=age * 365 + rng.randint(1, 360))
    doc_first, doc_last = _person(rng, rng.choice(("female", "male")))
    nursing = rng.random() < 0.2  # UPPER-CASE nursing-note style
    pt = rng.choice(("pt", "Pt", "patient", "Patient"))
    his = "her" if sex == "female" else "his"

    # -- identity line: always a name and an MRN-like id, usually dates
    mrn_label = rng.choice(("MRN", "MRN:", "MRN#", "MR#", "Med Rec #:", "Medical Record No.", "Hosp #", "MRN #"))
    mrn = plant("MRN", _mrn(rng))
    style = rng.randrange(5)
    if style == 0:
        ident = f"Name: {plant('NAME', f'{last.upper()}, {first.upper()}')}  {mrn_label} {mrn}"
    elif style == 1:
        ident = f"Patient: {plant('NAME', f'{last}, {first}')} | {mrn_label} {mrn}"
    elif style == 2:
        ident = f"Patient: {plant('NAME', f'{first} {last}')}   {mrn_label} {mrn}"
    elif style == 3:
        ident = f"Pt {plant('NAME', f'{first} {last}')} ({mrn_label} {mrn})"
    else:
        ident = f"{plant('NAME', f'{first} {last}')}, {mrn_label} {mrn}"
    style = rng.randrange(3)
    if style == 0:
        ident += f"  DOB: {plant('DATE', _date(rng, dob))}"
    elif style == 1:
        ident += f", DOB {plant('DATE', _date(rng, dob))}"
    style = rng.randrange(4)
    if style == 0:
        ident += f"  DOS: {plant('DATE', _date(rng, visit))}"
    elif style == 1:
        ident += f"  Date of service {plant('DATE', _date(rng, visit))}"
    elif style == 2:
        ident += f"  Seen {plant('DATE', _date(rng, visit, with_year=False))}"
    else:
        ident += f"  Admit date: {plant('DATE', _date(rng, visit))}"
    header = rng.choice(HEADERS)
    if rng.random() < 0.6:
        header += f" - {plant('HOSPITAL', _hospital(rng))}"

    # -- history of present illness
    age_text, age_core = _age_phrase(rng, age, sex)
    if age >= 90:  # Safe Harbor: ages over 89 are identifiers
        plant("AGE", age_core)
    pmh = ", ".join(_pick(rng, PMH_ALL, rng.randint(1, 3)))
    cc = " and ".join(_pick(rng, clin["cc"], rng.randint(1, 2)))
    dur = rng.choice(("x2 days", "x 3d", "since yesterday", "for 1 wk", "x4 hrs", "since this AM", "x 2 hours",
                      "for the past 3 days", "that began last night"))
    if rng.random() < 0.5:
        hpi = [f"{age_text} w/ PMH {pmh} presents w/ {cc} {dur}."]
    else:
        hpi = [f"{pt.capitalize()} is a {age_text} with hx of {pmh} who c/o {cc} {dur}."]
    hpi += [s[0].upper() + s[1:] + "." for s in _pick(rng, clin["hpi"], rng.randint(1, 3))]
    if rng.random() < 0.3:
        hpi.append(f"Also reports {rng.choice(SECONDARY)}.")
    if rng.random() < 0.35:
        rel_sex = rng.choice(("female", "male"))
        relations = RELATIONS_F if rel_sex == "female" else RELATIONS_M
        relation = rng.choice(relations if age >= 60 else relations[:-1])  # grandchildren only when older
        rel_first, rel_last = _person(rng, rel_sex)
        rel_last = last if rng.random() < 0.5 else rel_last
        style = rng.randrange(3)
        if style == 0:
            hpi.append(f"Hx obtained from {pt}'s {relation} {plant('NAME', rel_first)}.")
        elif style == 1:
            hpi.append(f"{his.capitalize()} {relation} {plant('NAME', f'{rel_first} {rel_last}')} is at bedside.")
        else:
            hpi.append(f"Brought in by {relation} ({plant('NAME', rel_first)}), who found {pt} at home.")

    # -- exam, work-up, assessment and plan
    bp = f"{rng.randint(96, 188)}/{rng.randint(54, 110)}"
    hr, rr, sat = rng.randint(52, 138), rng.randint(12, 30), rng.randint(86, 100)
    temp = rng.choice(("98.6F", "37.1C", "101.2F", "99.1F", "36.8C", "100.4F"))
    vitals = rng.choice((f"VS: BP {bp}, HR {hr}, RR {rr}, T {temp}, SpO2 {sat}% RA",
                         f"Vitals BP {bp} P {hr} R {rr} SpO2 {sat}%",
                         f"BP {bp}  HR {hr}  RR {rr}  O2 sat {sat}% on RA"))
    exam = f"Exam: {'; '.join(_pick(rng, clin['exam'], rng.randint(1, 3)))}."
    workup = rng.choice(("Labs/imaging: ", "Workup: ", "Results: ", "Dx: ")) \
        + "; ".join(_pick(rng, clin["workup"], rng.randint(2, 3))) + "."
    impression = rng.choice(("A/P: ", "Assessment/Plan: ", "Impression: ", "Assessment: ")) \
        + f"{rng.choice(clin['impression'])}. " + ", ".join(_pick(rng, clin["plan"], rng.randint(2, 4))) + "."

    # -- optional sections with more identifiers, added while the note is short enough
    optional = []
    city, state, zip3 = rng.choice(CITIES)
    street = f"{rng.randint(2, 9899)} {rng.choice(STREETS)} {rng.choice(STREET_SUFFIX)}"
    zipc = zip3 + digits(rng, 2)
    style = rng.randrange(3)
    if style == 0:
        optional.append(f"Lives at {plant('ADDRESS', street)}, {plant('CITY', city)}, {state} {plant('ZIP', zipc)} "
                        f"w/ {rng.choice(('spouse', 'family', 'daughter', 'roommate'))}.")
    elif style == 1:
        optional.append(f"Address: {plant('ADDRESS', street)}, {plant('CITY', city)} {state} {plant('ZIP', zipc)}.")
    else:
        optional.append(f"Resides in {plant('CITY', city)}, {state}; lives alone, independent w/ ADLs.")
    style = rng.randrange(3)
    if style == 0:
        optional.append(f"Contact: {plant('PHONE', phone(rng))} (cell).")
    elif style == 1:
        optional.append(f"Best callback # {plant('PHONE', phone(rng))}.")
    else:
        contact = " ".join(_person(rng, rng.choice(("female", "male"))))
        optional.append(f"Emergency contact: {rng.choice(RELATIONS_F + RELATIONS_M)} {plant('NAME', contact)}, "
                        f"ph {plant('PHONE', phone(rng))}.")
    style = rng.randrange(3)
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    if style == 0:
        member = "".join(rng.choice(letters) for _ in range(3)) + digits(rng, 9)
        optional.append(f"Insurance: {rng.choice(PLANS)} Member ID {plant('HEALTH_PLAN', member)}.")
    elif style == 1:
        plan_id = plant("HEALTH_PLAN", digits(rng, 8) + rng.choice("ABC"))
        optional.append(f"Health plan ID: {plan_id} ({rng.choice(PLANS)}).")
    else:
        policy = f"{digits(rng, 3)}-{digits(rng, 4)}-{digits(rng, 4)}"
        optional.append(f"Acct # {plant('ACCOUNT', digits(rng, rng.choice((7, 8, 10))))}; "
                        f"{rng.choice(PLANS)} policy # {plant('HEALTH_PLAN', policy)}.")
    style = rng.randrange(3)
    if style == 0:
        optional.append(f"PCP: Dr. {plant('NAME', f'{doc_first} {doc_last}')}, NPI {plant('NPI', _npi(rng))}, "
                        f"fax {plant('PHONE', phone(rng))}.")
    elif style == 1:
        optional.append(f"Records faxed to Dr. {plant('NAME', doc_last)} at {plant('PHONE', phone(rng))}.")
    else:
        service = rng.choice(("cardiology", "hospitalist", "PCP", "on-call"))
        optional.append(f"D/w Dr. {plant('NAME', doc_last)} ({service}), who agrees w/ plan.")
    email = rng.choice((f"{first.lower()}.{last.lower()}", f"{first[0].lower()}{last.lower()}{rng.randint(1, 99)}",
                        f"{last.lower()}{first[0].lower()}", f"{first.lower()}{rng.randint(1950, 2005)}"))
    email = plant("EMAIL", f"{email}@{rng.choice(EMAIL_DOMAINS)}")
    optional.append(f"{rng.choice(('Portal email', 'Email on file', 'Pt email'))}: {email}.")
    if rng.random() < 0.3:
        optional.append(f"SSN {plant('SSN', _ssn(rng))} verified at registration.")
    follow = visit + dt.timedelta(days=rng.randint(3, 30))
    style = rng.randrange(3)
    if style == 0:
        optional.append(f"F/u w/ Dr. {plant('NAME', doc_last)} on "
                        f"{plant('DATE', _date(rng, follow, with_year=False))}.")
    elif style == 1:
        optional.append(f"Follow-up appt {plant('DATE', _date(rng, follow))} at {plant('HOSPITAL', _hospital(rng))}.")
    else:
        optional.append(f"Transferred from {plant('HOSPITAL', _hospital(rng))} on "
                        f"{plant('DATE', _date(rng, visit, with_year=False))}.")
    style = rng.randrange(3)
    if style == 0:
        optional.append(f"Electronically signed: {plant('NAME', f'{doc_first} {doc_last}')}, MD "
                        f"{plant('DATE', _date(rng, visit))} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}")
    elif style == 1:
        optional.append(f"-- {plant('NAME', ' '.join(_person(rng, rng.choice(('female', 'male')))))}, RN")
    else:
        optional.append(f"Attending: Dr. {plant('NAME', f'{doc_first[0]}. {doc_last}')}")
    rng.shuffle(optional)

    if nursing:  # terse nursing style, upper-cased below
        sections = [ident, f"{pt} A&Ox{rng.choice((2, 3, 4))}. " + " ".join(hpi), vitals, exam, workup, impression]
    else:
        sections = [header, ident, " ".join(hpi), vitals, exam, workup, impression]
    target = rng.randint(560, 900)
    length = sum(len(s) + 1 for s in sections)
    for section in optional:
        if length >= target:
            break
        if length + len(section) + 1 <= 900 or length < 500:
            at = rng.randint(3, len(sections)) if rng.random() < 0.4 else len(sections)
            sections.insert(at, section)
            length += len(section) + 1
    text = "\n".join(sections)
    planted = list(zip(note.types, note.phi, strict=True))
    if nursing:
        text = text.upper()
        planted = [(k, v.upper()) for k, v in planted]
    # identifiers of optional sections left out of the note are not planted; duplicates once
    planted = list(dict.fromkeys((k, v) for k, v in planted if v in text))
    return {
        "encounter_id": f"ENC{rng.randint(10**7, 10**8 - 1)}",  # a raw id; the pipeline renumbers
        "note": text,
        "diagnosis": label,
        "sex": sex,
        "race": race,
        "age_band": band,
        "phi": [v for _, v in planted],
        "phi_types": [k for k, _ in planted],
    }


def generate(n: int, seed: int) -> list[dict]:
    """`n` synthetic encounter notes, deterministic for (n, seed); labels cycle in shuffled blocks."""
    rng = random.Random(seed)
    rows = []
    block: list[str] = []
    for _ in range(n):
        if not block:
            block = list(LABELS)
            rng.shuffle(block)
        rows.append(_one(rng, block.pop()))
    return rows
