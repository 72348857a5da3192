"""Brute-force exact cosines for the tests: the documented definition (docs/guarantee.md, "What
exact means"), computed with Python integers and fractions, with no error bound and no shortcut.

cos(q, v) = q.v / (|q| |v|) for the query as given and the row as stored. Its signed square
sign(q.v) (q.v)^2 / (|q|^2 |v|^2) is a rational number and strictly increasing in the cosine, so
`cos <= t` is `key(q, v) <= sign(t) t^2`, decided exactly with fractions.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = ["ExactSims", "brute_cosines", "cos_key", "exact_cos", "exact_le", "key_of"]


def _fractions(a: np.ndarray) -> list[Fraction]:
    return [Fraction(x) for x in np.asarray(a).ravel().tolist()]  # Python ints or floats: exact


def _ints(a: np.ndarray) -> tuple[list[int], int]:
    """Integers and a common denominator exponent: a_i = n_i / 2^k (exact for any float up to 64 bits)."""
    fr = _fractions(a)
    k = max((f.denominator.bit_length() - 1 for f in fr), default=0)
    return [f.numerator * ((1 << k) // f.denominator) for f in fr], k


def cos_key(q: np.ndarray, v: np.ndarray) -> Fraction:
    """sign(cos) cos^2 of q and v, exactly."""
    qi, _ = _ints(q)
    vi, _ = _ints(v)
    dot = sum(a * b for a, b in zip(qi, vi))
    p = sum(a * a for a in qi) * sum(b * b for b in vi)
    return Fraction(dot * abs(dot), p)


def key_of(t: float) -> Fraction:
    f = Fraction(float(t))
    return f * abs(f)


def exact_le(q: np.ndarray, v: np.ndarray, t: float) -> bool:
    return cos_key(q, v) <= key_of(t)


def exact_cos(q: np.ndarray, v: np.ndarray) -> float:
    """The exact cosine, within an ulp (the correctly rounded square root of a correctly rounded key)."""
    k = cos_key(q, v)
    return math.copysign(math.sqrt(float(abs(k))), float(k))


class ExactSims(np.ndarray):
    """float64 (n,) cosines within an ulp, carrying the exact keys: `le(t)` is the exact `cos <= t`."""

    keys: list[Fraction]

    def le(self, t: float) -> np.ndarray:
        kt = key_of(t)
        return np.array([k <= kt for k in self.keys], bool)

    def ceil(self, j: int) -> float:
        """The smallest double at or above row j's exact cosine: the threshold that keeps the row
        while one ulp less drops it."""
        k, t = self.keys[j], float(self[j])
        while key_of(t) < k:
            t = math.nextafter(t, math.inf)
        while key_of(math.nextafter(t, -math.inf)) >= k:
            t = math.nextafter(t, -math.inf)
        return t


def brute_cosines(rows: np.ndarray, q: np.ndarray) -> ExactSims:
    """ExactSims of every row (float32 / float16 (n, d)) to one query (d,) as given. Rows are
    scaled to integers once (float32 and float16 values are multiples of 2^-149)."""
    qi, _ = _ints(q)
    qq = sum(a * a for a in qi)
    big = [[int(x) for x in r] for r in (np.asarray(rows, dtype=np.float64) * 2.0**149).tolist()]
    keys = []
    for vi in big:
        dot = sum(a * b for a, b in zip(qi, vi))
        keys.append(Fraction(dot * abs(dot), qq * sum(b * b for b in vi)) if any(vi) else Fraction(10**30))  # a zero row: never eligible
    out = np.array([math.copysign(math.sqrt(float(abs(k))), float(k)) for k in keys]).view(ExactSims)
    out.keys = keys
    return out
