"""Synthetic clinical notes with gold PHI character spans: the de-identification benchmark corpus.

`generate(n, seed) -> [{"id", "text", "spans": [{"start", "end", "entity_type", "value"[, "kind"]}]}]`
with `text[start:end] == value`, spans sorted and non-overlapping, deterministic for a seed.
Each note also carries "style" (nursing | progress | discharge | triage) for per-style scores.

Independent of the recognizers under test: imports nothing from tasks/ or domains/. Names,
streets and cities come from Faker (several Latin-script locales: US hospital populations are
diverse); pools are drawn once from a fixed Faker seed, so a seed gives the same corpus for a
given Faker version.

Four note styles: UPPER-CASE nursing notes, mixed-case progress notes with headers, discharge
summaries / phone-telehealth encounters, terse triage notes (some sloppy lower-case). Entity
types follow HIPAA Safe Harbor items found in free text: PERSON, DATE (not years alone, not
times), AGE (> 89 only; span = the number, i2b2 style), ID (kind MRN, ACCOUNT, HEALTH_PLAN,
NPI, DEA, LICENSE, SSN, DEVICE, VEHICLE), PHONE (phone, fax, pager), LOCATION (kind STREET,
CITY, ZIP, HOSPITAL, WARD, OTHER), EMAIL, URL, IP. Spans cover only the identifier: never
titles ("Dr.", "RN") or labels ("MRN:"). Not spans, on purpose (they trip NER): states,
countries, years alone, clock times, ages <= 89, bare room numbers, vitals and lab values,
eponyms (Foley, Murphy's sign, Glasgow), drug names, clinical abbreviations. Holidays
("since Thanksgiving") are DATE (i2b2 convention); generic unit names (MICU, CCU) are WARD.
"""
from __future__ import annotations

import datetime as dt
import functools
import random
import string
import unicodedata

from faker import Faker

# ---------------------------------------------------------------------------------------------
# Pools (drawn once from Faker with a fixed seed)

# Locale mix for patient/family/staff names; weights roughly a large US urban hospital.
_NAME_LOCALES = [("en_US", 0.58), ("es_MX", 0.15), ("en_IN", 0.07), ("vi_VN", 0.05),
                 ("zh_CN", 0.05), ("en_GB", 0.05), ("pt_BR", 0.05)]
_POOL = 300


def _ascii(s: str) -> str:
    """US EHRs often drop diacritics (Nguyễn -> Nguyen)."""
    s = s.replace("đ", "d").replace("Đ", "D")
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))


@functools.lru_cache(maxsize=1)
def _pools() -> dict:
    pools: dict = {"first_m": {}, "first_f": {}, "last": {}}
    for i, (loc, _) in enumerate(_NAME_LOCALES):
        f = Faker(loc)
        f.seed_instance(1000 + i)
        if loc == "zh_CN":  # romanised only (Latin script)
            fm = [f.first_romanized_name() for _ in range(_POOL)]
            ff = fm[::-1]
            la = [f.last_romanized_name() for _ in range(_POOL)]
        else:
            fm = [f.first_name_male() for _ in range(_POOL)]
            ff = [f.first_name_female() for _ in range(_POOL)]
            la = [f.last_name() for _ in range(_POOL)]
        # Faker es_MX sometimes yields compound first names ("Juan Carlos"): keep, realistic.
        pools["first_m"][loc] = [x for x in fm if x.replace(" ", "").isalpha()]
        pools["first_f"][loc] = [x for x in ff if x.replace(" ", "").isalpha()]
        pools["last"][loc] = [x for x in la if x.replace(" ", "").replace("-", "").isalpha()]
    us = Faker("en_US")
    us.seed_instance(7)
    pools["street"] = [us.street_address() for _ in range(1200)]
    pools["street_name"] = [us.street_name() for _ in range(400)]
    pools["city_fake"] = [us.city() for _ in range(600)]
    pools["zip"] = [us.zipcode() for _ in range(1200)]
    pools["zip4"] = [us.zipcode_plus4() for _ in range(300)]
    pools["ip4"] = [us.ipv4_public() for _ in range(600)]
    pools["ip6"] = [us.ipv6() for _ in range(100)]
    pools["email_domain"] = [us.free_email_domain() for _ in range(50)] + ["comcast.net", "verizon.net",
                                                                           "aol.com", "icloud.com"]
    pools["word"] = [us.word() for _ in range(200)]
    mx = Faker("es_MX")
    mx.seed_instance(8)
    pools["city_mx"] = [mx.city() for _ in range(100)]
    return pools


# Real cities (several person-like: Chelsea, Lowell, Lawrence, Shelby, Tyler, Marion).
_REAL_CITIES = ["Boston", "Quincy", "Lowell", "Chelsea", "Revere", "Lynn", "Worcester", "Brockton",
                "Lawrence", "Everett", "Malden", "Somerville", "Cambridge", "Dorchester", "Framingham",
                "Springfield", "Houston", "El Paso", "San Jose", "Tyler", "Shelby", "Marion", "Jackson",
                "Madison", "Austin", "Charlotte", "Aurora", "Florence", "Warren", "Salem", "Newton",
                "Brookline", "Waltham", "Fall River", "New Bedford", "Chicago", "Phoenix", "Denver"]
_ORIGIN = {"en_US": [("Haiti", "Haitian Creole"), ("Puerto Rico", "Spanish"), ("Ireland", "English")],
           "es_MX": [("Mexico", "Spanish"), ("Guatemala", "Spanish"), ("El Salvador", "Spanish"),
                     ("the Dominican Republic", "Spanish")],
           "vi_VN": [("Vietnam", "Vietnamese")], "zh_CN": [("China", "Mandarin"), ("Hong Kong", "Cantonese")],
           "pt_BR": [("Brazil", "Portuguese"), ("Cape Verde", "Cape Verdean Creole")],
           "en_IN": [("India", "Hindi"), ("India", "Gujarati"), ("Nepal", "Nepali")],
           "en_GB": [("England", "English"), ("Jamaica", "English")]}
_STATES = ["MA", "NH", "RI", "CT", "NY", "TX", "CA", "FL", "Texas", "Maine", "Vermont", "Ohio",
           "Georgia", "Virginia", "Florida"]
_AREA = ["617", "857", "781", "508", "978", "413", "603", "401", "212", "713", "832", "214",
         "305", "408", "312", "404", "202", "860", "774", "339"]
_SAINTS = ["Mary", "Joseph", "Elizabeth", "Luke", "Vincent", "Anne", "Francis", "Jude", "Margaret",
           "Catherine", "John", "Michael"]
_HOSP_FIXED = ["Mass General", "MGH", "Brigham and Women's", "the Brigham", "Beth Israel Deaconess",
               "BIDMC", "Boston Medical Center", "BMC", "Tufts Medical Center", "Lahey", "Faulkner",
               "Mount Auburn Hospital", "Cambridge Health Alliance", "South Shore Hospital",
               "Newton-Wellesley", "Spaulding Rehab", "Dana-Farber", "Children's Hospital",
               "Kindred Hospital", "Baptist Medical Center", "Memorial Hermann", "Good Samaritan",
               "Mercy Hospital", "Holy Family Hospital", "Lawrence General"]
_WARDS = ["4 West", "5 North", "7 South", "6 East", "12 Tower", "MICU", "SICU", "CCU", "CVICU",
          "NICU", "Ellison 12", "Ellison 16", "Blake 7", "Bigelow 9", "White 8", "Phillips 21",
          "Lunder 6", "Farr 4", "Stoneman 7", "Gray 3", "Shapiro 9", "Tower 10", "Wang ACC",
          "Yawkey 5", "Baker 6", "Founders 5", "Burnham 4", "Wang 3"]
_NH_SUFFIX = ["Manor", "Nursing and Rehabilitation Center", "Healthcare", "Senior Living",
              "Rehab", "Skilled Nursing Facility", "House", "Gardens", "Assisted Living"]
_NH_FIXED = ["Hebrew SeniorLife", "Pine Street Inn", "Sunrise of Newton", "Golden Living Center",
             "Brookhaven Rehab", "the Kings Daughters Home", "Marian Manor", "Rosewood Gardens",
             "Bridgewell Group Home", "New England Center for Homeless Veterans", "Oak Knoll Rehab"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]


def _ordinal(d: int) -> str:
    suf = "th" if 10 <= d % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
    return f"{d}{suf}"


# ---------------------------------------------------------------------------------------------
# Note builder: appends text pieces and entity pieces, recording spans as it goes.

class _Note:
    def __init__(self, upper: bool = False, lower: bool = False):
        self.parts: list[str] = []
        self.spans: list[dict] = []
        self.n = 0
        self.upper = upper
        self.lower = lower

    def _case(self, s: str) -> str:
        # per piece, so offsets stay exact even if a case map changes length (ß -> SS)
        return s.upper() if self.upper else s.lower() if self.lower else s

    def t(self, *pieces: str) -> _Note:
        for s in pieces:
            s = self._case(s)
            if s[:1] == " " and self.parts and self.parts[-1][-1:] in (" ", "\n"):
                s = s[1:]  # sentence snippets start with a space; avoid doubles
            self.parts.append(s)
            self.n += len(s)
        return self

    def e(self, etype: str, value: str, kind: str | None = None, case: bool = True) -> _Note:
        value = self._case(value) if case else value
        span = {"start": self.n, "end": self.n + len(value), "entity_type": etype, "value": value}
        if kind:
            span["kind"] = kind
        self.spans.append(span)
        self.parts.append(value)
        self.n += len(value)
        return self

    def text(self) -> str:
        return "".join(self.parts)


# ---------------------------------------------------------------------------------------------
# Value factories (all from one random.Random, so a seed fixes the corpus)

class _Gen:
    def __init__(self, rng: random.Random):
        self.r = rng
        self.p = _pools()
        self._locs = [l for l, _ in _NAME_LOCALES]
        self._w = [w for _, w in _NAME_LOCALES]

    # -- people ----------------------------------------------------------------
    def person(self, sex: str | None = None, locale: str | None = None) -> dict:
        r = self.r
        loc = locale or r.choices(self._locs, self._w)[0]
        sex = sex or r.choice("MF")
        first = r.choice(self.p["first_m" if sex == "M" else "first_f"][loc])
        last = r.choice(self.p["last"][loc])
        if loc == "es_MX" and r.random() < 0.3:  # two surnames, sometimes hyphenated
            last += r.choice([" ", "-"]) + r.choice(self.p["last"][loc])
        if loc in ("es_MX", "vi_VN", "pt_BR") and r.random() < (0.8 if loc == "vi_VN" else 0.5):
            first, last = _ascii(first), _ascii(last)
        if loc == "en_US" and r.random() < 0.04:  # apostrophes and inner capitals trip tokenizers
            last = r.choice(["O'Brien", "O'Connor", "O'Neil", "D'Angelo", "McCarthy", "McLaughlin", "DiMaggio"])
        middle = r.choice(string.ascii_uppercase)
        return {"first": first, "last": last, "middle": middle, "sex": sex, "loc": loc}

    def name(self, p: dict, style: str | None = None) -> str:
        """One surface form of a person's name (clinical styles)."""
        r = self.r
        first, last, mi = p["first"], p["last"], p["middle"]
        style = style or r.choices(
            ["fl", "l_f", "L_F", "l_f_m", "f_m_l", "fi_l", "inits_dot", "inits", "first", "last"],
            [30, 10, 8, 6, 6, 8, 4, 4, 14, 10])[0]
        if style == "fl":
            return f"{first} {last}"
        if style == "l_f":
            return f"{last}, {first}"
        if style == "L_F":
            return f"{last.upper()}, {first.upper()}"
        if style == "l_f_m":
            return f"{last}, {first} {mi}."
        if style == "f_m_l":
            return f"{first} {mi}. {last}"
        if style == "fi_l":
            return f"{first[0]}. {last}"
        if style == "inits_dot":
            return f"{first[0]}.{last[0]}."
        if style == "inits":
            return f"{first[0]}{last[0]}".upper()
        if style == "first":
            return first
        return last

    # -- dates -----------------------------------------------------------------
    def date_between(self, a: dt.date, b: dt.date) -> dt.date:
        return a + dt.timedelta(days=self.r.randint(0, max(0, (b - a).days)))

    def fmt_date(self, d: dt.date, full: bool = False) -> str:
        """A clinical surface form of a date; full=True keeps the year."""
        r = self.r
        m, day, y = d.month, d.day, d.year
        mon, mo3 = _MONTHS[m - 1], _MONTHS[m - 1][:3]
        with_year = [
            f"{m:02d}/{day:02d}/{y}", f"{m}/{day}/{y}", f"{m}/{day}/{y % 100:02d}",
            f"{m:02d}-{day:02d}-{y}", f"{y}-{m:02d}-{day:02d}", f"{mo3} {day}, {y}",
            f"{mon} {day}, {y}", f"{day} {mon} {y}", f"{day}-{mo3}-{y}", f"{day}{mo3.upper()}{y}",
            f"{mon} {_ordinal(day)}, {y}", f"{mo3}. {day}, {y}", f"{y}{m:02d}{day:02d}",
        ]
        wy = [14, 14, 10, 4, 8, 8, 8, 5, 4, 2, 3, 2, 1]
        if full:
            return r.choices(with_year, wy)[0]
        no_year = [f"{m}/{day}", f"{m:02d}/{day:02d}", f"{day}-{mo3}", f"{mon} {_ordinal(day)}",
                   f"{mon} {day}", f"{mo3} {day}", f"{_ordinal(day)} of {mon}", f"{mon} {y}",
                   f"{mo3} {y}", f"{m}/{y % 100:02d}"]
        ny = [14, 4, 5, 5, 5, 5, 3, 3, 2, 1]
        return r.choices(with_year + no_year, wy + ny)[0]

    # -- ids -------------------------------------------------------------------
    def digits(self, k: int) -> str:
        return "".join(self.r.choice(string.digits) for _ in range(k))

    def mrn(self) -> str:
        r = self.r
        return r.choice([lambda: self.digits(7), lambda: "00" + self.digits(6), lambda: self.digits(8),
                         lambda: f"{self.digits(3)}-{self.digits(2)}-{self.digits(2)}",
                         lambda: "E" + self.digits(9), lambda: f"{self.digits(2)}-{self.digits(6)}"])()

    def account(self) -> str:
        r = self.r
        return r.choice([lambda: "77" + self.digits(8), lambda: "V" + self.digits(8),
                         lambda: f"{r.randint(2015, 2025)}-{self.digits(6)}", lambda: self.digits(9),
                         lambda: "A" + self.digits(7)])()

    def health_plan(self) -> tuple[str, str]:
        r = self.r
        L = "ACDEFGHJKMNPQRTUVWXY"  # Medicare MBI alphabet (no S, L, O, I, B, Z)
        mbi = (f"{r.randint(1, 9)}{r.choice(L)}{r.choice(L + string.digits)}{r.randint(0, 9)}-"
               f"{r.choice(L)}{r.choice(L + string.digits)}{r.randint(0, 9)}-"
               f"{r.choice(L)}{r.choice(L)}{r.randint(0, 9)}{r.randint(0, 9)}")
        return r.choice([("Medicare MBI", mbi), ("Medicare #", mbi.replace("-", "")),
                         ("BCBS member ID", "".join(r.choices(string.ascii_uppercase, k=3)) + self.digits(9)),
                         ("MassHealth ID", "1000" + self.digits(8)), ("Medicaid #", self.digits(9) + "A"),
                         ("Tufts HP ID", self.digits(9) + "-01"), ("Aetna ID", "W" + self.digits(9)),
                         ("Harvard Pilgrim ID", "HP" + self.digits(8) + "00"),
                         ("insurance policy #", f"{self.digits(3)}-{self.digits(3)}-{self.digits(4)}")])

    def npi(self) -> str:
        base = self.r.choice("12") + self.digits(8)
        s, dbl = 24, True  # Luhn over "80840" + base; 24 = precomputed prefix sum
        for ch in reversed(base):
            d = int(ch) * 2 if dbl else int(ch)
            s += d - 9 if d > 9 else d
            dbl = not dbl
        return base + str((10 - s % 10) % 10)

    def dea(self, last: str) -> str:
        d = [self.r.randint(0, 9) for _ in range(6)]
        chk = (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10
        init = _ascii(last)[0].upper() if _ascii(last)[:1].isalpha() else "X"
        return self.r.choice("ABFM") + init + "".join(map(str, d)) + str(chk)

    def license(self) -> str:
        r = self.r
        return r.choice([lambda: self.digits(6), lambda: "MD" + self.digits(5), lambda: "G" + self.digits(5),
                         lambda: "RN" + self.digits(7), lambda: f"{r.randint(2, 9)}{self.digits(5)}",
                         lambda: "S" + self.digits(8), lambda: "A" + self.digits(5)])()

    def ssn(self) -> str:
        r = self.r
        a, b, c = f"{r.randint(1, 899):03d}", f"{r.randint(1, 99):02d}", f"{r.randint(1, 9999):04d}"
        return r.choices([f"{a}-{b}-{c}", f"{a} {b} {c}", f"{a}{b}{c}"], [8, 1, 1])[0]

    def device(self) -> tuple[str, str]:
        r = self.r
        up = string.ascii_uppercase
        return r.choice([
            ("pacemaker SN: ", "PM" + self.digits(7)),
            ("Medtronic Azure XT DR MRI, serial # ", "RNB" + self.digits(6) + "H"),
            ("ICD serial ", "PZX" + self.digits(6) + "S"),
            ("insulin pump SN ", "NG" + self.digits(7) + "H"),
            ("Dexcom transmitter ID ", "8" + "".join(r.choices(up + string.digits, k=5))),
            ("LVAD (HeartMate 3) serial ", "HM3-" + self.digits(5)),
            ("implant UDI ", f"(01)00{self.digits(12)}(17){self.digits(6)}(10){r.choice(up)}{self.digits(5)}"),
            ("hearing aid serial ", self.digits(4) + r.choice(up) + self.digits(4)),
            ("Boston Scientific ICD, model D433, SN ", self.digits(6)),
        ])

    def plate(self) -> str:
        r, up = self.r, string.ascii_uppercase
        return r.choice([f"{r.randint(1, 9)}{''.join(r.choices(up, k=3))}{self.digits(3)}",
                         f"{''.join(r.choices(up, k=3))}-{self.digits(4)}",
                         f"{r.randint(1, 9)}{''.join(r.choices(up, k=2))} {self.digits(3)}",
                         f"{''.join(r.choices(up, k=3))} {self.digits(3)}"])

    def vin(self) -> str:
        al = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
        return "".join(self.r.choice(al) for _ in range(17))

    # -- contact ---------------------------------------------------------------
    def phone(self) -> str:
        r = self.r
        a, x, s = r.choice(_AREA), f"{r.randint(2, 9)}{self.digits(2)}", self.digits(4)
        if r.random() < 0.15:
            x = "555"
        forms = [f"({a}) {x}-{s}", f"{a}-{x}-{s}", f"{a}.{x}.{s}", f"{a} {x} {s}", f"+1 {a} {x} {s}",
                 f"+1 ({a}) {x}-{s}", f"1-{a}-{x}-{s}", f"{a}{x}{s}", f"{a}-{x}-{s} x{r.randint(2, 9999)}",
                 f"({a}) {x}-{s} ext. {r.randint(100, 9999)}", f"{x}-{s}", f"{a}/{x}-{s}"]
        return r.choices(forms, [20, 24, 8, 5, 5, 2, 3, 4, 6, 3, 3, 1])[0]

    def email(self, p: dict) -> str:
        r = self.r
        f, l = _ascii(p["first"]).lower().replace(" ", ""), _ascii(p["last"]).lower().replace(" ", "").replace("'", "")
        user = r.choice([f"{f}.{l}", f"{f[0]}{l}", f"{f}{l}{r.randint(1, 99)}", f"{l}.{f}",
                         f"{f}_{l}{r.randint(40, 99)}", f"{f}{r.randint(1950, 2005)}"])
        return f"{user}@{r.choice(self.p['email_domain'])}"

    def url(self, p: dict) -> str:
        r = self.r
        f, l = _ascii(p["first"]).lower().replace(" ", ""), _ascii(p["last"]).lower().replace(" ", "").replace("'", "")
        return r.choice([f"https://www.caringbridge.org/visit/{f}{l}", f"www.facebook.com/{f}.{l}.{r.randint(1, 99)}",
                         f"https://www.gofundme.com/f/help-{f}-{l}", f"https://mychart.example-health.org/patient/{self.digits(8)}",
                         f"https://telehealth.zoom.us/j/{self.digits(10)}", f"instagram.com/{f}_{l}",
                         f"https://doxy.me/dr{l}", f"http://www.{l}familyfund.com"])

    def ip(self) -> str:
        return self.r.choice(self.p["ip6"]) if self.r.random() < 0.1 else self.r.choice(self.p["ip4"])

    # -- places ----------------------------------------------------------------
    def street(self) -> str:
        num, rest = self.r.choice(self.p["street"]).split(" ", 1)
        # Faker pads house numbers ("00283 Lisa Plaza") and can give "0"
        s = f"{int(num) if num.isdigit() and int(num) else self.r.randint(1, 999)} {rest}"
        return s if self.r.random() < 0.7 else s.split(" Suite ")[0].split(" Apt. ")[0]

    def city(self) -> str:
        r = self.r.random()
        return (self.r.choice(_REAL_CITIES) if r < 0.5 else self.r.choice(self.p["city_mx"]) if r < 0.55
                else self.r.choice(self.p["city_fake"]))

    def zip(self) -> str:
        return self.r.choice(self.p["zip4"]) if self.r.random() < 0.15 else self.r.choice(self.p["zip"])

    def hospital(self) -> str:
        r = self.r
        x = r.random()
        if x < 0.45:
            return r.choice(_HOSP_FIXED)
        if x < 0.65:
            saint = r.choice(_SAINTS)
            saint += "" if saint.endswith("s") else "'s"  # St. Francis Hospital, St. Mary's Hospital
            return f"St. {saint} {r.choice(['Medical Center', 'Hospital', 'Regional Medical Center'])}"
        if x < 0.85:
            return f"{self.person(locale='en_US')['last']} Memorial {r.choice(['Hospital', 'Medical Center'])}"
        return f"{r.choice(_REAL_CITIES)} {r.choice(['General Hospital', 'Community Hospital', 'Regional'])}"

    def ward(self) -> str:
        return self.r.choice(_WARDS)

    def other_loc(self) -> str:
        r = self.r
        if r.random() < 0.45:
            return r.choice(_NH_FIXED)
        base = r.choice([self.person(locale="en_US")["last"], r.choice(self.p["street_name"]).split(" ")[0],
                         r.choice(_REAL_CITIES)])
        return f"{base} {r.choice(_NH_SUFFIX)}"


# ---------------------------------------------------------------------------------------------
# Non-PHI clinical filler (trips NER: abbreviations, eponyms, drugs, vitals, times, small ages)

_DX = ["HTN", "HLD", "T2DM", "CHF (EF 35%)", "COPD", "CKD stage 3", "afib on Eliquis", "CAD s/p CABG x3",
       "NSTEMI", "OSA on CPAP", "GERD", "hypothyroidism", "Parkinson's disease", "Alzheimer's dementia",
       "Hodgkin lymphoma in remission", "Graves disease", "Crohn's disease", "Bell's palsy", "BPH",
       "DVT on warfarin", "ESRD on HD MWF", "Cushing syndrome", "Addison's disease", "depression",
       "Down syndrome", "Barrett's esophagus", "Hashimoto's thyroiditis", "Guillain-Barre (remote)"]
_MEDS = ["metoprolol 25 mg PO BID", "lasix 40 mg IV BID", "heparin 5000 units SC q8h", "zosyn 3.375 g IV q6h",
         "Keppra 500 mg BID", "Eliquis 5 mg BID", "lisinopril 10 mg daily", "atorvastatin 40 mg qhs",
         "insulin glargine 20 units qhs", "tylenol 650 mg q6h PRN", "oxycodone 5 mg q4h PRN pain",
         "vanc 1 g IV q12h", "ceftriaxone 1 g IV daily", "pantoprazole 40 mg daily", "Coumadin 5 mg",
         "albuterol nebs q4h PRN", "prednisone 40 mg x5 days", "Haldol 0.5 mg PRN agitation",
         "KCl 40 mEq PO x1", "Zofran 4 mg IV PRN", "senna/colace", "Duonebs QID", "Seroquel 25 mg qhs"]


class _Filler:
    def __init__(self, g: _Gen):
        self.g = g
        self.r = g.r
        self._choices = self._build()
        self._order: list[int] = []

    def vitals(self) -> str:
        r = self.r
        return (f"BP {r.randint(92, 178)}/{r.randint(50, 98)}, HR {r.randint(52, 128)}, RR {r.randint(12, 28)}, "
                f"T {r.choice(['98.6', '99.1', '100.4', '101.2', '97.9', '37.8C'])}, SpO2 {r.randint(88, 100)}% "
                f"{r.choice(['on RA', 'on 2L NC', 'on 4L NC', 'on 40% FM', 'on BiPAP'])}")

    def labs(self) -> str:
        r = self.r
        return (f"Labs: Na {r.randint(128, 146)}, K {r.randint(30, 55) / 10}, Cr {r.randint(6, 38) / 10}, "
                f"Hgb {r.randint(68, 150) / 10}, WBC {r.randint(30, 220) / 10}, INR {r.randint(9, 35) / 10}, "
                f"lactate {r.randint(5, 45) / 10}, trop {r.choice(['<0.01', '0.04', '0.32', '1.8'])}")

    def sentence(self) -> str:
        """A non-PHI sentence; no repeats within a note until the pool runs out."""
        if not self._order:
            self._order = list(range(len(self._choices)))
            self.r.shuffle(self._order)
        return self._choices[self._order.pop()]()

    def reset(self) -> None:
        self._order = []

    def _build(self) -> list:
        r = self.r
        choices = [
            lambda: f"Pt c/o SOB x{r.randint(2, 6)} days, worse with exertion.",
            lambda: f"A&Ox{r.randint(1, 3)}, NAD. GCS {r.randint(8, 15)} (Glasgow).",
            lambda: f"Murphy's sign {r.choice(['positive', 'negative'])}. Abd soft, NT/ND, +BS.",
            lambda: f"Foley in place, UOP {r.randint(20, 80)} cc/hr. Strict I&O.",
            lambda: f"Pain {r.randint(2, 9)}/10, given {r.choice(_MEDS)} with relief.",
            lambda: f"Strength {r.randint(3, 5)}/5 bilateral LE. Babinski downgoing.",
            lambda: f"CXR with {r.choice(['bibasilar opacities', 'no acute process', 'small L effusion', 'pulm edema'])}.",
            lambda: f"ABG 7.{r.randint(28, 45)}/{r.randint(32, 68)}/{r.randint(55, 110)}.",
            lambda: f"NPO after midnight for {r.choice(['EGD', 'cath', 'TEE', 'IR drain'])}.",
            lambda: f"NKDA. Code status: {r.choice(['Full code', 'DNR/DNI', 'DNR, OK to intubate', 'CMO'])}.",
            lambda: f"Continue {r.choice(_MEDS)}; hold {r.choice(['metoprolol', 'lisinopril', 'lasix', 'amlodipine'])} for SBP < 100.",
            lambda: f"Seen by PT/OT, recommends {r.choice(['rehab', 'home with services', 'SNF'])}.",
            lambda: "Hx of {} and {}.".format(*r.sample(_DX, 2)),
            lambda: f"Ambulated {r.randint(20, 200)} ft with walker, 1 assist.",
            lambda: f"Repositioned q2h, skin intact, Braden {r.randint(10, 20)}.",
            lambda: f"Swan-Ganz removed. Tele: {r.choice(['NSR', 'afib RVR 120s', 'sinus tach', 'paced'])}.",
            lambda: f"Plan to recheck BMP at {r.choice(['0600', '1400', '2200', '16:00'])}.",
            lambda: f"Pt in rm {r.randint(201, 1240)}, bed {r.choice('AB12')}.",
            lambda: f"Family at bedside {r.randint(1, 3)}x this shift, updated on plan.",
            lambda: f"Wound vac to sacral ulcer, stage {r.randint(2, 4)}, changed per protocol.",
            lambda: f"{r.choice(['Lasix', 'Heparin gtt', 'Zosyn', 'Keppra'])} {r.choice(['started', 'held', 'titrated', 'continued'])} per team.",
            lambda: f"Smoker, {r.randint(10, 60)} pack-years; quit in {r.randint(1990, 2022)}.",
            lambda: f"Travel to {r.choice(_STATES)} last month, no sick contacts.",
            lambda: "Apgar history n/a. Homan's sign negative. No JVD.",
            lambda: f"Echo {r.randint(2016, 2024)}: EF {r.randint(20, 65)}%, mod MR.",
            lambda: f"BS {r.randint(70, 380)}, covered with {r.randint(2, 10)} units per SSI.",
            lambda: f"Total {r.randint(1, 4)}/{r.randint(4, 6)} doses given; 1/2 tab held.",
        ]
        return choices

    def small_age(self) -> str:
        r = self.r
        a = r.randint(19, 89)
        return r.choice([f"{a} yo {r.choice('MF')}", f"{a}-year-old", f"{a} y/o", f"age {a}", f"{a}yo"])


# ---------------------------------------------------------------------------------------------
# Note styles

_AGE_FORMS = [("", " yo"), ("", "-year-old"), ("age ", ""), ("", " y/o"), ("", "yo"), ("aged ", ""),
              ("", " years old"), ("", " YO")]


class _Writer:
    def __init__(self, rng: random.Random):
        self.r = rng
        self.g = _Gen(rng)
        self.f = _Filler(self.g)

    # shared context of one note ---------------------------------------------
    def _ctx(self) -> dict:
        r, g = self.r, self.g
        pt = g.person()
        admit = g.date_between(dt.date(2012, 1, 1), dt.date(2025, 12, 31))
        old = r.random() < 0.28
        age = r.randint(90, 104) if old else r.randint(19, 89)
        dob = admit - dt.timedelta(days=int(age * 365.25) + r.randint(0, 360))
        fam_rel = r.choice(["daughter", "son", "wife", "husband", "niece", "sister", "grandson", "HCP"])
        fam_sex = "F" if fam_rel in ("daughter", "wife", "niece", "sister") else "M" if fam_rel in (
            "son", "husband", "grandson") else None
        fam_loc = pt["loc"] if r.random() < 0.8 else None
        fam = g.person(sex=fam_sex, locale=fam_loc)
        if fam_rel in ("wife", "husband", "son", "daughter", "grandson") and r.random() < 0.6:
            fam["last"] = pt["last"]
        return {"pt": pt, "admit": admit, "age": age, "old": old, "dob": dob, "fam": fam, "rel": fam_rel,
                "md": g.person(), "md2": g.person(), "rn": g.person(), "hosp": g.hospital(), "ward": g.ward()}

    def name(self, p: dict, style: str | None = None) -> str:
        v = self.g.name(p, style)
        return v.lower() if self.r.random() < 0.04 else v  # sloppy typing: "spoke w/ maria"

    def age(self, b: _Note, c: dict) -> None:
        """Age mention: a span only when > 89."""
        pre, post = self.r.choice(_AGE_FORMS)
        b.t(pre)
        if c["old"]:
            b.e("AGE", str(c["age"]))
        else:
            b.t(str(c["age"]))
        b.t(post)

    def date(self, b: _Note, d: dt.date, full: bool = False) -> None:
        b.e("DATE", self.g.fmt_date(d, full))

    def near(self, c: dict, lo: int = -10, hi: int = 10) -> dt.date:
        return c["admit"] + dt.timedelta(days=self.r.randint(lo, hi))

    def phone(self, b: _Note) -> None:
        b.e("PHONE", self.g.phone())

    def address(self, b: _Note, full: bool = True) -> None:
        g, r = self.g, self.r
        b.e("LOCATION", g.street(), "STREET")
        if full or r.random() < 0.5:
            b.t(", ").e("LOCATION", g.city(), "CITY").t(f", {r.choice(_STATES[:8])} ")
            b.e("LOCATION", g.zip(), "ZIP")

    def sig(self, b: _Note, p: dict, cred: str) -> None:
        r = self.r
        form = r.choice(["dash", "comma", "slash", "inits"])
        if form == "dash":
            b.t(r.choice(["\n— ", "\n-- ", "\n- "])).e("PERSON", self.g.name(p, r.choice(["fi_l", "fl"]))).t(f" {cred}")
        elif form == "comma":
            b.t("\n").e("PERSON", self.g.name(p, r.choice(["fl", "f_m_l"]))).t(f", {cred}")
        elif form == "slash":
            b.t("\n/").e("PERSON", self.g.name(p, "inits").lower()).t(f" {cred}")
        else:
            b.t("\nSigned: ").e("PERSON", self.g.name(p, "fl")).t(f" {cred} ").t(
                f"{r.randint(0, 23):02d}{r.choice(['00', '15', '30', '45'])}")

    def fill(self, b: _Note, target: int, extras: list) -> None:
        """Alternate PHI-bearing extras and non-PHI filler until the target length."""
        r = self.r
        r.shuffle(extras)
        while b.n < target:
            if extras and r.random() < 0.55:
                extras.pop()(b)
            else:
                b.t(" " if b.parts and not b.parts[-1].endswith(("\n", " ")) else "", self.f.sentence())

    # -- extras (each writes one PHI-bearing sentence) --------------------------
    def extras(self, c: dict) -> list:
        r, g = self.r, self.g
        pt, fam, rel, md, md2 = c["pt"], c["fam"], c["rel"], c["md"], c["md2"]

        def fam_call(b):
            b.t(f" Pt's {rel} ").e("PERSON", self.name(fam, r.choice(["first", "fl", "first"])))
            pre, post = r.choice([(" called ", ", updated."), (" called, cb ", "."), (" (", ") updated re plan."),
                                  (" reachable at ", ", wants callback."), (" @ ", " - left VM.")])
            b.t(pre)
            self.phone(b)
            b.t(post)

        def dr_paged(b):
            b.t(r.choice([" Paged Dr. ", " Discussed w/ Dr. ", " Per Dr. "])).e("PERSON", self.name(md, r.choice(["last", "last", "fl"])))
            b.t(r.choice(["'s team", "", " (covering)"]))
            b.t(r.choice([", ", " re "])).t(r.choice(["new orders received.", "K 3.4, repleting.", "HR 130s, lopressor given."]))

        def lives(b):
            b.t(f" Lives {r.choice(['with', 'w/'])} {rel} ").e("PERSON", self.name(fam, "first")).t(" at ")
            self.address(b, full=r.random() < 0.6)
            b.t(".")

        def from_nh(b):
            b.t(r.choice([" Resides at ", " Admitted from ", " Returns to "])).e("LOCATION", g.other_loc(), "OTHER")
            if r.random() < 0.5:
                b.t(" in ").e("LOCATION", g.city(), "CITY")
            b.t(".")

        def transfer(b):
            b.t(" Transferred from ").e("LOCATION", g.hospital(), "HOSPITAL").t(" on ")
            self.date(b, self.near(c, -5, 0))
            b.t(r.choice([" for ", " s/p "])).t(r.choice(["cath", "NSTEMI w/u", "hip fx", "sepsis"]) + ".")

        def to_ward(b):
            b.t(r.choice([" To ", " Transfer to ", " Bed on "])).e("LOCATION", c["ward"], "WARD")
            b.t(r.choice([" when bed available.", " at 1600.", " today."]))

        def device(b):
            label, val = g.device()
            b.t(f" Interrogated {label}").e("ID", val, "DEVICE").t(", normal function.")

        def pcp(b):
            b.t(" PCP: Dr. ").e("PERSON", g.name(md2, r.choice(["fl", "fi_l", "last"]))).t(r.choice([" at ", ", "]))
            b.e("LOCATION", g.hospital(), "HOSPITAL").t(r.choice([", tel ", ", ph ", " "]))
            self.phone(b)
            if r.random() < 0.5:
                b.t(", fax ")
                self.phone(b)
            b.t(".")

        def hx_date(b):
            b.t(r.choice([" s/p CABG ", " Last colonoscopy ", " Fall at home ", " Prior admit "]))
            self.date(b, self.near(c, -900, -20), full=r.random() < 0.5)
            b.t(".")

        def on_the(b):
            d = self.near(c, 1, 20)
            b.t(r.choice([" F/u appt on the ", " Next HD on the ", " Surgery scheduled for the "])).e("DATE", _ordinal(d.day)).t(".")

        def holiday(b):
            b.t(" Symptoms since ").e("DATE", r.choice(["Christmas", "Thanksgiving", "New Year's", "Easter"])).t(".")

        def insurance(b):
            label, val = g.health_plan()
            b.t(f" {label} ").e("ID", val, "HEALTH_PLAN").t(".")

        def email(b):
            who = r.choice([pt, fam])
            b.t(r.choice([" Pt requests records sent to ", " Contact email: ", f" {rel.capitalize()}'s email "]))
            b.e("EMAIL", g.email(who)).t(".")

        def url(b):
            who = r.choice([pt, fam])
            b.t(r.choice([" Family set up ", " Updates posted at ", " Video visit link "])).e("URL", g.url(who)).t(".")

        def mvc(b):
            b.t(" Restrained driver in MVC, vehicle ")
            if r.random() < 0.6:
                b.t("plate ").e("ID", g.plate(), "VEHICLE")
            else:
                b.t("VIN ").e("ID", g.vin(), "VEHICLE")
            b.t(r.choice([" per police report.", ", towed.", " per EMS."]))

        def ssn(b):
            if r.random() < 0.8:
                b.t(r.choice([" SSN ", " SS# ", " Social: "])).e("ID", g.ssn(), "SSN")
            else:
                b.t(" SSN last 4 ").e("ID", g.digits(4), "SSN")
            b.t(" verified for billing.")

        def dl(b):
            b.t(f" ID checked: {r.choice(_STATES[:8])} driver's license ").e("ID", g.license(), "LICENSE").t(".")

        def acct(b):
            b.t(r.choice([" Acct # ", " FIN ", " Visit # ", " Encounter "])).e("ID", g.account(), "ACCOUNT").t(".")

        def pharm(b):
            b.t(r.choice([" Rx sent to CVS on ", " Pharmacy: Walgreens, "])).e("LOCATION", g.street(), "STREET").t(", fax ")
            self.phone(b)
            b.t(".")

        def sw(b):
            sw_p = g.person()
            b.t(" SW ").e("PERSON", self.name(sw_p, r.choice(["fl", "fi_l", "first"]))).t(" following, pager ")
            b.e("PHONE", r.choice([f"{r.randint(10, 99)}-{g.digits(4)}", f"#{g.digits(5)}", g.phone()]))
            b.t(".")

        def moved(b):
            b.t(r.choice([" Recently moved from ", " Grew up in ", " Visiting from "])).e("LOCATION", g.city(), "CITY")
            b.t(f", {r.choice(_STATES)}" if r.random() < 0.5 else "").t(".")

        def pt_ref(b):
            pre, post = r.choice([(" Pt ", " seen at bedside."), (" Seen and examined ", ", agrees with plan."),
                                  (" Spoke with pt ", " this AM."), (" ", " refused AM labs.")])
            b.t(pre).e("PERSON", self.name(pt)).t(post)

        def origin(b):  # countries and languages are not PHI under Safe Harbor
            country, lang = r.choice(_ORIGIN[pt["loc"]])
            b.t(f" Originally from {country}, {lang}-speaking, interpreter {r.choice(['used', 'declined', 'requested'])}.")

        def ip(b):
            b.t(r.choice([" Remote device upload from IP ", " Portal login flagged from IP ", " Home monitor IP "]))
            b.e("IP", g.ip()).t(r.choice([".", ", verified.", " per IT."]))

        return [origin, pt_ref, ip, fam_call, dr_paged, lives, from_nh, transfer, to_ward, device, pcp, hx_date, on_the,
                holiday, insurance, email, url, mvc, ssn, dl, acct, pharm, sw, moved]

    def _pick(self, ex: list, k: int) -> list:
        return self.r.sample(ex, k=min(k, len(ex)))

    # -- style 1: UPPER-CASE nursing note -------------------------------------
    def nursing(self, target: int) -> _Note:
        r, g = self.r, self.g
        c = self._ctx()
        b = _Note(upper=True)
        b.t("NURSING NOTE ")
        self.date(b, c["admit"], full=r.random() < 0.6)
        b.t(f" {r.choice(['0700-1900', '1900-0700', '07:00-19:00'])}. ")
        if r.random() < 0.5:
            b.t("UNIT ").e("LOCATION", c["ward"], "WARD").t(". ")
        if r.random() < 0.4:
            b.t("MRN ").e("ID", g.mrn(), "MRN").t(". ")
        b.t("\n0800 PT ")
        if r.random() < 0.5:
            b.e("PERSON", g.name(c["pt"], r.choice(["l_f", "fl", "last"]))).t(" ")
        b.t("(")
        self.age(b, c)
        b.t(f" {c['pt']['sex']}) RESTING IN BED, A&OX{r.randint(1, 3)}. VSS. ")
        ex = self._pick(self.extras(c), 6)
        ex += [lambda b: b.t(f"\n{r.choice(['1000', '1200', '1400', '1600', '1800'])} ", self.f.vitals(), ".")]
        self.fill(b, target, ex)
        b.t(" WILL CONT TO MONITOR.")
        self.sig(b, c["rn"], "RN")
        return b

    # -- style 2: progress note with headers ------------------------------------
    def progress(self, target: int) -> _Note:
        r, g = self.r, self.g
        c = self._ctx()
        b = _Note()
        b.t(r.choice(["Progress Note", "MEDICINE PROGRESS NOTE", "Cardiology Consult", "Hospitalist Note"]))
        b.t(" - ").e("LOCATION", c["hosp"], "HOSPITAL").t("\nPatient: ").e("PERSON", g.name(c["pt"], r.choice(["L_F", "l_f", "l_f_m", "fl"])))
        pre, post = r.choice([("  MRN: ", ""), ("  MR# ", ""), (" (MRN ", ")"), ("  Med Rec #", "")])
        b.t(pre).e("ID", g.mrn(), "MRN").t(post)
        b.t(r.choice(["  DOB: ", "  D.O.B. ", "  born "]))
        self.date(b, c["dob"], full=True)
        b.t("\nDate of service: ")
        self.date(b, c["admit"], full=True)
        b.t(f" {r.randint(6, 19):02d}:{r.choice(['00', '15', '30', '45'])}\n")
        b.t("HPI: ")
        self.age(b, c)
        b.t(f" {'M' if c['pt']['sex'] == 'M' else 'F'} w/ {', '.join(r.sample(_DX, 2))} p/w {r.choice(['SOB', 'CP', 'fever', 'AMS', 'fall', 'syncope'])} ")
        b.t(f"x{r.randint(1, 5)} days. ")
        ex = self._pick(self.extras(c), 5)
        self.fill(b, int(target * 0.55), ex)
        b.t(f"\nPMH: {', '.join(r.sample(_DX, 3))}.\nMEDS: {', '.join(r.sample(_MEDS, 3))}.\n")
        b.t(f"Exam: {self.f.vitals()}.\n{self.f.labs()}.\nA/P: {self.f.sentence()}")
        self.fill(b, target, self._pick(self.extras(c), 3))
        name = g.name(c["md"], r.choice(["fl", "f_m_l"]))
        b.t("\n").e("PERSON", name).t(", MD")
        if r.random() < 0.6:
            pre, post = r.choice([(" NPI ", ""), (" (NPI: ", ")")])
            b.t(pre).e("ID", g.npi(), "NPI").t(post)
        if r.random() < 0.3:
            b.t(" DEA ").e("ID", g.dea(c["md"]["last"]), "DEA")
        if r.random() < 0.3:
            b.t(f" {r.choice(_STATES[:8])} Lic. #").e("ID", g.license(), "LICENSE")
        return b

    # -- style 3: discharge summary / phone or telehealth encounter -------------
    def discharge(self, target: int) -> _Note:
        r, g = self.r, self.g
        c = self._ctx()
        b = _Note()
        if r.random() < 0.5:
            b.t("DISCHARGE SUMMARY\n").e("PERSON", g.name(c["pt"], r.choice(["L_F", "l_f_m"]))).t("  MRN ").e("ID", g.mrn(), "MRN")
            b.t("  Acct ").e("ID", g.account(), "ACCOUNT")
            b.t("\nAdmission Date: ")
            self.date(b, c["admit"], full=True)
            b.t("  Discharge Date: ")
            self.date(b, self.near(c, 2, 14), full=True)
            b.t("\nAttending: ").e("PERSON", g.name(c["md"], r.choice(["fl", "l_f", "f_m_l"]))).t(", MD\n")
            b.t("Brief hospital course: ")
            self.age(b, c)
            b.t(f" {c['pt']['sex']} admitted to ").e("LOCATION", c["ward"], "WARD").t(f" with {r.choice(_DX)}. ")
            self.fill(b, int(target * 0.8), self._pick(self.extras(c), 6))
            b.t(f"\nDischarge meds: {'; '.join(r.sample(_MEDS, 3))}.\nDispo: ")
            b.t(r.choice(["Discharged to ", "D/c to "])).e("LOCATION", g.other_loc(), "OTHER").t(". F/u with Dr. ")
            b.e("PERSON", g.name(c["md2"], "last")).t(" on ")
            self.date(b, self.near(c, 10, 30))
            b.t(", call ")
            self.phone(b)
            b.t(".")
            if r.random() < 0.5:
                b.t(" cc: Dr. ").e("PERSON", g.name(g.person(), "fl")).t(", fax ")
                self.phone(b)
            if r.random() < 0.4:
                b.t("\nDictated by: ").e("PERSON", g.name(c["md"], "fl")).t("  ")
                b.e("PERSON", g.name(c["md"], "inits")).t("/").e("PERSON", g.name(c["rn"], "inits").lower())
        else:
            tele = r.random() < 0.4
            b.t("Telephone Encounter" if not tele else "Telehealth Visit (video)").t("  ")
            self.date(b, c["admit"], full=r.random() < 0.7)
            b.t(f" {r.randint(8, 17)}:{r.choice(['05', '20', '40', '55'])}\n")
            b.t(r.choice(["Caller: ", "Call from "])).t(f"pt's {c['rel']} ").e("PERSON", g.name(c["fam"], r.choice(["first", "fl"])))
            b.t(", cb # ")
            self.phone(b)
            b.t(". Re: ").e("PERSON", g.name(c["pt"], r.choice(["fl", "l_f", "L_F"]))).t(", DOB ")
            self.date(b, c["dob"], full=True)
            b.t(", ")
            self.age(b, c)
            b.t(". ")
            if tele:
                b.t("Pt joined from IP ").e("IP", g.ip()).t(" via ").e("URL", g.url(c["pt"])).t(". ")
            self.fill(b, target, self._pick(self.extras(c), 6))
            b.t(" Advised to call back or go to ED if worse.")
            self.sig(b, c["rn"], r.choice(["RN", "NP", "LPN"]))
        return b

    # -- style 4: terse triage note (sometimes sloppy lower-case) ---------------
    def triage(self, target: int) -> _Note:
        r, g = self.r, self.g
        c = self._ctx()
        sloppy = r.random() < 0.25
        b = _Note(lower=sloppy)
        b.t("Triage ")
        b.t(f"{r.randint(0, 23):02d}{r.choice(['05', '12', '30', '47'])}: ")
        self.age(b, c)
        b.t(f" {c['pt']['sex']} BIBA from ")
        x = r.random()
        if x < 0.4:
            b.e("LOCATION", g.other_loc(), "OTHER")
        elif x < 0.7:
            self.address(b, full=False)
        else:
            b.t("home in ").e("LOCATION", g.city(), "CITY")
        b.t(f" c/o {r.choice(['SOB', 'CP', 'fall', 'AMS', 'abd pain', 'weakness'])} x{r.randint(1, 5)}d. ")
        b.t(f"{self.f.vitals()}. ")
        ex = self._pick(self.extras(c), 4)
        self.fill(b, target, ex)
        b.t(f" ESI {r.randint(1, 4)}.")
        self.sig(b, c["rn"], "RN")
        return b


_STYLES = [("nursing", 0.25), ("progress", 0.30), ("discharge", 0.27), ("triage", 0.18)]


def generate(n: int, seed: int) -> list[dict]:
    """n synthetic clinical notes with gold PHI spans; deterministic for (n, seed)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    w = _Writer(rng)
    names, weights = zip(*_STYLES)
    out = []
    for i in range(n):
        style = rng.choices(names, weights)[0]
        w.f.reset()
        target = int(min(1150, max(400, rng.gauss(740, 190))))
        b = getattr(w, style)(target)
        spans = sorted(b.spans, key=lambda s: s["start"])
        out.append({"id": f"note-{seed}-{i:05d}", "style": style, "text": b.text(), "spans": spans})
    return out


def _marked(note: dict) -> str:
    t, out, pos = note["text"], [], 0
    for s in note["spans"]:
        out += [t[pos:s["start"]], f"[[{s['entity_type']}{'/' + s['kind'] if 'kind' in s else ''}:{s['value']}]]"]
        pos = s["end"]
    return "".join(out + [t[pos:]])


if __name__ == "__main__":
    import collections
    import time

    _pools()
    t0 = time.perf_counter()
    notes = generate(2000, seed=0)
    dt_s = time.perf_counter() - t0
    for nt in notes[:3]:
        print(f"--- {nt['id']} ({nt['style']}, {len(nt['text'])} chars)\n{_marked(nt)}\n")
    counts: collections.Counter = collections.Counter()
    for nt in notes[:1000]:
        prev = 0
        for s in nt["spans"]:
            assert nt["text"][s["start"]:s["end"]] == s["value"], (nt["id"], s)
            assert s["start"] >= prev and s["end"] > s["start"], (nt["id"], s)
            prev = s["end"]
            counts[s["entity_type"] + ("/" + s["kind"] if "kind" in s else "")] += 1
    lens = [len(nt["text"]) for nt in notes[:1000]]
    print("n=1000 spans per type/kind:")
    for k, v in sorted(counts.items()):
        print(f"  {k:22s} {v}")
    print(f"total spans {sum(counts.values())}, mean length {sum(lens) / len(lens):.0f} chars "
          f"(min {min(lens)}, max {max(lens)}); generate(2000) took {dt_s:.2f} s")
