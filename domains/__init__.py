"""Domains: what differs between healthcare and education (see `domains/base.py`)."""

from __future__ import annotations

import importlib

from domains.base import Domain

NAMES = ("healthcare", "education")


def get_domain(name: str) -> Domain:
    if name not in NAMES:
        raise ValueError(f"unknown domain {name!r}; known: {', '.join(NAMES)}")
    return importlib.import_module(f"domains.{name}").DOMAIN
