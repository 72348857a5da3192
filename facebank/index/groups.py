"""Age and gender groups: the documented ranges a target is picked from, and their integer codes.

Age groups, in years, each the half-open range [lower, next lower):

    index  label   ages
    0      0-12    0 <= age < 13
    1      13-19   13 <= age < 20
    2      20-29   20 <= age < 30
    3      30-39   30 <= age < 40
    4      40-49   40 <= age < 50
    5      50-59   50 <= age < 60
    6      60+     60 <= age

Genders: index 0 "female", index 1 "male" (spellings as in facebank.labels: f, w, woman, m, man, any case).

A group code is `age_index * 2 + gender_index` (0..13), stored as int16 next to the vectors.
`widen_age` gives the order in which neighbouring age groups are tried when a group has no
eligible target (the "widen_age" fallback policy): nearest first, the younger one first on a tie.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from facebank import labels
from facebank.errors import InputError

__all__ = [
    "AGE_GROUPS",
    "GENDERS",
    "N_GROUPS",
    "age_group",
    "decode_group",
    "gender_name",
    "group_code",
    "group_codes",
    "group_label",
    "group_plan",
    "PlanStep",
    "widen_age",
    "widen_age_codes",
]

AGE_GROUPS: tuple[str, ...] = labels.AGE_GROUPS
GENDERS: tuple[str, ...] = labels.GENDERS
# What a pick does when the face's own age group has no eligible target (facebank.pick.options).
FALLBACKS: tuple[str, ...] = ("error", "widen_age")
N_GROUPS = len(AGE_GROUPS) * len(GENDERS)

# Lower bounds of age groups 1..6; searchsorted(side="right") maps an age to its group index.
_AGE_EDGES = np.array(labels.AGE_EDGES)
_AGE_INDEX = {label: i for i, label in enumerate(AGE_GROUPS)}
age_group = labels.age_group  # one parser: facebank.labels


def _gender_index(gender: str) -> int:
    return labels.gender_code(gender, strict=True)


def _age_group_index(label: str) -> int:
    if label not in _AGE_INDEX:
        raise InputError(f"age group must be one of {list(AGE_GROUPS)}, got {label!r}")
    return _AGE_INDEX[label]


def gender_name(gender: str) -> str:
    """The canonical gender ("female" or "male") for any accepted spelling."""
    return GENDERS[_gender_index(gender)]


def group_code(age_group: str, gender: str) -> int:
    """The integer code (0..13) of an age-group label and a gender."""
    return _age_group_index(age_group) * len(GENDERS) + _gender_index(gender)


def decode_group(code: int) -> tuple[str, str]:
    """(age-group label, gender) of a group code."""
    if isinstance(code, bool) or not isinstance(code, (int, np.integer)) or not 0 <= code < N_GROUPS:
        raise InputError(f"group code must be an int in [0, {N_GROUPS}), got {code!r}")
    return AGE_GROUPS[int(code) // len(GENDERS)], GENDERS[int(code) % len(GENDERS)]


def group_label(code: int) -> str:
    """A readable name of a group code, e.g. "30-39/female"."""
    age, gender = decode_group(code)
    return f"{age}/{gender}"


def group_codes(ages: Sequence[float] | np.ndarray, genders: Sequence[str] | np.ndarray) -> np.ndarray:
    """Group codes of many faces at once.

    Args:
        ages: (n,) ages in years, finite and >= 0.
        genders: (n,) gender strings, any accepted spelling.
    Returns:
        int16 (n,) group codes.
    """
    a = np.asarray(ages)
    g = np.asarray(genders)
    if a.ndim != 1 or g.ndim != 1 or a.shape != g.shape:
        raise InputError(f"ages and genders must be 1-D of the same length, got {a.shape} and {g.shape}")
    try:
        a = a.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError("ages must be numbers of years") from exc
    bad = np.flatnonzero(~np.isfinite(a) | (a < 0))
    if bad.size:
        raise InputError(f"age must be finite and >= 0, got {a[bad[0]]!r} at index {bad[0]}")
    age_idx = np.searchsorted(_AGE_EDGES, a, side="right")
    # Map the few distinct spellings once instead of every element.
    uniq, inverse = np.unique(g.astype(object), return_inverse=True)
    gender_idx = np.array([_gender_index(u) for u in uniq], dtype=np.int64)[inverse.reshape(-1)]
    return (age_idx * len(GENDERS) + gender_idx).astype(np.int16)


def widen_age(age_group: str) -> tuple[str, ...]:
    """The other age groups in the order the "widen_age" fallback tries them.

    Nearest first; on a tie the younger group comes first. The group itself is not included.
    For "30-39": ("20-29", "40-49", "13-19", "50-59", "0-12", "60+").
    """
    i = _age_group_index(age_group)
    order = sorted((j for j in range(len(AGE_GROUPS)) if j != i), key=lambda j: (abs(j - i), j))
    return tuple(AGE_GROUPS[j] for j in order)


def widen_age_codes(code: int) -> tuple[int, ...]:
    """Group codes of the same gender in `widen_age` order (the group itself not included)."""
    age, gender = decode_group(code)
    return tuple(group_code(a, gender) for a in widen_age(age))


class PlanStep(NamedTuple):
    """One step of a pick's group plan: the group codes to pick from (None: every group) and its label."""

    codes: tuple[int, ...] | None  # a tuple: the picker caches the rows of a code set by it
    label: str


def group_plan(first: str | None, gender: str | None, fallback: str) -> tuple[PlanStep, ...]:
    """The groups a pick tries, in order: the face's age group (or every one) and gender (or both),
    then, with the "widen_age" fallback, the neighbouring age groups in `widen_age` order.

    Args:
        first: the face's age-group label, or None for any age.
        gender: a canonical gender name, or None for either.
        fallback: one of FALLBACKS (validated by PickOptions).
    """
    genders = [gender] if gender is not None else list(GENDERS)
    if first is None:
        if gender is None:
            return (PlanStep(None, "any"),)
        return (PlanStep(tuple(group_code(a, gender) for a in AGE_GROUPS), f"any/{gender}"),)
    ages = [first] + (list(widen_age(first)) if fallback == "widen_age" else [])
    return tuple(PlanStep(tuple(group_code(a, g) for g in genders), f"{a}/{gender or 'any'}") for a in ages)
