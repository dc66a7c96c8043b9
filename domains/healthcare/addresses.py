"""Recognizers for addresses outside the US pattern: street words of other languages, units,
military mail, the lines of a written address block, postcodes and travel cues.

Safe Harbor removes every geographic unit smaller than a state, wherever the patient lives;
Presidio's and our US patterns ("14 Crown Street") miss "Puruntie 82", "ul. Słowicza 10",
"Via Tasso 129", "PSC 0413, Box 8144 / APO AA 42323" and the town on the line under them;
the address-block patterns also read the region code between town and postcode
("Toronto\n, ON\n 82269"; a US state code stays after a US-style street line, while after
"Feldstrasse 42" the same letters are another country's region), bulleted or quoted blocks
("> ", "* "), street lines without a street type when the block structure shows them ("78321
Ombù 9091\nConstitución\n Uruguay", "Suite 5 0547 Bygget 91\nANNERSTAD nan 340 12"), the house
number before the street type ("29 Rue de Tanger", "119 Countess Close", "87818 Dalmatinova 68
St."), lower-case and Greek street lines, what stands before a street line (a postcode, the
other street of a crossing, a building name: `address_head`), "the corner of X and Y", streets
after "lives on" / "the station is on", and towns in running text after a cue ("moved here
from", "based in", "University of", "in Bjert 6091", "to X by helicopter", "Where:").
The street words are the common street types of European address formats (UPU address
guides), not a list of places, so they carry over to any town. Countries and states stay in
the text (Safe Harbor allows them); they only serve as anchors here.
"""

from __future__ import annotations

import functools

import pycountry
import regex
from presidio_analyzer import Pattern

from domains.healthcare.recognizers import NOT_TOWNS, SP, STATES, STREET_SUFFIXES, AnchoredRecognizer, case_counts

# Street types written before the name (Romance, Slavic, Greek formats): "Via Tasso 129". Case
# matters: "place pt on 2L" is an order, "Place Bellecour 2" an address.
STREET_BEFORE = (r"(?-i:Via|Viale|Vicolo|Piazza|Piazzale|Corso|Largo|Contrada|Rua|Rúa|Avenida|Av\.|Avda\.|"
                 r"Travessa|Alameda|Calle|C/|Carrer|Camino|Paseo|Plaza|Ronda|Rambla|Rue|Boulevard|Bd\.?|Chemin|Place|Allée|Impasse|"
                 r"Quai|Strada|Calea|Bulevardul|Trg|Ulitsa|Prospekt|Avinguda|Ul\.|Ulica|Aleja|Plac|Odos|"
                 r"ul\.|ulica|aleja|plac|Οδός|Λεωφόρος|Λ\.|Λεωφ\.|οδός|λεωφόρος|λ\.)")
# Street types ending a word (Nordic, German, Dutch, Baltic): "Puruntie 82", "Søndergade 52",
# "Pohlstrasse 9" (endings that English words share, "-ring", "-sor", are left out)
STREET_ENDINGS = (r"katu|tie|polku|kuja|gade|vej|vænget|stræde|gata|gatan|vägen|gränd|veien|vegen|straße|strasse|"
                  r"str\.|weg|gasse|allee|platz|damm|ufer|straat|laan|plein|gracht|singel|dreef|utca|útja|"
                  r"iela|gatvė|tänav|sokak|sokağı|caddesi|náměstí")
# Street types written as a word after the name: "Erzsébet tér 19.", "Trenerys gate 232", "Király u. 15."
STREET_AFTER = (r"tér|út|útja|u\.|utca|köz|sor|gate|gata|gatan|vej|vei|veien|straße|strasse|str\.|weg|gasse|allee|"
                r"laan|straat|plein|iela|tänav|sokak|caddesi|cad\.")
# Street types after the house number in French, Portuguese, Spanish and Italian formats ("29 Rue de
# Tanger", "63 Avenue du Golf Arabe"); "rue", "avenue" also in lower case
NUMBER_FIRST = (r"(?-i:Rue|rue|Avenue|avenue|Av\.|Avda\.|Boulevard|boulevard|Bd\.?|Chemin|chemin|Allée|allée|Impasse|"
                r"impasse|Quai|quai|Place|Cours|Route|Rua|rua|Calle|Via)")
# British street types missing from USPS's list ("119 Countess Close"); Title case only ("keep a close eye")
UK_STREET = r"(?-i:Close|Rise|Parade|Esplanade|Promenade|Quay|Wynd)"
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
PLACE_PARTICLE = r"(?:de|del|da|do|dos|das|di|la|le|los|las|y|u|v|ve|na|nad|pod|am|an|im|sur|sous|en|op|aan)"
# words of a sentence that never start a street's name ("enter on hegyalja út 98.")
NOT_STREET_NAME = "to|on|at|in|of|the|a|an|and|is|are|was|refers|enter|from|by|for|with|via"
# the kinds of venue that follow a place's name on an event's "Where:" line
VENUES = (r"country[ \t]club|golf[ \t]club|club|hotel|restaurant|park|hall|centre|center|stadium|arena|church|museum|"
          r"library|caf[eé]|bar|pub|theat(?:re|er)|gallery|beach|lounge|resort|inn")
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
    street = (rf"(?:\d{{1,6}}{SP})?(?:{STREET_BEFORE}{SP}(?:{WORD}{SP}){{0,4}}{CAPWORD}|"
              rf"(?:{CAPWORD}{SP}){{0,2}}(?-i:\p{{Lu}}){LETTER}*(?:{STREET_ENDINGS})|"
              rf"(?:{CAPWORD}{SP}){{1,2}}(?:{STREET_AFTER})|"
              # Hungarian street types share no English word, so the name may be in lower case
              rf"(?:(?!(?i:{NOT_STREET_NAME})\b){WORD}{SP}){{1,3}}(?-i:út|útja|utca|tér|körút))"
              rf",?{SP}{HOUSE}")
    # "2407 tawastintie 6" typed in lower case: only after the postcode, which vouches for the ending
    lower_street = rf"(?<![\w.,/:-])\d{{3,6}}{SP}(?-i:\p{{Ll}}){LETTER}*(?:{STREET_ENDINGS}){SP}{HOUSE}(?![\w])"
    greek = rf"(?<![\w])(?:\d{{1,6}}{SP})?\p{{Greek}}[\p{{Greek}}'’.\-]*(?:{SP}\p{{Greek}}[\p{{Greek}}'’.\-]*){{0,3}}{SP}\d{{1,4}}\b"
    unit = rf"\b{UNIT}\.?{SP}?#?{SP}?\d{{1,5}}[a-z]?\b"
    line_end = r"(?=[ \t,]*(?:\n|$))"
    # a street line needs one of these; most notes have none, and skip the street patterns
    # (digits and capitals first: the alternations run only where those are)
    street_gate = (rf"\d(?<=(?:{STREET_ENDINGS}|{STREET_AFTER}|\p{{Greek}})\.?,?{SP}\d)|"
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
    # a lower-case place after a strong cue: one word that is no ordinary destination ("to work by train")
    lower_place = (r"(?!(?:home|work|school|church|town|hospital|clinic|class|bed|the|a|an|my|his|her|our|their|"
                   r"us|them|me|him|it|see|visit|get|be|meet|attend|pick|er|ed|icu|or)\b)(?-i:\p{Ll}[\p{Ll}'’\-]+)")
    postcode = r"(?!(?:19|20)\d\d\b)(?:\d{4}-\d{3}|\d{4,5}|\d{3}[ \t]\d{2})\b"
    # the parts of "the corner of 3rd Street and Elm": numbers and capitalised words (not "corner of her mouth")
    # ("Nieuwe Baan 473 St." with a house number before the street type)
    corner_part = (rf"(?=\d|(?-i:\p{{Lu}})|{STREET_BEFORE}{SP})(?:\d{{1,6}}(?:st|nd|rd|th)?{SP})?(?:{WORD}{SP}){{0,4}}?{WORD}"
                   rf"(?:{SP}{HOUSE}(?:{SP}{CAPWORD})?)?")
    # typed in lower case, the first street must carry a house number ("corner of heiligengeistbrücke 77
    # and minik courts"; not "the corner of her mouth and lip")
    lower_word = r"(?-i:\p{Ll}[\p{Ll}'’.\-]*)"
    lower_corner = (rf"(?:{lower_word}{SP}){{1,3}}\d{{1,5}}[a-z]?\b{SP}and{SP}(?:\d{{1,6}}(?:st|nd|rd|th)?{SP})?"
                    rf"(?:{lower_word}{SP}){{0,3}}?{lower_word}(?:{SP}{HOUSE})?")
    street_words = rf"{CAPWORD}{SP}(?:{WORD}{SP}){{0,2}}{HOUSE}"  # "Holmatun 45", "Luite tee 87"
    return [
        AnchoredRecognizer(supported_entity="STREET_ADDRESS", name="InternationalStreetRecognizer", patterns=[
            Pattern("street type + house number", rf"(?<![\w])(?:{street})(?![\w])", 0.6),
            Pattern("Greek street + number", greek, 0.6),
            Pattern("postcode + lower-case street + number", lower_street, 0.6),
        ], context=["address", "lives", "live", "located", "street", "office"], gate=street_gate),
        AnchoredRecognizer(supported_entity="STREET_ADDRESS", name="NumberFirstStreetRecognizer", patterns=[
            # "76556 29 Rue de Tanger\n", "010 63 Avenue du Golf Arabe Suite 910", "688 rue du centre 320\n":
            # (a postcode,) the house number, the street type, its name to the line's end, a comma or a unit
            Pattern("number + street type + name", rf"(?<![\w.,/:-])(?:\d{{3,6}}{SP})?\d{{1,5}}[a-z]?,?{SP}{NUMBER_FIRST}"
                    rf"(?:{SP}{WORD}){{1,5}}?(?:{SP}{HOUSE})?(?=[ \t]*,|[ \t]*(?:\n|$)|{SP}{UNIT}\.?{SP}?#?\d|"
                    rf"(?<=\.)\s|[?!.](?:\s|$))", 0.6),
            # "87818 Dalmatinova 68 St.", "518 Árpád fejedelem útja 62. St.": postcode, street, house number
            # and a street type written after them
            Pattern("postcode + street + number + St.", rf"(?<![\w.,/:-])\d{{3,6}}{SP}(?:{WORD}{SP}){{1,6}}\d{{1,5}}[a-z]?\.?"
                    rf"{SP}(?-i:St\.|st\.|Street\b|street\b)", 0.6),
            Pattern("number + words + British street type", rf"\b\d{{1,6}}{SP}(?:{CAPWORD}{SP}){{1,3}}{UK_STREET}\b", 0.6),
        ], gate=rf"\d,?{SP}{NUMBER_FIRST}{SP}|\d\.?{SP}(?-i:St\.|st\.|Street\b|street\b)|\b{UK_STREET}\b"),
        AnchoredRecognizer(supported_entity="STREET_ADDRESS", name="UnitAndMailRecognizer", patterns=[
            Pattern("Apt. 595 / Suite 501 / Box 8144", unit, 0.55),
            Pattern("PSC 0413, Box 8144", rf"\b(?:PSC|CMR|unit){SP}\d{{3,5}},?{SP}box{SP}\d{{3,5}}\b", 0.8),
            Pattern("APO AA 42323", rf"\b(?:APO|FPO|DPO){SP}(?:AA|AE|AP){SP}\d{{5}}\b", 0.8),
            # "22829 Jagerij 64\n Apt. 591": number, street, house number, then a unit (in an address
            # typed in lower case, lower-case words: "5670 r josé a madeira 1 suite 696")
            Pattern("street line before a unit", rf"(?<![\w.,/:-])\d{{3,6}}{SP}(?:(?:{CAPWORD}{SP}){{1,3}}|"
                    rf"(?-i:(?:\p{{Ll}}[\p{{Ll}}'’.\-]*{SP}){{1,4}})){HOUSE}"
                    rf"(?=[ \t,]*(?:\n{LEAD}*)?{UNIT}\.?{SP}?#?\d)", 0.55),
            # "78321 Ombù 9091\n Constitución\n Uruguay", "92597 Jahu 80, Liiva": postcode, street, house
            # number at the start of a line or after a cue, then the town (and a postcode or country below it)
            # (or after a unit: "Suite 541 6343 Skogstien 106\nASKER nan 1386"); the town line may be
            # followed by a region line (", CO", ", 13") before the postcode
            Pattern("street line of an address block", rf"(?<![\w.,/:-])(?<=(?:^|\n|:|,|\bat|\bto|\bis|\bin|"
                    rf"{UNIT}\.?{SP}?#?\d{{1,5}}){LEAD}*)"
                    rf"\d{{3,6}}{SP}{street_words}(?=[ \t,]*(?:\n{LEAD}*)?{UNIT}\.?{SP}?#?\d|,{SP}(?-i:\p{{Lu}})[\p{{L}}'’\-]+(?:{SP}{WORD}){{0,3}}[ \t]*(?:[.,?!]|\n|$)|"
                    rf"[ \t,]*\n{LEAD}*(?-i:\p{{Lu}})[^\n\d]{{0,40}}(?:\n(?:[^\n\d]{{0,20}}|[ \t]*,?[ \t]*\d{{1,2}}[ \t]*(?=\n))){{0,2}}"
                    rf"[ \t]*(?:(?:\d{{4,6}}|\d{{3}}[ \t]\d{{2}})\b|(?:{country})\b))",
                    0.55),
            # "The bus station is on Pod Floriánem 1677", "lives on the north side of Joaquin Suarez 2906":
            # capitalised words and a house number after a cue of where one lives or stops
            Pattern("lives on X 12", rf"(?<=\b(?:lives|lived|living|resides|resided|located|situated|station{SP}is|"
                    rf"stop{SP}is|entrance{SP}is|enter){SP}on{SP}(?:the{SP}(?:north|south|east|west)(?:ern)?{SP}"
                    rf"(?:side|end){SP}of{SP})?)(?!(?i:floor|level|bed|room|rm|unit|ward|page|step|stage|day|week)\b)"
                    rf"(?:{CAPWORD}{SP}){{1,4}}{HOUSE}"
                    rf"(?=[ \t]*(?:[,;?!)]|\n|$)|(?<=\.)|\.(?:\s|$))", 0.6),
            Pattern("the corner of X and Y", rf"\b(?:the{SP})?corner{SP}of{SP}{corner_part}{SP}and{SP}{corner_part}"
                    rf"(?=[ \t]*(?:[.,;?!)]|\n|$))", 0.6),
            Pattern("the corner of x 77 and y", rf"\b(?-i:the{SP})?(?-i:corner){SP}of{SP}{lower_corner}"
                    rf"(?=[ \t]*(?:[.,;?!)]|\n|$))", 0.6),
            # "935 69 Gordon Terrace": the postcode some formats put before a US-style street
            Pattern("postcode before a numbered street", rf"(?<![\w.,/:-])\d{{3,6}}(?={SP}\d{{1,6}}{SP}(?:{CAPWORD}{SP}){{1,3}}"
                    rf"(?i:{USPS}){{1}}\.?(?![\w]))", 0.55),
            Pattern("USNS Bergman", rf"\b(?-i:USNS|USNV|USS|USCGC|HMS){SP}(?-i:\p{{Lu}}[\p{{L}}'’\-]+)", 0.6),
            Pattern("uscgc bergman", rf"\b(?-i:usns|usnv|uscgc){SP}(?-i:\p{{Ll}}[\p{{L}}'’\-]+)", 0.6),
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
                    rf"{SP}{{0,3}})\d{{3,6}}(?:{SP}\d{{2,3}}|{SP}?(?-i:[A-Z]{{2}}))?(?:-\d{{3,4}})?\b", 0.75),
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
            # a destination reached by air, rail or sea ("returned to ESPOO by helicopter", "to kiel by ferry")
            Pattern("to X by helicopter", rf"(?<=\bto{SP})(?!(?i:{country})\b)(?:{place}|{lower_place})"
                    rf"(?={SP}by{SP}(?i:helicopter|plane|air|train|rail|ferry|boat|ship|coach)\b)", 0.6),
            # the lower-case forms of "flew to X" and "University of X", in text typed in lower case
            Pattern("flew to x", rf"(?<=\b(?-i:flew|flown|flying){SP}(?:back{SP})?(?-i:to|from|into){SP})"
                    rf"(?!(?i:{country})\b){lower_place}", 0.55),
            Pattern("university of x", rf"(?<=\b(?-i:university){SP}of{SP})(?!(?i:{country}|the)\b)"
                    rf"(?-i:\p{{Ll}}[\p{{Ll}}'’\-]*(?:{SP}\p{{Ll}}[\p{{Ll}}'’\-]*){{0,2}})"
                    rf"(?=[ \t]*(?:[.,;!?]|\n|$))", 0.55),
            # the place on the "Where:" line of an invitation: before a venue's kind ("Where: Novo mesto
            # Country Club."), or capitalised under a "When:" line (not a template's "Where: lower back")
            Pattern("Where: X Club", rf"(?<=(?:^|\n)[ \t]*(?i:where):[ \t]*)(?!(?i:{country})\b)(?=\w)[^\n]{{1,60}}?"
                    rf"(?=[ \t]+(?i:{VENUES})\b)", 0.55),
            Pattern("When: … Where: X", rf"(?<=(?:^|\n)[ \t]*(?i:when):[^\n]*\n[ \t]*(?i:where):[ \t]*)(?!(?i:{country})\b)"
                    rf"(?![^\n]*?[ \t](?i:{VENUES})\b)(?-i:\p{{Lu}})[^\n]{{0,60}}?(?=[ \t]*[.,!]?[ \t]*(?:\n|$))", 0.55),
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
# a three-digit postcode (Iceland, Faroe) only alone on the last line of a block
_TAIL_SHORT_POSTCODE = regex.compile(r"\d{3}(?=[ \t]*(?:\n[ \t]*\n|$))")
# a second house number before a unit ("Strada Provinciale 65 22 Suite 455")
_TAIL_HOUSE = regex.compile(rf"\d{{1,5}}[a-z]?(?=[ \t]+{_TAIL_UNIT.pattern})")
# a region code: capitals ("ON", "NS"), Faker's "nan", or one or two digits right above a postcode
_TAIL_REGION = regex.compile(r"(?-i:[A-Z]{1,3}|nan)(?![\w'’])|\d{1,2}(?=[ \t]*\n[ \t]*\d{4})")
# in an address typed in lower case, also a lower-case code ("delmas, mp 35739")
_TAIL_LOWER_REGION = regex.compile(rf"{_TAIL_REGION.pattern}|(?-i:[a-z]{{1,3}})(?![\w'’])")
# "∆" (the increment sign) stands for "Δ" in some Greek data
_PLACE_WORD = r"(?:\p{Lu}\p{Ll}{0,2}\.|[\p{Lu}∆][\p{L}∆'’\-]*)"  # "St.", "SAINT-PRIEST" (a sentence's dot ends it)
_TAIL_PLACE = regex.compile(rf"{_PLACE_WORD}(?:{SP}(?:{PLACE_PARTICLE}{SP})?{_PLACE_WORD}){{0,3}}(?:{SP}\([^)\n]{{1,30}}\))?")
_TAIL_LOWER_PLACE = regex.compile(r"[\p{Ll}∆][\p{Ll}∆'’\-]*(?:[ \t][\p{Ll}∆][\p{Ll}∆'’\-]*){0,3}(?=[ \t]*(?:[.,;?!]|\n|$))")
_LINE_FILLED = regex.compile(r"[ \t,.]*(?:\n|$)|[ \t]*,?[ \t]*(?:(?-i:[A-Z]{1,3}|[a-z]{1,3})[ \t]+)?"
                             r"(?:\d{4,6}|\d{3}[ \t]\d{2})\b")
_NOT_PLACE = regex.compile(rf"(?i:{NOT_PLACE_WORDS})\b")
# what follows a region code: the end of its line or sentence, or the postcode (maybe after the country)
_REGION_END = regex.compile(r"[ \t]*(?:[,.;?!)]|\n|$)")
# a street line in a non-US format: the house number after the street name ("Feldstrasse 42", "Rua
# Cyro Schmutzer Franco 1213"), once its units are cut off
_UNITS_AT_END = regex.compile(rf"(?:[ \t,]+{_TAIL_UNIT.pattern})+$")
_NON_US_STREET = regex.compile(r"\p{L}[\p{L}'’.\-]*,?[ \t]+\d{1,5}[a-z]?\.?$")


@functools.lru_cache(maxsize=1)
def _kept_places():
    """Countries and US states, whole: a tail walks past them without removing them (Safe Harbor)."""
    return regex.compile(rf"(?i:{countries()}|{STATE_CODES})(?:{SP}\([^)\n]{{1,20}}\))?")


@functools.lru_cache(maxsize=1)
def _postcode_next():
    """A postcode after a region code, on its line or the next, maybe after the country."""
    return regex.compile(rf"[ \t]*,?[ \t]*\n?[ \t]*(?:(?i:{countries()})(?:{SP}\([^)\n]{{1,20}}\))?[ \t]+)?"
                         rf"(?:\d{{3,6}}|(?-i:[A-Z]\d[A-Z]))\b(?![-./:]\d)")  # not "FAX 603-531-0061"


def _region(text: str, p: int, never: frozenset[str], lower: bool, own_line: bool):
    """A region code at `p` ("ON", "nan", "13"; "mp" in a lower-case address, before its postcode), or
    None. In mixed-case text a code that is also a word or a clinical term ("NS", "PA", "NO") counts
    before a postcode, or at the end of the town's line or sentence ("… Apt. 934 OULU NO.")."""
    m = (_TAIL_LOWER_REGION if lower else _TAIL_REGION).match(text, p)
    if not m:
        return None
    postcode, line_end = _postcode_next().match(text, m.end()), _REGION_END.match(text, m.end())
    small = m.group().islower() and m.group() != "nan"  # only before its postcode
    if m.group().lower() not in never:
        return m if postcode or line_end and not small else None
    upper, letters = case_counts(text)
    if not m.group().isupper() or upper > 0.5 * letters:
        return None  # an upper-case note is full of such words
    return m if postcode or line_end and not own_line else None


def _place(text: str, p: int, never: frozenset[str], lower: bool, own_line: bool):
    """The town at `p`: capitalised words (lower-case ones in a lower-case address), none of them a
    note word, a trailing region code ("OULU NO") left to `_region`; on a line of its own it must fill
    the line or stand before its postcode. Returns its end or None."""
    m = (_TAIL_LOWER_PLACE if lower else _TAIL_PLACE).match(text, p)
    if not m or _NOT_PLACE.match(m.group()) or text[m.end():m.end() + 1] == ":":
        return None
    words, end = m.group().split(), m.end()
    if len(words) > 1 and regex.fullmatch(r"(?-i:[A-Z]{1,3})", words[-1]) and not own_line:
        end = m.start() + regex.search(r"[ \t]+\S+$", m.group()).start()  # "OULU NO": the town, then its region
        words = words[:-1]
    if any(w.lower().strip(".") in never for w in words) or (own_line and not _LINE_FILLED.match(text, end)):
        return None
    country = regex.search(rf"(?<=[ \t])(?:{countries()})$", text[m.start():end])  # "NUNGATTA Australia": the town
    return m.start() + country.start() if country else end


def address_tail(text: str, start: int, end: int, never: frozenset[str]) -> list[tuple[int, int, str]]:
    """The parts of an address block after its street line at `start:end`: units, town, region code,
    postcode, each after a comma, a space or a line break ("… Apt. 108, Danmarkshavn, Greenlander
    35940", "…\\nMOSS\\n, nan\\n 51971 for this card"). A town is capitalised words (or, in an address
    typed in lower case, lower-case words up to the line's end); on a line of its own it must fill
    the line or stand before its postcode. The walk stops at anything else: a word in `never`
    (note words, clinical terms), a month, a label ("Plan:"), a sentence's end. Countries are walked
    past and kept, and so are US state codes after a US-style street line; after a street line in
    another country's format ("Feldstrasse 42") "PA" or "CO" is that country's region code ("Como",
    "Pará") and goes. Returns (start, end, entity) per part."""
    lower = not any(c.isupper() for c in text[start:end])
    non_us = bool(_NON_US_STREET.search(_UNITS_AT_END.sub("", text[start:end])))
    kept, parts, at = _kept_places(), [], end
    for _ in range(8):
        sep = _TAIL_SEP.match(text, at)
        if not sep or sep.end() >= len(text):
            break
        p, own_line = sep.end(), "\n" in sep.group()
        if m := _TAIL_UNIT.match(text, p):
            parts.append((m.start(), m.end(), "STREET_ADDRESS"))
        elif not own_line and (m := _TAIL_HOUSE.match(text, p)):
            parts.append((m.start(), m.end(), "STREET_ADDRESS"))
        elif (m := _TAIL_POSTCODE.match(text, p)) or own_line and (m := _TAIL_SHORT_POSTCODE.match(text, p)):
            parts.append((m.start(), m.end(), "ZIP_CODE"))
        elif (m := kept.match(text, p)) and not regex.match(r"[\w'’]", text[m.end():m.end() + 1]) \
                and not (non_us and regex.fullmatch(STATE_CODES, m.group())):
            pass  # a country or a US state stays
        elif m := _region(text, p, never, lower, own_line):
            parts.append((m.start(), m.end(), "LOCATION"))
        elif town_end := _place(text, p, never, lower, own_line):
            parts.append((p, town_end, "LOCATION"))
            at = town_end
            continue
        else:
            break
        at = m.end()
    return parts


_HEAD_POSTCODE = regex.compile(r"(?<![\w.,/:-])\d{3,6}(?=[ \t]+$)")
_HEAD_CROSSING = regex.compile(r"(?<![\w'’])(?-i:\p{Lu})[\p{L}'’\-]+[ \t]+and(?=[ \t]+$)")
_HEAD_BUILDING = regex.compile(r"(?<=(?:^|\n)[ \t>*•]*)(?-i:\p{Lu})[\p{L}'’\-]+(?=[ \t]+$)")


def address_head(text: str, start: int, never: frozenset[str]) -> list[tuple[int, int, str]]:
    """What belongs to the street line starting at `start` but stands before it on its line: the
    postcode before a house number ("3747 3911 fourth avenue"), the other street of a crossing
    ("Hanne and ul. Miła 53"), a building name opening the line ("Fuglie 41 Popović Dam")."""
    window, numbered = max(0, start - 60), text[start:start + 1].isdigit()
    if numbered and (m := _HEAD_POSTCODE.search(text, window, start)):
        return [(m.start(), m.end(), "ZIP_CODE")]
    for pattern, needs_number in ((_HEAD_CROSSING, False), (_HEAD_BUILDING, True)):
        if (numbered or not needs_number) and (m := pattern.search(text, window, start)) \
                and m.group().split()[0].lower() not in never:
            return [(m.start(), m.end(), "STREET_ADDRESS")]
    return []
