"""The build manifest (`index_builds/<build>/manifest.json`): what a build is and what it binds to.

Documented in MANIFEST.md beside this file. `read_manifest` returns a frozen `BuildManifest`; it
refuses other kinds and unknown versions, and a manifest whose fields have the wrong shape or type
(each refusal names the field), so a damaged manifest is an IndexBuildError, never a KeyError deep
inside a pick. Keys this version does not know are kept as read (`extra`), and `to_dict()` gives
back the JSON that was read, so a build's `content_id` and `index info --json` see every field.

Adding an optional field: one line in its type (`name: T | None = None`) and one `_opt(...)` (plus
any range check) in its `_parse_*` function; `to_dict` needs nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from facebank._io.checksum import FAST
from facebank.errors import IndexBuildError

__all__ = ["BankRef", "BuildManifest", "IndexSpec", "MarginSpec", "SpaceEntry", "check_content_id", "content_id",
           "read_manifest"]

KIND = "facebank.index_build"
FORMAT_VERSION = 2  # 2: an XXH3-128 checksum (`xxh3_128`) beside every sha256
READABLE_VERSIONS = (1, 2)  # a version-1 build is checked with its sha256s
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen(value):
    """A JSON value made read-only: objects as mappings, arrays as tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value):
    """The JSON value back (the inverse of `_frozen`; records by their `to_dict`)."""
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thawed(v) for v in value]
    return value


@dataclass(frozen=True)
class _Record:
    """One JSON object of the manifest: its documented keys as typed fields, any other key as read
    (`extra`), and the keys in the order read (`keys`: absent and null stay apart in `to_dict`)."""

    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, kw_only=True, repr=False)
    keys: tuple[str, ...] = field(default=(), kw_only=True, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The JSON object (as read, when read from a file; else the fields that are set, then `extra`)."""
        known = [f.name for f in fields(self) if f.name not in ("extra", "keys")]
        order = self.keys or (*(k for k in known if getattr(self, k) is not None), *self.extra)
        return {k: _thawed(self.extra[k] if k not in known else getattr(self, k)) for k in order}


def _rest(data: dict, cls) -> dict:
    """The `extra` and `keys` of a record read from `data`."""
    known = {f.name for f in fields(cls)} - {"extra", "keys"}
    return {"extra": _frozen({k: v for k, v in data.items() if k not in known}), "keys": tuple(data)}


@dataclass(frozen=True)
class BankRef(_Record):
    """The bank a build was made from (`bank`)."""

    path: str  # absolute path when built
    content_hash: str  # the bank's content hash: a session refuses a bank that no longer has it
    faces: int | None = None
    writer: str | None = None


@dataclass(frozen=True)
class IndexSpec(_Record):
    """A space's FAISS index (`spaces.<s>.index`)."""

    type: str  # flat, ivf or hnsw
    faiss_class: str | None = None
    params: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SpaceEntry(_Record):
    """One identity space of the build (`spaces.<s>`)."""

    dim: int
    threshold: float  # cosine; similarity <= threshold is dissimilar enough (an int when JSON has one)
    index: IndexSpec
    files: Mapping[str, str]  # file name -> sha256
    xxh3_128: Mapping[str, str] | None = None  # the same files -> XXH3-128 (version 2)
    model: str | None = None
    model_sha256: str | None = None
    threshold_source: str | None = None
    threshold_calibration: Mapping[str, Any] | None = None  # FAR, counts, interval, data (None: given)
    threshold_allowed_looser: bool | None = None  # the operator chose a threshold above the calibrated one
    norms: Mapping[str, float] | None = None  # {"min", "max"} row norm (index.exact's screen bound; None: older build)

    @property
    def calibrated_threshold(self) -> float | None:
        """The threshold of the calibration record, when it has a finite number for one."""
        t = (self.threshold_calibration or _EMPTY).get("threshold")
        ok = isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
        return float(t) if ok else None

    @property
    def calibration_far(self):
        """The FAR the threshold was calibrated at (None: a given threshold)."""
        return (self.threshold_calibration or _EMPTY).get("far")


@dataclass(frozen=True)
class MarginSpec(_Record):
    """The privacy margin picks use by default (`margin`; facebank/index/margin.py)."""

    default: float  # fraction in (0, 1]
    score: str | None = None
    sample: int | None = None


@dataclass(frozen=True)
class BuildManifest(_Record):
    """A build's manifest.json, checked (MANIFEST.md). Read it with `read_manifest`."""

    kind: str
    format_version: int
    build_id: str
    bank: BankRef
    rows: int  # faces in the build
    files: Mapping[str, str]  # rows.npy, ids.npy, groups.npy -> sha256
    spaces: Mapping[str, SpaceEntry]
    xxh3_128: Mapping[str, str] | None = None  # version 2
    margin: MarginSpec | None = None  # None: a build made before margins (picks use 1)
    content_id: str | None = None  # None: a build made before content ids
    created: str | None = None
    build_seconds: float | None = None
    excluded: Mapping[str, int] | None = None  # reason -> bank faces left out
    groups: Mapping[str, int] | None = None  # group label -> faces
    age_groups: tuple[str, ...] | None = None
    versions: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str | os.PathLike = "manifest") -> BuildManifest:
        """The manifest in `data` (parsed JSON), checked; IndexBuildError naming the first bad field."""
        return _parse_manifest(data, where)

    @property
    def thresholds(self) -> dict[str, float]:
        return {s: float(e.threshold) for s, e in self.spaces.items()}

    @property
    def default_margin(self) -> float:
        return 1.0 if self.margin is None else float(self.margin.default)

    @property
    def fast(self) -> bool:
        """Version 2: every file has an XXH3-128 too, which a session checks."""
        return self.format_version >= 2


def read_manifest(build_dir: str | os.PathLike) -> BuildManifest:
    path = Path(build_dir) / "manifest.json"
    if not path.is_file():
        raise IndexBuildError(f"{build_dir} is not an index build (no manifest.json)")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # ValueError: also a >4300-digit int
        raise IndexBuildError(f"{path} is not valid JSON ({str(exc)[:120]})") from exc
    except OSError as exc:
        raise IndexBuildError(f"{path} cannot be read ({exc.strerror or exc})") from exc
    return _parse_manifest(data, path)


def check_content_id(m: BuildManifest, where) -> str | None:
    """The manifest's content_id after checking it matches the manifest (None for builds made before it)."""
    if m.content_id is None:
        return None
    try:
        ok = m.content_id == content_id(m)
    except ValueError:  # NaN or infinity somewhere
        ok = False
    if not ok:
        raise IndexBuildError(f"{where}: manifest.json does not match its content_id (edited or damaged): "
                              f"rebuild the index")
    return m.content_id


def content_id(m: BuildManifest | dict) -> str:
    """The build's content id: sha256 of its manifest (every file checksum, threshold, the bank's content
    hash) without the `content_id` field itself, as sorted compact JSON. A pipeline pins it
    (`facebank.index.verify.check_build_id`); `index verify` refuses a manifest that does not match it."""
    data = m.to_dict() if isinstance(m, BuildManifest) else m
    body = json.dumps({k: v for k, v in data.items() if k != "content_id"}, sort_keys=True, separators=(",", ":"),
                      allow_nan=False, default=str)
    return hashlib.sha256(b"facebank-build-v1\0" + body.encode("utf-8", "surrogatepass")).hexdigest()


# -- reading and checking --
def _field(data: dict, key: str, kind, path, where: str = ""):
    value = data.get(key) if isinstance(data, dict) else None
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if not ok:
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise IndexBuildError(f"{path}: field {where}{key} must be a {want}, got {type(value).__name__}")
    return value


def _opt(data: dict, key: str, kind, path, where: str = ""):
    """An optional field: None when absent or null, else it must be a `kind`."""
    return None if data.get(key) is None else _field(data, key, kind, path, where)


def _counts(data: dict, key: str, path) -> Mapping[str, int] | None:
    counts = _opt(data, key, dict, path)
    if counts is not None and not all(isinstance(n, int) and not isinstance(n, bool) for n in counts.values()):
        raise IndexBuildError(f"{path}: field {key} must map names to counts")
    return None if counts is None else MappingProxyType(dict(counts))


def _files(data: dict, path, where: str, fast: bool) -> dict:
    files = _field(data, "files", dict, path, where)
    for name, digest in files.items():
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise IndexBuildError(f"{path}: field {where}files has an unsafe file name {name!r}")
        if not isinstance(digest, str) or len(digest) != 64:
            raise IndexBuildError(f"{path}: field {where}files[{name!r}] must be a sha256 hex string")
    out = {"files": MappingProxyType(dict(files))}
    if fast:  # version 2: the same files, each with its XXH3-128 too
        quick = _field(data, FAST, dict, path, where)
        if set(quick) != set(files):
            raise IndexBuildError(f"{path}: field {where}{FAST} must list the same files as {where}files")
        for name, digest in quick.items():
            if not isinstance(digest, str) or len(digest) != 32:
                raise IndexBuildError(f"{path}: field {where}{FAST}[{name!r}] must be a 32-digit hex string")
        out[FAST] = MappingProxyType(dict(quick))
    elif data.get(FAST) is not None:  # version 1 with checksums it does not use: kept as read
        out[FAST] = _frozen(_field(data, FAST, dict, path, where))
    return out


def _parse_manifest(data: Any, path) -> BuildManifest:
    if not isinstance(data, dict):
        raise IndexBuildError(f"{path} is not a facebank index build manifest (a JSON {type(data).__name__})")
    if data.get("kind") != KIND:
        raise IndexBuildError(f"{path} is not a facebank index build manifest (kind {data.get('kind')!r})")
    version = data.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise IndexBuildError(
            f"{path} has manifest format version {version!r}; this facebank reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    build_id = _field(data, "build_id", str, path)
    bank = _parse_bank(_field(data, "bank", dict, path), path)
    rows = _field(data, "rows", int, path)
    if rows < 0:
        raise IndexBuildError(f"{path}: field rows must be >= 0")
    fast = version >= 2
    files = _files(data, path, "", fast)
    for name in ("rows.npy", "ids.npy", "groups.npy"):
        if name not in files["files"]:
            raise IndexBuildError(f"{path}: field files lacks {name}")
    spaces = _field(data, "spaces", dict, path)
    if not spaces:
        raise IndexBuildError(f"{path}: field spaces is empty")
    entries = MappingProxyType({s: _parse_space(s, meta, path, fast) for s, meta in spaces.items()})
    # builds made before the privacy margin have none (picks then use 1.0)
    margin = _parse_margin(_field(data, "margin", dict, path), path) if "margin" in data else None
    ages = _opt(data, "age_groups", list, path)
    if ages is not None and not all(isinstance(a, str) for a in ages):
        raise IndexBuildError(f"{path}: field age_groups must be a list of labels")
    return BuildManifest(
        kind=KIND, format_version=version, build_id=build_id, bank=bank, rows=rows, spaces=entries, **files,
        margin=margin, content_id=_field(data, "content_id", str, path) if "content_id" in data else None, created=_opt(data, "created", str, path),
        build_seconds=_opt(data, "build_seconds", (int, float), path), excluded=_counts(data, "excluded", path),
        groups=_counts(data, "groups", path), age_groups=None if ages is None else tuple(ages),
        versions=_frozen(_opt(data, "versions", dict, path)), **_rest(data, BuildManifest))


def _parse_bank(bank: dict, path) -> BankRef:
    return BankRef(path=_field(bank, "path", str, path, "bank."),
                   content_hash=_field(bank, "content_hash", str, path, "bank."),
                   faces=_opt(bank, "faces", int, path, "bank."), writer=_opt(bank, "writer", str, path, "bank."),
                   **_rest(bank, BankRef))


def _parse_space(s: str, meta: Any, path, fast: bool) -> SpaceEntry:
    where = f"spaces.{s}."
    if not isinstance(meta, dict):
        raise IndexBuildError(f"{path}: field spaces.{s} must be an object")
    dim = _field(meta, "dim", int, path, where)
    if dim <= 0:
        raise IndexBuildError(f"{path}: field {where}dim must be > 0")
    thr = _field(meta, "threshold", (int, float), path, where)
    if not (math.isfinite(thr) and -1.0 <= thr <= 1.0):
        raise IndexBuildError(f"{path}: field {where}threshold must be a cosine in [-1, 1], got {thr!r}")
    index = _field(meta, "index", dict, path, where)
    spec = IndexSpec(type=_field(index, "type", str, path, where + "index."),
                     faiss_class=_opt(index, "faiss_class", str, path, where + "index."),
                     params=_frozen(_opt(index, "params", dict, path, where + "index.")), **_rest(index, IndexSpec))
    files = _files(meta, path, where, fast)
    if f"vectors.{s}.npy" not in files["files"]:
        raise IndexBuildError(f"{path}: field {where}files lacks vectors.{s}.npy")
    return SpaceEntry(
        dim=dim, threshold=thr, index=spec, **files, model=_opt(meta, "model", str, path, where),
        model_sha256=_opt(meta, "model_sha256", str, path, where),
        threshold_source=_opt(meta, "threshold_source", str, path, where),
        threshold_calibration=_frozen(_opt(meta, "threshold_calibration", dict, path, where)),
        threshold_allowed_looser=_opt(meta, "threshold_allowed_looser", bool, path, where),
        norms=_norms(meta, path, where), **_rest(meta, SpaceEntry))


def _norms(meta: dict, path, where: str) -> Mapping[str, float] | None:
    """The recorded smallest and largest row norm: two finite floats, 0 <= min <= max."""
    norms = _opt(meta, "norms", dict, path, where)
    if norms is None:
        return None
    lo, hi = (_field(norms, k, float, path, where + "norms.") for k in ("min", "max"))
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi):
        raise IndexBuildError(f"{path}: field {where}norms must hold finite min <= max >= 0, got {lo!r}, {hi!r}")
    return MappingProxyType(dict(norms))


def _parse_margin(margin: dict, path) -> MarginSpec:
    m = _field(margin, "default", (int, float), path, "margin.")
    if not (math.isfinite(m) and 0.0 < m <= 1.0):
        raise IndexBuildError(f"{path}: field margin.default must be a fraction in (0, 1], got {m!r}")
    return MarginSpec(default=m, score=_opt(margin, "score", str, path, "margin."),
                      sample=_opt(margin, "sample", int, path, "margin."), **_rest(margin, MarginSpec))
