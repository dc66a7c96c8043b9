"""Presidio recognizers for FERPA personally identifiable information in tutoring records.

FERPA (34 CFR 99.3) counts as PII the student's and parents' names, addresses, personal
identifiers such as student numbers, and indirect identifiers (date of birth, school).
Presidio's predefined recognizers find persons, emails, phones, dates and places; the
patterns here add student ids, school names ("X Elementary School", "Y Academy"), titled
staff ("Ms. Ortiz") and people named after their role ("Guardian Carmen Ruiz"). The
pattern helpers are shared with the healthcare domain.
"""

from __future__ import annotations

from presidio_analyzer import EntityRecognizer, Pattern

from domains.healthcare.addresses import addresses
from domains.healthcare.recognizers import (
    AnchoredRecognizer,
    city_state_zip,
    clinical_dates,
    labeled,
    organizations,
    role_person,
    street_addresses,
    titled_person,
)

ENTITIES = (
    "PERSON", "DATE_TIME", "PHONE_NUMBER", "EMAIL_ADDRESS", "URL", "IP_ADDRESS", "LOCATION",
    "STREET_ADDRESS", "ZIP_CODE", "SCHOOL", "STUDENT_ID", "US_SSN",
)

# Words of the trade that spaCy's small model may take for names or organizations.
ALLOW = frozenset(w.lower() for w in """
IEP ELL ESL ESOL IDEA RTI MTSS Tier Title PE ELA STEM SAT ACT PSAT GPA K-8 Q Problem Student Tutor Teacher
Guardian Parent Campus School Grade Unit Warm-up Makeup Follow-up
""".split())


def recognizers() -> list[EntityRecognizer]:
    """Education recognizers added to Presidio's predefined ones (see `ENTITIES`)."""
    student_id = r"(?:[A-Z]{1,3}-?\d{5,10}|\d{2}-\d{4,6}|\d{6,10})\b"
    return [
        labeled("STUDENT_ID", "StudentIdRecognizer",
                r"student|stu|district|state|LASID|SASID|ID|pupil|learner|ID#", student_id, 0.85,
                context=["student", "id", "district"]),
        AnchoredRecognizer(supported_entity="STUDENT_ID", name="StudentIdShapeRecognizer", patterns=[
            Pattern("S-1234567", r"(?-i:\b(?:S|STU)-?\d{6,9}\b)", 0.7),
            Pattern("9-digit district id (weak)", r"\b\d{9,10}\b", 0.2),
        ], context=["student", "id", "district", "lasid"]),
        organizations("SCHOOL", ("Elementary School", "Elementary", "Middle School", "High School", "Academy",
                                 "Charter School", "K-8 School", "Intermediate School", "Junior High",
                                 "Primary School", "Preparatory School", "Prep", "School"), "SchoolRecognizer"),
        titled_person(("Dr", "Mr", "Mrs", "Ms", "Miss", "Mx", "Prof", "Coach")),
        role_person(r"student|student\sname|tutor|teacher|guardian|parent|parent/guardian|mother|father|aunt|"
                    r"uncle|grandmother|grandfather|contact|name|referred\sby|case\smanager|STUDENT"),
        labeled("PHONE_NUMBER", "LabeledPhoneRecognizer", r"ph|phone|tel|cell|mobile|home|work|text|call|at",
                r"(?:\+1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}\b", 0.75),
        AnchoredRecognizer(supported_entity="PHONE_NUMBER", name="UsPhoneShapeRecognizer", patterns=[
            Pattern("(617) 284-3310 / 617-284-3310", r"(?<![\d-])(?:\+1[\s.-]?)?\(\d{3}\)\s?\d{3}-\d{4}\b|"
                    r"(?<![\d/-])\d{3}([.-])\d{3}\1\d{4}\b", 0.6)]),
        clinical_dates(),
        street_addresses(),
        *city_state_zip(),
        *addresses(),
    ]
