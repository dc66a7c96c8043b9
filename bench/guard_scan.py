"""Leak-guard scan speed: `tasks.guard` lookups vs a search per identifier, one run.

    python bench/guard_scan.py                  # 10,000 healthcare notes
    python bench/guard_scan.py --n 2000 --baseline-texts 100

Identifiers: the generator's planted `phi` of N synthetic notes (the analyzer is left out: its
cost is deidentify's, see bench/deid.py). Texts: the same notes with every identifier replaced
(a clean de-identified output; the usual case), scanned with their record ids.
  guard     `Identifiers` + `Scanner.text` (word n-gram and digit-run set lookups);
  baseline  what a first version would do: for each text, a case-insensitive whole-word regex
            search for every identifier in scope (its record's own and every anywhere-scoped one),
            on the first `--baseline-texts` texts, extrapolated per text.
Both must agree on those texts (no leaks); the script prints texts/s and the ratio.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domains import get_domain
from tasks import guard
from tasks.params import Guard


def clean(row: dict) -> str:
    text = row["note"]
    for value in sorted(row["phi"], key=len, reverse=True):
        text = text.replace(value, "<PHI>")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--domain", default="healthcare")
    parser.add_argument("--baseline-texts", type=int, default=50)
    args = parser.parse_args()

    rows = get_domain(args.domain).generate(args.n, 0)
    texts = [clean(row) for row in rows]
    started = time.perf_counter()
    ids = guard.Identifiers(Guard())
    for n, row in enumerate(rows):
        for entity, value in zip(row["phi_types"], row["phi"], strict=True):
            ids.add(value, entity, "planted", f"r{n}")
    index_s = time.perf_counter() - started

    scanner = guard.Scanner(ids)
    started = time.perf_counter()
    found = sum(len(scanner.text(text, f"r{n}")) for n, text in enumerate(texts))
    guard_s = time.perf_counter() - started

    anywhere = {e.anywhere.value for table in (ids.text, ids.digits) for e in table.values() if e.anywhere}
    own = [{v for _, v in zip(row["phi_types"], row["phi"])} for row in rows]
    sample = texts[:args.baseline_texts]
    started = time.perf_counter()
    naive = 0
    for n, text in enumerate(sample):
        for value in anywhere | own[n]:
            naive += bool(re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, re.IGNORECASE))
    baseline_s = (time.perf_counter() - started) / len(sample) * len(texts)

    guard_found = sum(len(scanner.text(text, f"r{n}")) for n, text in enumerate(sample))
    print(f"{args.n} {args.domain} notes, {len(ids)} identifiers indexed in {index_s:.2f} s "
          f"({len(anywhere)} matched anywhere)")
    print(f"guard     {guard_s:8.2f} s  {len(texts) / guard_s:10.0f} texts/s  leaks found: {found}")
    print(f"baseline  {baseline_s:8.2f} s  {len(texts) / baseline_s:10.0f} texts/s  "
          f"(from {len(sample)} texts; leaks there: baseline {naive}, guard {guard_found})")
    print(f"ratio     {baseline_s / guard_s:8.0f}x")


if __name__ == "__main__":
    main()
