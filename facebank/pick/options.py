"""The options of a pick, built once from the public keywords and passed down as one object."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["FALLBACKS", "MODES", "PickOptions"]

MODES = ("random", "furthest")
FALLBACKS = ("error", "widen_age")


@dataclass(frozen=True)
class PickOptions:
    """How to pick (see facebank.pick_target): validated by the session that uses them.

    threshold: a cosine, or dict space -> cosine; None: the build's calibrated thresholds.
    mode: "random" or "furthest". rng / key: a numpy Generator, or a key that makes the pick
    reproducible under the session's secret. exclude: face ids never to return.
    fallback: "error" or "widen_age".
    """

    threshold: float | Mapping[str, float] | None = None
    mode: str = "random"
    rng: np.random.Generator | None = None
    key: bytes | str | None = None
    exclude: Iterable[str] = ()
    fallback: str = "error"
