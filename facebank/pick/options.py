"""The options of a pick, built once from the public keywords and passed down as one object."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

__all__ = ["FALLBACKS", "MODES", "Embedding", "Embeddings", "PickOptions", "Threshold"]

MODES = ("random", "furthest")
FALLBACKS = ("error", "widen_age")

# A query embedding: a (d,) vector of the build's only space (or of `space=`), or space -> (d,).
Embedding = Union[np.ndarray, Sequence[float], Mapping[str, Union[np.ndarray, Sequence[float]]]]
# A batch: (B, d) for one space, or space -> (B, d).
Embeddings = Union[np.ndarray, Mapping[str, np.ndarray]]
# A cosine for a single-space query, space -> cosine, or None for the build's calibrated thresholds.
Threshold = Union[float, Mapping[str, float], None]


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

    def check(self) -> PickOptions:
        """Refuse an unknown mode or fallback (one-line InputError) before any work is done."""
        from facebank.errors import InputError

        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.fallback not in FALLBACKS:
            raise InputError(f"fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}")
        return self
