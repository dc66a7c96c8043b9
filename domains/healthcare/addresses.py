"""Recognizers for addresses outside the US pattern: street words of other languages, units,
military mail, the lines of a written address block, postcodes and travel cues.

Safe Harbor removes every geographic unit smaller than a state, wherever the patient lives;
Presidio's and our US patterns ("14 Crown Street") miss "Puruntie 82", "ul. Słowicza 10",
"Via Tasso 129", "PSC 0413, Box 8144 / APO AA 42323" and the town on the line under them;
the address-block patterns also read the region code between town and postcode
("Toronto\n, ON\n 82269"; a US state code stays), bulleted or quoted blocks ("> ", "* "),
street lines without a street type when the block structure shows them ("78321 Ombù 9091\n
Constitución\n Uruguay"), "the corner of X and Y", and towns in running
text after a cue ("moved here from", "based in", "University of", "in Bjert 6091").
The street words are the common street types of European address formats (UPU address
guides), not a list of places, so they carry over to any town. Countries and states stay in
the text (Safe Harbor allows them); they only serve as anchors here.
"""

from __future__ import annotations

import functools

import pycountry
import regex
from presidio_analyzer import Pattern

from domains.healthcare.recognizers import NOT_TOWNS, SP, STATES, STREET_SUFFIXES, AnchoredRecognizer

# Street types written before the name (Romance, Slavic, Greek formats): "Via Tasso 129". Case
# matters: "place pt on 2L" is an order, "Place Bellecour 2" an address.
STREET_BEFORE = (r"(?-i:Via|Viale|Vicolo|Piazza|Piazzale|Corso|Largo|Contrada|Rua|Avenida|Av\.|Travessa|Alameda|"
                 r"Calle|C/|Carrer|Camino|Paseo|Plaza|Ronda|Rambla|Rue|Boulevard|Bd\.?|Chemin|Place|Allée|Impasse|"
                 r"Quai|Strada|Calea|Bulevardul|Trg|Ulitsa|Prospekt|Avinguda|Ul\.|Ulica|Aleja|Plac|Odos|"
                 r"ul\.|ulica|aleja|plac|Οδός|Λ\.|Λεωφ\.|οδός|λ\.)")
# Street types ending a word (Nordic, German, Dutch, Baltic): "Puruntie 82", "Søndergade 52",
# "Pohlstrasse 9" (endings that English words share, "-ring", "-sor", are left out)
STREET_ENDINGS = (r"katu|tie|polku|kuja|gade|vej|vænget|stræde|gata|gatan|vägen|gränd|veien|vegen|straße|strasse|"
                  r"str\.|weg|gasse|allee|platz|damm|ufer|straat|laan|plein|gracht|singel|dreef|utca|útja|"
                  r"iela|gatvė|tänav|sokak|sokağı|caddesi|náměstí")
# Street types written as a word after the name: "Erzsébet tér 19.", "Trenerys gate 232", "Király u. 15."
STREET_AFTER = (r"tér|út|u\.|utca|köz|sor|gate|gata|gatan|vej|vei|veien|straße|strasse|str\.|weg|gasse|allee|"
                r"laan|straat|plein|iela|tänav|sokak|caddesi|cad\.")
UNIT = (r"(?:apt|apartment|suite|ste|unit|p\.?{SP}?o\.?{SP}?box|(?-i:Box|Flat|Postbox|Postfach))"
        .replace("{SP}", SP))
STATE_CODES = "(?:" + "|".join(STATES) + ")"
USPS = "|".join(STREET_SUFFIXES)
USPS_TITLE = "|".join(sorted({w for s in STREET_SUFFIXES for w in (s, s.upper())}, key=len, reverse=True))
LETTER = r"\p{L}"
WORD = rf"{LETTER}[{LETTER}'’.\-]*"
CAPWORD = rf"(?-i:\p{{Lu}})[{LETTER}'’.\-]*"
HOUSE = r"\d{1,5}(?:[a-z]|/\d{1,3})?\b\.?"  # "82", "19.", "12b", "15/3"
# what may stand before each line of a quoted or bulleted address block: "> ", "??? " (a bullet
# mangled by an encoding), "* ", "• "
LEAD = r"[ \t>?*•·]"
PLACE_PARTICLE = r"(?:de|del|da|do|dos|das|di|la|le|los|las|y|u|na|nad|pod|am|an|im|sur|sous|en|op|aan)"
NOT_PLACE_WORDS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
                   "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|Room|Rm|Bed|Suite|Unit|Box|Apt|Building|Bldg|"
                   "Floor|Ward|Pod|Bay|Lot|Line|Page|Step|Stage|Grade|Level|Version|Model|Type|Class|Year|Week|Day")


def countries() -> str:
    """A regex alternation of country names (pycountry's ISO 3166 names and common names)."""
    names = {c.name for c in pycountry.countries} | {getattr(c, "common_name", c.name) for c in pycountry.countries}
    names |= set(NOT_TOWNS) | {"United Kingdom", "UK", "USA", "Czech Republic", "Russia", "South Korea"}
    return "|".join(sorted((n.replace(" ", SP).replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
                            for n in names if "," not in n), key=len, reverse=True))


def addresses() -> list[AnchoredRecognizer]:
    """Recognizers for non-US street lines, units, military mail, address-block towns and postcodes."""
    country = countries()
    street = (rf"(?:\d{{1,6}}{SP})?(?:{STREET_BEFORE}{SP}(?:{WORD}{SP}){{0,3}}{CAPWORD}|"
              rf"(?:{CAPWORD}{SP}){{0,2}}(?-i:\p{{Lu}}){LETTER}*(?:{STREET_ENDINGS})|"
              rf"(?:{CAPWORD}{SP}){{1,2}}(?:{STREET_AFTER}))"
              rf",?{SP}{HOUSE}")
    greek = rf"(?:\d{{1,6}}{SP})?\p{{Greek}}[\p{{Greek}}'’.\-]*(?:{SP}\p{{Greek}}[\p{{Greek}}'’.\-]*){{0,3}}{SP}\d{{1,4}}\b"
    unit = rf"\b{UNIT}\.?{SP}?#?{SP}?\d{{1,5}}[a-z]?\b"
    line_end = r"(?=[ \t,]*(?:\n|$))"
    # a street line needs one of these; most notes have none, and skip the street patterns
    # (digits and capitals first: the alternations run only where those are)
    street_gate = (rf"\d(?<=(?:{STREET_ENDINGS}|{STREET_AFTER})\.?,?{SP}\d)|"
                   rf"(?<![\w])(?=[\p{{Lu}}uaplοολ]){STREET_BEFORE}{SP}\p{{L}}")
    town = rf"{WORD}(?:{SP}{WORD}){{0,3}}"
    # a named place in running text: Title-case words, or UPPER-CASE words in mixed-case text
    # ("flew to STAXROITH on Monday", "University of BASHALL TOWN."); never a state code ("travel to
    # MA") or an upper-case note
    place = (rf"(?-i:(?!{STATE_CODES}\b)(?:\p{{Lu}}[\p{{Ll}}'’\-][\p{{L}}'’\-]*(?:{SP}(?:{PLACE_PARTICLE}{SP})?"
             rf"\p{{Lu}}[\p{{Ll}}'’\-][\p{{L}}'’\-]*){{0,3}}|"
             rf"\p{{Lu}}{{3,}}(?:{SP}\p{{Lu}}{{2,}}){{0,3}}(?=[ \t]+\p{{Ll}}|[.,!?:;]|$)))")
    # a town before its postcode in running text ("in Bjert 6091", "in ÖVERTURINGEN 840 24"): Title-case
    # words or one UPPER-CASE word of four letters or more (not "NS 1000"), never a month or a room
    town_cap = (rf"(?-i:(?!(?:{NOT_PLACE_WORDS})\b)(?:\p{{Lu}}[\p{{Ll}}'’\-][\p{{L}}'’.\-]*|\p{{Lu}}{{4,}})"
                rf"(?:{SP}(?:{PLACE_PARTICLE}{SP})?\p{{Lu}}[\p{{L}}'’.\-]*){{0,3}})")
    postcode = r"(?!(?:19|20)\d\d\b)(?:\d{4}-\d{3}|\d{4,5}|\d{3}[ \t]\d{2})\b"
    # the parts of "the corner of 3rd Street and Elm": numbers and capitalised words (not "corner of her mouth")
    corner_part = rf"(?=\d|(?-i:\p{{Lu}})|{STREET_BEFORE}{SP})(?:\d{{1,6}}(?:st|nd|rd|th)?{SP})?(?:{WORD}{SP}){{0,4}}?{WORD}(?:{SP}{HOUSE})?"
    street_words = rf"{CAPWORD}{SP}(?:{WORD}{SP}){{0,2}}{HOUSE}"  # "Holmatun 45", "Luite tee 87"
    return [
        AnchoredRecognizer(supported_entity="STREET_ADDRESS", name="InternationalStreetRecognizer", patterns=[
            Pattern("street type + house number", rf"(?<![\w])(?:{street})(?![\w])", 0.6),
            Pattern("Greek street + number", greek, 0.6),
        ], context=["address", "lives", "live", "located", "street", "office"], gate=street_gate),
        AnchoredRecognizer(supported_entity="STREET_ADDRESS", name="UnitAndMailRecognizer", patterns=[
            Pattern("Apt. 595 / Suite 501 / Box 8144", unit, 0.55),
            Pattern("PSC 0413, Box 8144", rf"\b(?:PSC|CMR|unit){SP}\d{{3,5}},?{SP}box{SP}\d{{3,5}}\b", 0.8),
            Pattern("APO AA 42323", rf"\b(?:APO|FPO|DPO){SP}(?:AA|AE|AP){SP}\d{{5}}\b", 0.8),
            # "22829 Jagerij 64\n Apt. 591": number, street, house number, then a unit
            Pattern("street line before a unit", rf"(?<![\w.,/:-])\d{{3,6}}{SP}(?:{CAPWORD}{SP}){{1,3}}{HOUSE}"
                    rf"(?=[ \t,]*(?:\n{LEAD}*)?{UNIT}\.?{SP}?#?\d)", 0.55),
            # "78321 Ombù 9091\n Constitución\n Uruguay", "92597 Jahu 80, Liiva": postcode, street, house
            # number at the start of a line or after a cue, then the town (and a postcode or country below it)
            Pattern("street line of an address block", rf"(?<![\w.,/:-])(?<=(?:^|\n|:|\bat|\bto|\bis|\bin){LEAD}*)"
                    rf"\d{{3,6}}{SP}{street_words}(?=[ \t,]*(?:\n{LEAD}*)?{UNIT}\.?{SP}?#?\d|,{SP}(?-i:\p{{Lu}})[\p{{L}}'’\-]+(?:{SP}{WORD}){{0,3}}[ \t]*(?:[.,?!]|\n|$)|"
                    rf"[ \t,]*\n{LEAD}*(?-i:\p{{Lu}})[^\n\d]{{0,40}}(?:\n[^\n\d]{{0,20}})?(?:\d{{4,6}}\b|(?:{country})\b))",
                    0.55),
            Pattern("the corner of X and Y", rf"\b(?:the{SP})?corner{SP}of{SP}{corner_part}{SP}and{SP}{corner_part}"
                    rf"(?=[ \t]*(?:[.,;?!)]|\n|$))", 0.6),
            # "935 69 Gordon Terrace": the postcode some formats put before a US-style street
            Pattern("postcode before a numbered street", rf"(?<![\w.,/:-])\d{{3,6}}(?={SP}\d{{1,6}}{SP}(?:{CAPWORD}{SP}){{1,3}}"
                    rf"(?i:{USPS}){{1}}\.?(?![\w]))", 0.55),
            Pattern("USNS Bergman", rf"\b(?-i:USNS|USNV|USS|USCGC|HMS){SP}(?-i:\p{{Lu}}[\p{{L}}'’\-]+)", 0.6),
        ]),
        AnchoredRecognizer(supported_entity="LOCATION", name="AddressBlockTownRecognizer", patterns=[
            # the town on the line after a unit line ("Apt. 595\n LAPPEENRANTA")
            Pattern("town under a unit line", rf"(?<={unit}[ \t,]*\n{LEAD}*){town}{line_end}", 0.55),
            # the town on the line above "Country 12345" ("Riisa\n\n Estonia 62488")
            Pattern("town above the country line", rf"(?<=\n{LEAD}*){town}(?=[ \t,]*\n(?:{LEAD}*\n)?{LEAD}*(?:{country})"
                    rf"(?:{SP}\([^)\n]{{1,20}}\))?{SP}\d{{4,6}}\b)", 0.55),
            # "Aalborg NO 9100", "KNIVSTA, nan 18237", "Toronto\n, ON\n 82269": town, region code, postcode
            Pattern("town before region + postcode", rf"(?<=(?:^|\n){LEAD}*){town}(?=[ \t]*\n?[ \t]*,?{SP}"
                    rf"(?-i:[A-Z]{{2,3}}|nan)[ \t]*\n?[ \t]*\d{{4,6}}\b)", 0.55),
            # the region code between them ("Toronto\n, ON\n 82269", "Aalborg NO 9100", "Muel\n, Z\n 16518");
            # a US state code stays (Safe Harbor keeps the state)
            Pattern("region code before a postcode", rf"(?<=(?:^|\n){LEAD}*{town}(?:[ \t]*\n[ \t]*,?|[ \t]*,|[ \t])[ \t]*)"
                    rf"(?!{STATE_CODES}\b)(?-i:[A-Z]{{1,3}}|\d{{1,2}})(?!\w)(?=[ \t]*\n?[ \t]*(?:(?:{country})"
                    rf"(?:{SP}\([^)\n]{{1,20}}\))?{SP})?\d{{4,6}}\b(?![-/.:]\d))", 0.5),
            # "LAPPEENRANTA\n    SK\n    53650": the region code alone on its line, between town and postcode
            Pattern("region code line", rf"(?<=\n{LEAD}*{town}[ \t]*\n{LEAD}*)(?!{STATE_CODES}\b)(?-i:[A-Z]{{2,3}})"
                    rf"(?=[ \t]*\n{LEAD}*\d{{4,6}}\b)", 0.5),
            # "ALFRICK\nUnited Kingdom": a town on the line above a country alone
            Pattern("town above a country alone", rf"(?<=(?:^|\n){LEAD}*){town}(?=[ \t,]*\n{LEAD}*(?:{country})"
                    rf"(?:{SP}\([^)\n]{{1,20}}\))?[ \t.]*(?:\n|$))", 0.5),
            # "… Apt. 405 Sindi PR", "Suite 215 NUNGATTA Australia": the rest of the line after a unit
            Pattern("town after a unit on its line", rf"(?<=\b(?:apt|apartment|suite|ste)\.?{SP}?#?{SP}?\d{{1,5}}[a-z]?,?{SP})"
                    rf"(?!(?:apt|apartment|suite|ste)\b){CAPWORD}(?:{SP}(?:{CAPWORD}|(?-i:nan))){{0,3}}"
                    rf"(?=[ \t]*[.,;!?]?[ \t]*(?:\n|$))", 0.5),
        ]),
        AnchoredRecognizer(supported_entity="LOCATION", name="StreetTownRecognizer", patterns=[
            Pattern("town under a street line", rf"(?<=(?:{street})[ \t,]*\n{LEAD}*){town}{line_end}", 0.55),
            # "…, Goiânia" ending an address that has a house number
            Pattern("town after a street", rf"(?<=(?:{street}),{SP}){town}(?=[ \t]*(?:[.,?!]|\n|$))", 0.5),
        ], gate=street_gate),
        AnchoredRecognizer(supported_entity="ZIP_CODE", name="PostcodeRecognizer", patterns=[
            # digits first: the country look-behind (hundreds of names) runs only where a postcode starts
            Pattern("Country 12345", rf"(?<![\w])(?=\d{{4,6}}\b)(?<=\b(?:{country})(?:{SP}\([^)\n]{{1,20}}\))?{SP})"
                    rf"\d{{4,6}}\b", 0.6),
            Pattern("ZIP: 3520", rf"(?<=\b(?:zip|zip{SP}code(?:{SP}is)?|postcode|post{SP}code|postal{SP}code|plz)[:#]?"
                    rf"{SP}{{0,3}})\d{{3,6}}(?:{SP}\d{{2,3}})?(?:-\d{{3,4}})?\b", 0.75),
            Pattern("region code + postcode", rf"(?<=(?:^|\n){LEAD}*[^\n]{{0,40}}\n?[ \t]*,?{SP}(?-i:[A-Z]{{2,3}}|nan)"
                    rf"[ \t]*\n[ \t]*)\d{{4,6}}(?=[ \t]*(?:[.,?!]|\n|$))", 0.5),
            # "Aalborg NO 9100", "Kiel 2 24103": the postcode after the town and region code on one line
            # (the town and the code are found by "town before region + postcode" and "region code before
            # a postcode" above)
            Pattern("town + region + postcode", rf"(?<=(?:^|\n){LEAD}*{town}[ \t]*,?{SP}(?-i:[A-Z]{{1,3}}|nan|\d{{1,2}})"
                    rf"[ \t]+)\d{{4,6}}(?=[ \t]*(?:[.,?!]|\n|$))", 0.5),
            # "28245 Puruntie 82": the postcode some formats put before the street
            Pattern("postcode before a street", rf"(?<![\w])\d{{4,6}}(?={SP}(?:{street}))", 0.55),
        ]),
        AnchoredRecognizer(supported_entity="LOCATION", name="TravelCueRecognizer", patterns=[
            Pattern("flew to X", rf"(?<=\b(?:flew|flying|fly|travel(?:l)?(?:ing|ed)?|drove|driving|relocat(?:ed|ing)|"
                    rf"head(?:ed|ing)|arriv(?:ed|ing)|trip){SP}(?:back{SP})?(?:to|from|in){SP})"
                    rf"(?!(?i:{country})\b){place}", 0.6),
            Pattern("I am in X for", rf"(?<=\b(?:i{SP}am|i'm|we{SP}are|currently){SP}in{SP})(?!(?i:{country})\b)"
                    rf"{place}(?={SP}(?:for|on|until|this|next)\b)",
                    0.6),
            Pattern("home city X", rf"(?<=\b(?:home{SP}(?:city|town)|hometown|city{SP}of|town{SP}of){SP}(?:is{SP}|of{SP})?)"
                    rf"(?!(?i:{country})\b){place}", 0.6),
            Pattern("moved here from X", rf"(?<=\b(?:moved|moving|move)(?:{SP}(?:here|back|away|over))?{SP}(?:to|from){SP}|"
                    rf"\b(?:based|located|headquartered|settled){SP}in{SP}|\barriv(?:ed|ing){SP}at{SP}|"
                    rf"\b(?:university|college){SP}of{SP}|\b(?:i{SP}am|i'm|we{SP}are|we're){SP}in{SP})"
                    rf"(?=(?-i:\p{{Lu}}))(?!(?i:{country})\b){place}", 0.55),
            Pattern("town before its postcode", rf"(?<=\bin{SP})(?=(?-i:\p{{Lu}}))(?!(?i:{country})\b){town_cap}(?={SP}{postcode})",
                    0.55),
        ]),
        AnchoredRecognizer(supported_entity="ZIP_CODE", name="RunningTextPostcodeRecognizer", patterns=[
            Pattern("in town 1234", rf"(?<=\bin{SP}(?=(?-i:\p{{Lu}}))(?!(?i:{country})\b){town_cap}{SP}){postcode}", 0.55),
        ]),
        AnchoredRecognizer(supported_entity="LOCATION", name="UspsStreetTownRecognizer", patterns=[
            # "31 Seneca Place, Marshland" ending an address
            Pattern("town after a US street", rf"(?<=\b\d{{1,6}}{SP}(?:{CAPWORD}{SP}){{1,3}}(?-i:{USPS_TITLE})\.?,{SP})"
                    rf"(?-i:\p{{Lu}}){WORD}(?:{SP}{WORD}){{0,3}}(?=[ \t]*(?:[.?!]|\n|$))", 0.5),
        ]),
    ]


# -- the rest of an address block ------------------------------------------------------------

_TAIL_SEP = regex.compile(rf"[ \t]*,[ \t]*(?:\n{LEAD}*)?|[ \t]*\n{LEAD}*(?:\n{LEAD}*)?(?:,[ \t]*)?|[ \t]+")
_TAIL_UNIT = regex.compile(rf"(?i:apt|apartment|suite|ste|unit|flat)\.?[ \t]?#?[ \t]?\d{{1,5}}[a-z]?\b")
_TAIL_POSTCODE = regex.compile(r"(?:\d{4,6}|\d{3}[ \t]\d{2}|\d{2}-\d{3}|(?-i:[A-Z]\d[A-Z][ \t]?\d[A-Z]\d|\d{4}[ \t]?[A-Z]{2}))"
                               r"(?![\w/.:-]\w)")
# a region code: capitals ("ON", "NS"), Faker's "nan", or one or two digits right above a postcode
_TAIL_REGION = regex.compile(r"(?-i:[A-Z]{1,3}|nan)(?![\w'’])|\d{1,2}(?=[ \t]*\n[ \t]*\d{4})")
# "∆" (the increment sign) stands for "Δ" in some Greek data
_PLACE_WORD = r"(?:\p{Lu}\p{Ll}{0,2}\.|[\p{Lu}∆][\p{L}∆'’\-]*)"  # "St.", "SAINT-PRIEST" (a sentence's dot ends it)
_TAIL_PLACE = regex.compile(rf"{_PLACE_WORD}(?:{SP}(?:{PLACE_PARTICLE}{SP})?{_PLACE_WORD}){{0,3}}(?:{SP}\([^)\n]{{1,30}}\))?")
_TAIL_LOWER_PLACE = regex.compile(r"\p{Ll}[\p{Ll}'’\-]*(?:[ \t]\p{Ll}[\p{Ll}'’\-]*){0,3}(?=[ \t]*(?:[.,;?!]|\n|$))")
_LINE_FILLED = regex.compile(r"[ \t,.]*(?:\n|$)|[ \t]*,?[ \t]*(?:(?-i:[A-Z]{1,3}|nan)[ \t]+)?\d{4,6}\b")
_NOT_PLACE = regex.compile(rf"(?i:{NOT_PLACE_WORDS})\b")


@functools.lru_cache(maxsize=1)
def _kept_places():
    """Countries and US states, whole: a tail walks past them without removing them (Safe Harbor)."""
    return regex.compile(rf"(?i:{countries()}|{STATE_CODES})(?:{SP}\([^)\n]{{1,20}}\))?")


def address_tail(text: str, start: int, end: int, never: frozenset[str]) -> list[tuple[int, int, str]]:
    """The parts of an address block after its street line at `start:end`: units, town, region code,
    postcode, each after a comma, a space or a line break ("… Apt. 108, Danmarkshavn, Greenlander
    35940", "…\\nMOSS\\n, nan\\n 51971 for this card"). A town is capitalised words (or, in an address
    typed in lower case, lower-case words up to the line's end); on a line of its own it must fill
    the line or stand before its postcode. The walk stops at anything else: a word in `never`
    (note words, clinical terms), a month, a label ("Plan:"), a sentence's end. Countries and US
    states are walked past and kept. Returns (start, end, entity) per part."""
    lower = not any(c.isupper() for c in text[start:end])
    kept, parts, at = _kept_places(), [], end
    for _ in range(8):
        sep = _TAIL_SEP.match(text, at)
        if not sep or sep.end() >= len(text):
            break
        p, own_line = sep.end(), "\n" in sep.group()
        if m := _TAIL_UNIT.match(text, p):
            parts.append((m.start(), m.end(), "STREET_ADDRESS"))
        elif m := _TAIL_POSTCODE.match(text, p):
            parts.append((m.start(), m.end(), "ZIP_CODE"))
        elif (m := kept.match(text, p)) and not regex.match(r"[\w'’]", text[m.end():m.end() + 1]):
            pass  # a country or a US state stays
        elif (m := _TAIL_REGION.match(text, p)) and m.group().lower() not in never and \
                regex.match(r"[ \t]*(?:[,.;?!)]|\n|$)|[ \t]*,?[ \t]*\n?[ \t]*\d{4}", text[m.end():m.end() + 12]):
            parts.append((m.start(), m.end(), "LOCATION"))
        elif (m := (_TAIL_LOWER_PLACE if lower else _TAIL_PLACE).match(text, p)) \
                and not any(w.lower().strip(".") in never for w in m.group().split()) and not _NOT_PLACE.match(m.group()) \
                and not text[m.end():m.end() + 1] == ":" and (not own_line or _LINE_FILLED.match(text, m.end())):
            country = regex.search(rf"(?<=[ \t])(?:{countries()})$", m.group())  # "NUNGATTA Australia": the town only
            parts.append((m.start(), m.start() + (country.start() if country else len(m.group())), "LOCATION"))
        else:
            break
        at = m.end()
    return parts
