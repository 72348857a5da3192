"""Exact binomial statistics for false-accept rates counted on impostor pairs.

A threshold's achieved FAR is a count k of impostor pairs above it out of n. Its uncertainty is
given by the Clopper-Pearson interval (the exact binomial interval, from beta quantiles), which
never covers less than its nominal level, unlike the normal approximation at small k.

Caveat, stated in every report: the n pairs come from far fewer faces (871 faces give 377,514
pairs), and pairs sharing a face are correlated; the interval treats them as independent, so it
is narrower than one that accounted for faces would be.
"""

from __future__ import annotations

import math

from scipy.stats import beta

from facebank.errors import InputError

__all__ = ["CONFIDENCE", "MIN_ABOVE", "clopper_pearson", "conservative_count", "largest_count_at_most",
           "privacy_count"]

CONFIDENCE = 0.95
# A measured rate rests on at least this many events: with k >= 30 the 95% interval spans about
# k +/- 2 sqrt(k), i.e. within about +/-36% of the rate; with k = 1 it spans 0.025k .. 5.6k.
MIN_ABOVE = 30


def _check(k: int, n: int) -> None:
    if n < 1 or not 0 <= k <= n:
        raise InputError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided exact interval on a binomial rate: (lower, upper) for k successes of n trials.

    lower = Beta(a/2; k, n-k+1) (0 when k = 0), upper = Beta(1-a/2; k+1, n-k) (1 when k = n),
    with a = 1 - confidence.
    """
    _check(k, n)
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def largest_count_at_most(n: int, far: float) -> int:
    """The largest k with k / n <= far, computed exactly as the rate is (floating point k / n)."""
    k = int(math.floor(far * n))
    while k + 1 <= n and (k + 1) / n <= far:
        k += 1
    while k > 0 and k / n > far:
        k -= 1
    return k


def conservative_count(n: int, far: float, confidence: float = CONFIDENCE) -> int | None:
    """The largest k whose Clopper-Pearson upper bound is <= far, or None when even k = 0 is above.

    The upper bound grows with k, so a binary search over 0..floor(far * n) finds it.
    """
    if clopper_pearson(0, n, confidence)[1] > far:
        return None
    lo, hi = 0, largest_count_at_most(n, far)  # invariant: upper(lo) <= far
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if clopper_pearson(mid, n, confidence)[1] <= far:
            lo = mid
        else:
            hi = mid - 1
    return lo


def privacy_count(n: int, far: float, confidence: float = CONFIDENCE) -> int | None:
    """The smallest k whose Clopper-Pearson lower bound is >= far, or None when even k = n is below.

    The threshold that lets k impostor pairs above it then lies, at 95%, at or below the score
    at which a recogniser run at `far` starts accepting: every target under it is one such a
    recogniser rejects. The lower bound grows with k, so a binary search finds it.
    """
    if clopper_pearson(n, n, confidence)[0] < far:
        return None
    lo, hi = largest_count_at_most(n, far), n  # invariant: lower(hi) >= far
    while lo < hi:
        mid = (lo + hi) // 2
        if clopper_pearson(mid, n, confidence)[0] >= far:
            hi = mid
        else:
            lo = mid + 1
    return hi
