"""`--seeds` text ('0-9999,12,20-25') as a list of seeds: a leaf, so a config is checked without torch."""

from __future__ import annotations

import re

from facebank.errors import InputError

__all__ = ["MAX_SEED", "MAX_SEEDS_PER_RUN", "parse_seeds"]

MAX_SEED = 2**32 - 1  # RandomState accepts seeds in [0, 2**32)
MAX_SEEDS_PER_RUN = 1_000_000  # a run of this many already takes hours; more is a typo or a bomb
# ASCII digits only: str.isdigit and \d also accept other scripts' digits ("٣"), which int() reads.
_RANGE = re.compile(r"^\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?$", re.ASCII)


def parse_seeds(text: str) -> list[int]:
    """'0-9999,12,20-25' -> [0, 1, ..., 9999, 12, 20, ..., 25]; ranges are inclusive, order kept, and a
    seed named twice (overlapping ranges) is kept once, where it first appears."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("seeds must be a non-empty text such as '0-99,120'")
    seeds: list[int] = []
    seen: set[int] = set()
    for part in text.split(","):
        match = _RANGE.match(part)
        if not match:
            raise InputError(f"bad seed range {part.strip()!r} in {text!r}: expected N or A-B with 0 <= A <= B "
                             f"(ASCII digits)")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo or hi > MAX_SEED:
            raise InputError(f"bad seed range {part.strip()!r}: need 0 <= A <= B <= {MAX_SEED}")
        fresh = hi - lo + 1
        if len(seeds) + fresh > MAX_SEEDS_PER_RUN and fresh <= MAX_SEEDS_PER_RUN:  # overlaps count once
            fresh = sum(1 for seed in range(lo, hi + 1) if seed not in seen)
        if len(seeds) + fresh > MAX_SEEDS_PER_RUN:
            raise InputError(f"seeds {text!r} name more than {MAX_SEEDS_PER_RUN} seeds; generate them in "
                             "several runs (each resumes where the bank stands)")
        for seed in range(lo, hi + 1):
            if seed not in seen:
                seen.add(seed)
                seeds.append(seed)
    return seeds
