"""Synthetic tutoring-session logs carrying realistic FERPA student identifiers.

    from domains.education.generator import generate
    rows = generate(400, seed=0)   # deterministic for (n, seed); 10,000 logs in about a second

Each row is `{"item_id", "session_text", "answer", "gender", "ell", "school_type", "phi", "phi_types"}`.
The log names the student (full name), a student id (S-1234567, 9-digit district ids, ...),
the school, teacher and tutor, a parent or guardian with email and phone, and session dates;
then comes an arithmetic word problem (one or two operations on small integers, many
templates, objects and verbs) whose integer answer is the label. The problem often uses
the student's first name, so de-identification must keep it readable. Identifiers are
listed verbatim in `phi` (types in the parallel `phi_types`) for the leakage tests.

Name and place pools must stay disjoint from the surrogate pools in `tasks/deidentify.py`.
"""

from __future__ import annotations

import datetime as dt
import random

from domains.healthcare.generator import (
    CITIES, EMAIL_DOMAINS, MONTHS, STREET_SUFFIX, STREETS, digits, phone,
)

FIRST_F = ("Maya", "Aaliyah", "Sofia", "Emily", "Ximena", "Mei", "Zainab", "Harper", "Imani", "Valentina",
           "Priya", "Chloe", "Naomi", "Camila", "Yuna", "Destiny", "Fiona", "Leilani", "Esmeralda", "Brianna")
FIRST_M = ("Jayden", "Mateo", "Liam", "DeAndre", "Ethan", "Santiago", "Kenji", "Omar", "Malik", "Dylan",
           "Arjun", "Diego", "Caleb", "Tyrone", "Nikolai", "Elijah", "Hamza", "Brandon", "Xavier", "Tomas")
SURNAMES = ("Thompson", "Ramirez", "Nguyen", "Okafor", "Whitaker", "Castillo", "Johansson", "Patel", "Yazzie",
            "Morales", "Kowalczyk", "Harrington", "Begay", "Delgado", "Fontaine", "Abdullah", "Lindgren",
            "Montgomery", "Achebe", "Cruz", "Sorensen", "Takeda", "Villarreal", "Gallagher", "Mendoza")
TEACHERS = ("Ortiz", "Daniels", "Kim", "Brooks", "Hollister", "Navarro", "Feldman", "Oyelowo", "Pruitt",
            "Varga", "Leclerc", "Tran", "McBride", "Sato", "Quintero", "Ashworth")
SCHOOL_NAMES = ("Lincoln", "Roosevelt", "Maple Grove", "Cedar Ridge", "Riverside", "Eastbrook", "Hillcrest",
                "Pine Valley", "Jefferson", "Sojourner Truth", "Cesar Chavez", "Meadowbrook", "Bear Creek",
                "Harriet Tubman", "Oak Hollow", "Willow Springs", "Franklin", "Stonebridge", "Clearwater")
SCHOOL_KINDS = ("Elementary School", "Elementary", "Middle School", "High School", "Academy", "Charter School",
                "K-8 School", "Intermediate School", "Junior High")
HEADERS = ("Tutoring Session Log", "After-school math tutoring - session notes", "Intervention block record",
           "Peer tutoring check-in", "Math lab visit", "Tier 2 math intervention note", "Homework help log",
           "SESSION NOTES", "Title I tutoring record")
PRONOUNS = {"female": ("she", "her"), "male": ("he", "his")}

# Word problems: (template, operation). {n} is a person (often the student), {a},{b},{c} numbers.
OBJECTS = ("stickers", "marbles", "pencils", "apples", "cookies", "baseball cards", "seashells", "books",
           "crayons", "trading cards", "beads", "stamps", "balloons", "cupcakes", "toy cars", "erasers",
           "oranges", "comic books", "paper cranes", "blocks")
CONTAINERS = ("boxes", "bags", "packs", "jars", "baskets", "trays", "bins", "crates")
TEMPLATES = (
    ("{n} has {a} {obj}. {p} gets {b} more. How many {obj} does {n} have now?", "a+b"),
    ("{n} collected {a} {obj} on Monday and {b} on Tuesday. How many {obj} did {n} collect in all?", "a+b"),
    ("There are {a} {obj} in a bin. {n} puts in {b} more. How many {obj} are in the bin?", "a+b"),
    ("{n} had {a} {obj} and gave {b} to a friend. How many {obj} does {n} have left?", "a-b"),
    ("A shelf holds {a} {obj}. {n} takes away {b} of them. How many {obj} are still on the shelf?", "a-b"),
    ("{n} needs {a} {obj} for a project and already has {b}. How many more {obj} does {n} need?", "a-b"),
    ("{n} buys {a} {cont} of {obj} with {b} {obj} in each. How many {obj} does {n} buy?", "a*b"),
    ("Each of {a} tables has {b} {obj}. How many {obj} are there altogether?", "a*b"),
    ("{n} reads {b} pages every day for {a} days. How many pages does {n} read?", "a*b"),
    ("{n} shares {ab} {obj} equally among {a} friends. How many {obj} does each friend get?", "ab/a"),
    ("{ab} {obj} are packed into {cont} of {b}. How many {cont} are filled?", "ab/b"),
    ("A class of {ab} students splits into teams of {a}. How many teams are there?", "ab/a"),
    ("{n} has {a} {obj}, finds {b} more, then loses {c}. How many {obj} does {n} have now?", "a+b-c"),
    ("{n} buys {a} {cont} with {b} {obj} in each and gets {c} extra {obj} free. How many {obj} in total?", "a*b+c"),
    ("{n} had {a} {obj}. {p} bought {b} {cont} of {c} more. How many {obj} does {n} have?", "a+b*c"),
    ("{n} bakes {a} trays of {b} {obj} and eats {c}. How many {obj} are left?", "a*b-c"),
    ("{n} earned ${a} on Saturday and ${b} on Sunday, then spent ${c}. How many dollars are left?", "a+b-c"),
    ("{n} splits {ab} {obj} into {a} equal groups and adds {c} to each group. How many {obj} are in one group?",
     "ab/a+c"),
    ("A bus has {a} riders. At the first stop {b} get off and {c} get on. How many riders are on the bus?", "a-b+c"),
    ("{n} scores {a} points in each of {b} games and {c} bonus points. What is {pos} total score?", "a*b+c"),
    ("{n} plants {a} rows of {b} flowers. {c} of them do not bloom. How many flowers bloom?", "a*b-c"),
    ("{n} walks {a} blocks to school and {b} blocks back each day. How many blocks in {c} days?", "(a+b)*c"),
)
OPS = {
    "a+b": lambda a, b, c: a + b, "a-b": lambda a, b, c: a - b, "a*b": lambda a, b, c: a * b,
    "ab/a": lambda a, b, c: b, "ab/b": lambda a, b, c: a, "a+b-c": lambda a, b, c: a + b - c,
    "a*b+c": lambda a, b, c: a * b + c, "a+b*c": lambda a, b, c: a + b * c, "a*b-c": lambda a, b, c: a * b - c,
    "ab/a+c": lambda a, b, c: b + c, "a-b+c": lambda a, b, c: a - b + c, "(a+b)*c": lambda a, b, c: (a + b) * c,
}
NOTES = ("Drew a bar model first.", "Used a number line.", "Needed one prompt to reread the question.",
         "Checked the answer by working backwards.", "Solved independently.", "Confused the operation at first.",
         "Explained the steps aloud.", "Used counters.", "Wrote an equation before solving.")
CONTEXT = ("Working on multi-step word problems this week.", "Reviewing unit 4 (operations).",
           "Focus: choosing the operation.", "Goal from IEP meeting: explain reasoning in writing.",
           "Warm-up: fact fluency, 5 min.", "Makeup session after last week's absence.")


class _Log:
    def __init__(self):
        self.phi: list[str] = []
        self.types: list[str] = []

    def plant(self, kind: str, value: str) -> str:
        self.phi.append(value)
        self.types.append(kind)
        return value


def _student_id(rng: random.Random) -> str:
    return rng.choice((f"S-{digits(rng, 7)}", rng.choice("123") + digits(rng, 8),
                       f"{digits(rng, 2)}-{digits(rng, 5)}", f"STU{digits(rng, 6)}", digits(rng, 10)))


def _date(rng: random.Random, d: dt.date) -> str:
    month = MONTHS[d.month - 1]
    return rng.choice((f"{d.month}/{d.day}/{d.year}", f"{d:%Y-%m-%d}", f"{month} {d.day}, {d.year}",
                       f"{d.month}/{d.day}", f"{month[:3]} {d.day}", f"{d:%m/%d/%y}", f"{d.day} {month} {d.year}"))


def _problem(rng: random.Random, name: str, pronoun: str) -> tuple[str, int]:
    template, op = rng.choice(TEMPLATES)
    while True:
        a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(1, 9)
        if op in ("a+b", "a+b-c", "a-b+c", "(a+b)*c"):
            a, b = rng.randint(3, 60), rng.randint(2, 40)
        if op in ("a-b",):
            a, b = rng.randint(10, 90), rng.randint(2, 40)
        answer = OPS[op](a, b, c)
        if answer >= 0 and (op != "a-b" or answer > 0):
            break
    ab = a * b
    text = template.format(n=name, p=pronoun.capitalize(), pos="her" if pronoun == "she" else "his",
                           a=a, b=b, c=c, ab=ab, obj=rng.choice(OBJECTS), cont=rng.choice(CONTAINERS))
    return text, answer


def _one(rng: random.Random) -> dict:
    log = _Log()
    plant = log.plant
    gender = rng.choice(("female", "male"))
    ell = rng.choices(("yes", "no"), (0.3, 0.7))[0]
    school_type = rng.choice(("urban", "rural"))
    first = rng.choice(FIRST_F if gender == "female" else FIRST_M)
    last = rng.choice(SURNAMES)
    pronoun = PRONOUNS[gender][0]
    guardian_first = rng.choice(FIRST_F + FIRST_M + ("Robert", "Linda", "Carmen", "Anthony", "Grace", "Victor"))
    guardian_last = last if rng.random() < 0.7 else rng.choice(SURNAMES)
    school = f"{rng.choice(SCHOOL_NAMES)} {rng.choice(SCHOOL_KINDS)}"
    teacher = f"{rng.choice(('Ms.', 'Mr.', 'Mrs.', 'Dr.', 'Ms', 'Mr'))} {rng.choice(TEACHERS)}"
    tutor = f"{rng.choice(FIRST_F + FIRST_M)} {rng.choice(SURNAMES)}"
    day = dt.date(2019, 8, 15) + dt.timedelta(days=rng.randint(0, 1700))

    lines = [rng.choice(HEADERS) + f" - {plant('DATE', _date(rng, day))}"]
    sid = plant("STUDENT_ID", _student_id(rng))
    style = rng.randrange(4)
    if style == 0:
        lines.append(f"Student: {plant('NAME', f'{first} {last}')} (ID {sid}), grade {rng.randint(2, 8)}")
    elif style == 1:
        lines.append(f"Student name: {plant('NAME', f'{last}, {first}')} | Student ID: {sid}")
    elif style == 2:
        lines.append(f"{plant('NAME', f'{first} {last}')}, district ID {sid}, grade {rng.randint(2, 8)}")
    else:
        lines.append(f"STUDENT: {plant('NAME', f'{first} {last}'.upper())}  ID#: {sid}")
    plant("SCHOOL", school)
    lines.append(rng.choice((f"School: {school}", f"{school}, room {rng.randint(101, 240)}", f"Campus: {school}")))
    plant("NAME", teacher.split(" ", 1)[1])
    plant("NAME", tutor)  # dropped below when the chosen line leaves the tutor out
    lines.append(rng.choice((f"Teacher: {teacher} | Tutor: {tutor}", f"Classroom teacher {teacher}; tutor {tutor}",
                             f"Referred by {teacher}.")))
    guardian = f"{guardian_first} {guardian_last}"
    email = f"{guardian_first[0].lower()}{guardian_last.lower()}{rng.randint(1, 99)}@{rng.choice(EMAIL_DOMAINS)}"
    style = rng.randrange(3)
    if style == 0:
        lines.append(f"Parent/guardian: {plant('NAME', guardian)}, {plant('EMAIL', email)}, "
                     f"{plant('PHONE', phone(rng))}")
    elif style == 1:
        relation = rng.choice(("mother", "father", "aunt", "grandmother", "guardian"))
        lines.append(f"Guardian {plant('NAME', guardian)} ({relation}) "
                     f"- cell {plant('PHONE', phone(rng))}")
    else:
        lines.append(f"Contact {plant('NAME', guardian_first)} at {plant('EMAIL', email)} about progress.")
    if rng.random() < 0.25:
        city, state, zip3 = rng.choice(CITIES)
        street = f"{rng.randint(2, 9899)} {rng.choice(STREETS)} {rng.choice(STREET_SUFFIX)}"
        lines.append(f"Home address: {plant('ADDRESS', street)}, {plant('CITY', city)}, {state} "
                     f"{plant('ZIP', zip3 + digits(rng, 2))}")
    if rng.random() < 0.5:
        lines.append(rng.choice(CONTEXT))
    name = first if rng.random() < 0.6 else rng.choice(("Sam", "Alex", "Jordan", "a student", "Chris", "Pat"))
    problem, answer = _problem(rng, name, pronoun if name == first else rng.choice(("she", "he")))
    lines.append(rng.choice(("Problem: ", "Word problem: ", "Today's problem: ", "Q: ")) + problem)
    lines.append(f"{rng.choice(NOTES)} {rng.choice(('Next session', 'Follow-up', 'Next visit'))}: "
                 f"{plant('DATE', _date(rng, day + dt.timedelta(days=rng.randint(2, 14))))}.")
    if name == first:
        plant("NAME", first)
    text = "\n".join(lines)
    planted = list(dict.fromkeys((k, v) for k, v in zip(log.types, log.phi, strict=True) if v in text))
    return {
        "item_id": f"{rng.randint(10**5, 10**6 - 1)}-{sid}",  # a raw id carrying the student id; renumbered
        "session_text": text,
        "answer": answer,
        "gender": gender,
        "ell": ell,
        "school_type": school_type,
        "phi": [v for _, v in planted],
        "phi_types": [k for k, _ in planted],
    }


def generate(n: int, seed: int) -> list[dict]:
    """`n` synthetic tutoring logs, deterministic for (n, seed)."""
    rng = random.Random(seed)
    return [_one(rng) for _ in range(n)]
