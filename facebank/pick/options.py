"""The options of a pick, built once from the public keywords and passed down as one object."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import math

import numpy as np

__all__ = ["FALLBACKS", "MODES", "Embedding", "Embeddings", "PickOptions", "QueryFace", "Threshold", "check_threshold"]

from facebank.index.groups import FALLBACKS
from facebank.index.picker import MODES

# A query embedding: a (d,) vector of the build's only space (or of `space=`), or space -> (d,).
Embedding = Union[np.ndarray, Sequence[float], Mapping[str, Union[np.ndarray, Sequence[float]]]]
# A batch: (B, d) for one space, or space -> (B, d).
Embeddings = Union[np.ndarray, Mapping[str, np.ndarray]]
# A cosine for a single-space query, space -> cosine, or None for the build's calibrated thresholds.
Threshold = Union[float, Mapping[str, float], None]


@dataclass(frozen=True)
class PickOptions:
    """How to pick (see facebank.pick_target), validated once, here.

    threshold: a cosine, or dict space -> cosine; None: the build's calibrated thresholds. A
    threshold looser (higher) than the build's needs allow_looser=True, and the target says so.
    mode: "random" or "furthest". rng / key: a numpy Generator, or a key that makes the pick
    reproducible under the session's secret. exclude: face ids never to return.
    fallback: "error" or "widen_age".
    margin: draw only among the furthest `margin` fraction of the candidates (0 < margin <= 1,
    facebank.index.margin); None: the build's default margin; 1: every eligible face.
    """

    threshold: float | Mapping[str, float] | None = None
    mode: str = "random"
    rng: np.random.Generator | None = None
    key: bytes | str | None = None
    exclude: Iterable[str] = ()
    fallback: str = "error"
    margin: float | None = None
    allow_looser: bool = False

    def __post_init__(self):
        from facebank.errors import InputError
        from facebank.index.margin import check_margin

        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not isinstance(self.fallback, str) or self.fallback not in FALLBACKS:
            raise InputError(f"fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}")
        if self.margin is not None:
            object.__setattr__(self, "margin", check_margin(self.margin))
        if isinstance(self.threshold, Mapping):  # each value a cosine; the spaces are the session's to check
            object.__setattr__(self, "threshold", {s: check_threshold(v, s) for s, v in self.threshold.items()})
        elif self.threshold is not None:
            object.__setattr__(self, "threshold", check_threshold(self.threshold, None))
        if not isinstance(self.allow_looser, bool):
            raise InputError(f"allow_looser must be True or False, got {self.allow_looser!r}")


def check_threshold(value, space: str | None) -> float:
    """A cosine threshold, finite and in [-1, 1] (the same rule as the CLI and index builds);
    `space` names it in the error (None: a single threshold for a single-space query)."""
    from facebank.errors import InputError

    name = "threshold" if space is None else f"threshold for {space!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number (a cosine in [-1, 1]), got {value!r}")
    t = float(value)
    if not (math.isfinite(t) and -1.0 <= t <= 1.0):
        raise InputError(f"{name} must be a cosine in [-1, 1], got {value!r}")
    return t


_FACE_KEYS = ("embedding", "space", "age", "gender")


@dataclass(frozen=True)
class QueryFace:
    """One real face to pick a target for: its embedding ((d,) of `space`, or space -> (d,)) and,
    optionally, the age and gender its target should match."""

    embedding: Embedding
    space: str | None = None
    age: float | None = None
    gender: str | None = None

    @classmethod
    def of(cls, face, i: int = 0) -> QueryFace:
        """A QueryFace from a QueryFace or a mapping with the same keys; an unknown key (a typo, or
        insightface's `sex`) is an error, never silently dropped with the constraint it meant."""
        from facebank.errors import InputError

        if isinstance(face, QueryFace):
            return face
        if not isinstance(face, Mapping) or "embedding" not in face:
            raise InputError(f"face {i} must be a mapping with an 'embedding', got {type(face).__name__}"
                             + (f" with keys {sorted(map(str, face))}" if isinstance(face, Mapping) else ""))
        unknown = sorted(str(k) for k in face if k not in _FACE_KEYS)
        if unknown:
            raise InputError(f"face {i}: unknown key(s) {', '.join(map(repr, unknown))}; a face takes "
                             f"{', '.join(_FACE_KEYS)}")
        return cls(face["embedding"], face.get("space"), face.get("age"), face.get("gender"))
