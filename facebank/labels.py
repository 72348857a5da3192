"""Age and gender labels: the one parser of gender spellings and of a source's age/gender metadata.

A leaf (it imports only `errors`), so the bank, the sources, ingest, the index and the picker all
read labels the same way:

- ages fall in the age groups AGE_GROUPS (`age_group`; a query's age must be finite and >= 0);
- genders are "female" (code 0) or "male" (code 1); accepted spellings, any case and surrounding
  spaces: f, female, w, woman / m, male, man;
- `gender_code(value, strict=False)` is for stored metadata: anything else (empty, unknown) is -1;
- `gender_code(value, strict=True)` is for queries: anything else is an InputError;
- a source's metadata may carry an age *category* ("infant", "young-adult", ...) with its year
  range, and a gender label: `metadata_attributes` turns them into the attributes ingest combines
  with the model's estimate (facebank/bank/SCHEMA.md, "Age and gender").
"""

from __future__ import annotations

import bisect
import math

from facebank.errors import InputError

__all__ = ["AGE_CATEGORIES", "AGE_EDGES", "AGE_GROUPS", "GENDERS", "GENDER_UNKNOWN", "age_group", "age_group_index",
           "check_age", "gender_code", "gender_name", "metadata_attributes"]

GENDERS: tuple[str, ...] = ("female", "male")
GENDER_UNKNOWN = -1
_GENDER_ALIASES = {"f": 0, "female": 0, "w": 0, "woman": 0, "m": 1, "male": 1, "man": 1}

# Age groups a target is picked from (facebank.index.groups documents them), each the half-open
# range [lower, next lower); AGE_EDGES are the lower bounds of groups 1..6.
AGE_GROUPS: tuple[str, ...] = ("0-12", "13-19", "20-29", "30-39", "40-49", "50-59", "60+")
AGE_EDGES: tuple[float, ...] = (13.0, 20.0, 30.0, 40.0, 50.0, 60.0)

# Age categories in years [low, high) that sources label faces with (generated.photos'
# categories); the model's estimate is kept inside them.
AGE_CATEGORIES: dict[str, tuple[float, float]] = {
    "infant": (0.0, 3.0),
    "child": (3.0, 13.0),
    "young-adult": (16.0, 36.0),
    "adult": (30.0, 60.0),
    "elderly": (60.0, 100.0),
}


def gender_code(value, *, strict: bool = False) -> int:
    """0 (female) or 1 (male) for any accepted spelling; otherwise -1, or InputError when `strict`."""
    key = value.strip().lower() if isinstance(value, str) else None
    code = _GENDER_ALIASES.get(key, GENDER_UNKNOWN)
    if code == GENDER_UNKNOWN and strict:
        raise InputError(f"gender must be one of {sorted(_GENDER_ALIASES)}, got {value!r}")
    return code


def gender_name(code: int) -> str:
    """"female", "male" or "unknown" for a stored gender code."""
    return GENDERS[code] if code in (0, 1) else "unknown"


def check_age(age) -> float:
    """A query's age in years as a float: finite and >= 0, else InputError (True is not an age)."""
    if type(age).__name__ in ("bool", "bool_"):  # Python's or numpy's bool: float(True) would be age 1
        raise InputError(f"age must be a number of years, got {type(age).__name__} {age!r}")
    try:
        a = float(age)
    except (TypeError, ValueError) as exc:
        raise InputError(f"age must be a number of years, got {age!r}") from exc
    if not math.isfinite(a) or a < 0:
        raise InputError(f"age must be finite and >= 0, got {age!r}")
    return a


def age_group_index(age) -> int:
    """Index into AGE_GROUPS of an age in years (InputError unless finite and >= 0)."""
    return bisect.bisect_right(AGE_EDGES, check_age(age))


def age_group(age) -> str:
    """The label of the age group an age in years falls in ("0-12" ... "60+")."""
    return AGE_GROUPS[age_group_index(age)]


def metadata_attributes(meta: dict) -> dict:
    """Age category, its year range and gender from a source's metadata (empty when absent)."""
    out: dict = {}
    age = str(meta.get("age", "")).strip().lower()
    if age in AGE_CATEGORIES:
        out["age_category"] = age
        out["age_range"] = AGE_CATEGORIES[age]
    gender = str(meta.get("gender", "")).strip().lower()
    if gender in GENDERS:
        out["gender"] = gender
    return out
