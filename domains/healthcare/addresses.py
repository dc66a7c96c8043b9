"""Recognizers for addresses outside the US pattern: street words of other languages, units,
military mail, the lines of a written address block, postcodes and travel cues.

Safe Harbor removes every geographic unit smaller than a state, wherever the patient lives;
Presidio's and our US patterns ("14 Crown Street") miss "Puruntie 82", "ul. Słowicza 10",
"Via Tasso 129", "PSC 0413, Box 8144 / APO AA 42323" and the town on the line under them.
The street words are the common street types of European address formats (UPU address
guides), not a list of places, so they carry over to any town. Countries and states stay in
the text (Safe Harbor allows them); they only serve as anchors here.
"""

from __future__ import annotations

import pycountry
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
LETTER = r"\p{L}"
WORD = rf"{LETTER}[{LETTER}'’.\-]*"
CAPWORD = rf"(?-i:\p{{Lu}})[{LETTER}'’.\-]*"
HOUSE = r"\d{1,5}(?:[a-z]|/\d{1,3})?\b\.?"  # "82", "19.", "12b", "15/3"


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
    # a named place in running text: Title-case words, or one UPPER-CASE word in mixed-case text
    # ("flew to STAXROITH on Monday"); never a state code ("travel to MA") or an upper-case note
    place = (rf"(?-i:(?!{STATE_CODES}\b)(?:\p{{Lu}}[\p{{Ll}}'’\-][\p{{L}}'’\-]*(?:{SP}\p{{Lu}}[\p{{Ll}}'’\-][\p{{L}}'’\-]*){{0,3}}|"
             rf"\p{{Lu}}{{3,}}(?=[ \t]+\p{{Ll}}|[.,!?]|$)))")
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
                    rf"(?=[ \t,]*(?:\n[ \t>]*)?{UNIT}\.?{SP}?#?\d)", 0.55),
            # "935 69 Gordon Terrace": the postcode some formats put before a US-style street
            Pattern("postcode before a numbered street", rf"(?<![\w.,/:-])\d{{3,6}}(?={SP}\d{{1,6}}{SP}(?:{CAPWORD}{SP}){{1,3}}"
                    rf"(?i:{USPS}){{1}}\.?(?![\w]))", 0.55),
            Pattern("USNS Bergman", rf"\b(?-i:USNS|USNV|USS|USCGC|HMS){SP}(?-i:\p{{Lu}}[\p{{L}}'’\-]+)", 0.6),
        ]),
        AnchoredRecognizer(supported_entity="LOCATION", name="AddressBlockTownRecognizer", patterns=[
            # the town on the line after a unit line ("Apt. 595\n LAPPEENRANTA")
            Pattern("town under a unit line", rf"(?<={unit}[ \t,]*\n[ \t>]*){town}{line_end}", 0.55),
            # the town on the line above "Country 12345" ("Riisa\n\n Estonia 62488")
            Pattern("town above the country line", rf"(?<=\n[ \t>]*){town}(?=[ \t,]*\n(?:[ \t>]*\n)?[ \t>]*(?:{country})"
                    rf"(?:{SP}\([^)\n]{{1,20}}\))?{SP}\d{{4,6}}\b)", 0.55),
            # "Aalborg NO 9100", "KNIVSTA, nan 18237", "Toronto\n, ON\n 82269": town, region code, postcode
            Pattern("town before region + postcode", rf"(?<=(?:^|\n)[ \t>]*){town}(?=[ \t]*\n?[ \t]*,?{SP}"
                    rf"(?-i:[A-Z]{{2,3}}|nan)[ \t]*\n?[ \t]*\d{{4,6}}\b)", 0.55),
        ]),
        AnchoredRecognizer(supported_entity="LOCATION", name="StreetTownRecognizer", patterns=[
            Pattern("town under a street line", rf"(?<=(?:{street})[ \t,]*\n[ \t>]*){town}{line_end}", 0.55),
            # "…, Goiânia" ending an address that has a house number
            Pattern("town after a street", rf"(?<=(?:{street}),{SP}){town}(?=[ \t]*(?:[.,?!]|\n|$))", 0.5),
        ], gate=street_gate),
        AnchoredRecognizer(supported_entity="ZIP_CODE", name="PostcodeRecognizer", patterns=[
            # digits first: the country look-behind (hundreds of names) runs only where a postcode starts
            Pattern("Country 12345", rf"(?<![\w])(?=\d{{4,6}}\b)(?<=\b(?:{country})(?:{SP}\([^)\n]{{1,20}}\))?{SP})"
                    rf"\d{{4,6}}\b", 0.6),
            Pattern("ZIP: 3520", rf"(?<=\b(?:zip|zip{SP}code(?:{SP}is)?|postcode|post{SP}code|postal{SP}code|plz)[:#]?"
                    rf"{SP}{{0,3}})\d{{3,6}}(?:{SP}\d{{2,3}})?(?:-\d{{3,4}})?\b", 0.75),
            Pattern("region code + postcode", rf"(?<=(?:^|\n)[ \t>]*[^\n]{{0,40}}\n?[ \t]*,?{SP}(?-i:[A-Z]{{2,3}}|nan)"
                    rf"[ \t]*\n[ \t]*)\d{{4,6}}(?=[ \t]*(?:[.,?!]|\n|$))", 0.5),
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
        ]),
    ]
