"""The build manifest (`index_builds/<build>/manifest.json`): what a build is and what it binds to.

Documented in MANIFEST.md beside this file. A reader refuses other kinds and unknown versions,
and a manifest whose fields have the wrong shape or type (each refusal names the field), so a
damaged manifest is an IndexBuildError, never a KeyError deep inside a pick.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from facebank._io.checksum import FAST, file_digests, xxh3_file
from facebank._io.download import sha256_file
from facebank.errors import IndexBuildError

KIND = "facebank.index_build"
FORMAT_VERSION = 2  # 2: an XXH3-128 checksum (`xxh3_128`) beside every sha256
READABLE_VERSIONS = (1, 2)  # a version-1 build is checked with its sha256s


def read_manifest(build_dir: str | os.PathLike) -> dict:
    path = Path(build_dir) / "manifest.json"
    if not path.is_file():
        raise IndexBuildError(f"{build_dir} is not an index build (no manifest.json)")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # ValueError: also a >4300-digit int
        raise IndexBuildError(f"{path} is not valid JSON ({str(exc)[:120]})") from exc
    except OSError as exc:
        raise IndexBuildError(f"{path} cannot be read ({exc.strerror or exc})") from exc
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
    check_manifest(data, path)
    return data


def check_content_id(m: dict, where) -> str | None:
    """The manifest's content_id after checking it matches the manifest (None for builds made before it)."""
    if "content_id" not in m:
        return None
    try:
        ok = m["content_id"] == content_id(m)
    except ValueError:  # NaN or infinity somewhere
        ok = False
    if not ok:
        raise IndexBuildError(f"{where}: manifest.json does not match its content_id (edited or damaged): "
                              f"rebuild the index")
    return m["content_id"]


def content_id(m: dict) -> str:
    """The build's content id: sha256 of its manifest (every file checksum, threshold, the bank's content
    hash) without the `content_id` field itself, as sorted compact JSON. A pipeline pins it
    (`facebank.index.verify.check_build_id`); `index verify` refuses a manifest that does not match it."""
    body = json.dumps({k: v for k, v in m.items() if k != "content_id"}, sort_keys=True, separators=(",", ":"),
                      allow_nan=False, default=str)
    return hashlib.sha256(b"facebank-build-v1\0" + body.encode("utf-8", "surrogatepass")).hexdigest()


def _field(data: dict, key: str, kind, path, where: str = ""):
    value = data.get(key) if isinstance(data, dict) else None
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if not ok:
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise IndexBuildError(f"{path}: field {where}{key} must be a {want}, got {type(value).__name__}")
    return value


def _files(data: dict, path, where: str, fast: bool) -> None:
    files = _field(data, "files", dict, path, where)
    for name, digest in files.items():
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise IndexBuildError(f"{path}: field {where}files has an unsafe file name {name!r}")
        if not isinstance(digest, str) or len(digest) != 64:
            raise IndexBuildError(f"{path}: field {where}files[{name!r}] must be a sha256 hex string")
    if fast:  # version 2: the same files, each with its XXH3-128 too
        quick = _field(data, FAST, dict, path, where)
        if set(quick) != set(files):
            raise IndexBuildError(f"{path}: field {where}{FAST} must list the same files as {where}files")
        for name, digest in quick.items():
            if not isinstance(digest, str) or len(digest) != 32:
                raise IndexBuildError(f"{path}: field {where}{FAST}[{name!r}] must be a 32-digit hex string")


def check_manifest(data: dict, path) -> None:
    """Every field a reader relies on, with its type (IndexBuildError naming the first bad one)."""
    _field(data, "build_id", str, path)
    bank = _field(data, "bank", dict, path)
    _field(bank, "path", str, path, "bank.")
    _field(bank, "content_hash", str, path, "bank.")
    if _field(data, "rows", int, path) < 0:
        raise IndexBuildError(f"{path}: field rows must be >= 0")
    fast = data["format_version"] >= 2
    _files(data, path, "", fast)
    for name in ("rows.npy", "ids.npy", "groups.npy"):
        if name not in data["files"]:
            raise IndexBuildError(f"{path}: field files lacks {name}")
    spaces = _field(data, "spaces", dict, path)
    if not spaces:
        raise IndexBuildError(f"{path}: field spaces is empty")
    for s, meta in spaces.items():
        where = f"spaces.{s}."
        if not isinstance(meta, dict):
            raise IndexBuildError(f"{path}: field spaces.{s} must be an object")
        if _field(meta, "dim", int, path, where) <= 0:
            raise IndexBuildError(f"{path}: field {where}dim must be > 0")
        thr = _field(meta, "threshold", (int, float), path, where)
        if not (math.isfinite(thr) and -1.0 <= thr <= 1.0):
            raise IndexBuildError(f"{path}: field {where}threshold must be a cosine in [-1, 1], got {thr!r}")
        _field(_field(meta, "index", dict, path, where), "type", str, path, where + "index.")
        _files(meta, path, where, fast)
        if f"vectors.{s}.npy" not in meta["files"]:
            raise IndexBuildError(f"{path}: field {where}files lacks vectors.{s}.npy")
    if "margin" in data:  # builds made before the privacy margin have none (picks then use 1.0)
        m = _field(_field(data, "margin", dict, path), "default", (int, float), path, "margin.")
        if not (math.isfinite(m) and 0.0 < m <= 1.0):
            raise IndexBuildError(f"{path}: field margin.default must be a fraction in (0, 1], got {m!r}")


def manifest_files(m: dict, key: str = "files") -> dict[str, str]:
    """file name -> checksum (`files`: sha256; `xxh3_128`) of every file the manifest lists."""
    return {**m.get(key, {}), **{k: v for s in m["spaces"].values() for k, v in s.get(key, {}).items()}}


def open_files(m: dict) -> list[str]:
    """The files a session reads when it opens a build. A space's FAISS index is read only by
    approximate (ivf, hnsw) furthest picks, and checked then (`verify_files(..., [name])`)."""
    return ["rows.npy", "ids.npy", "groups.npy", *(f"vectors.{s}.npy" for s in sorted(m["spaces"]))]


def verify_files(build_dir: str | os.PathLike, m: dict, names: list[str] | None = None) -> None:
    """Recompute the checksum of `names` (default: every listed file); IndexBuildError naming the
    first that differs. Version 2 manifests are checked with XXH3-128, version 1 with sha256.

    Streamed in 8 MiB blocks. From the page cache XXH3-128 runs at ~8.7 GB/s here and sha256 at
    ~1.0 GB/s: the 1.93 GiB a 1M x 512 build checks at open take 0.24 s instead of 2.0 s
    (tools/bench_integrity.py).
    """
    build_dir = Path(build_dir)
    fast = m.get("format_version", 1) >= 2
    digests = manifest_files(m, FAST if fast else "files")
    compute = xxh3_file if fast else sha256_file
    for name in digests if names is None else names:
        file = build_dir / name
        if name not in digests:
            raise IndexBuildError(f"{build_dir}: {name} is not listed in the manifest")
        if not file.is_file():
            raise IndexBuildError(f"{build_dir}: {name} is missing")
        try:
            actual = compute(file)
        except OSError as exc:
            raise IndexBuildError(f"{build_dir}: {name} cannot be read ({exc.strerror or exc})") from exc
        if actual != digests[name]:
            raise IndexBuildError(f"{build_dir}: {name} does not match its checksum in the manifest "
                                  "(tampered with or damaged): rebuild the index")


def verify_all(build_dir: str | os.PathLike, m: dict) -> None:
    """Every listed file against its sha256, and its XXH3-128 in a version-2 manifest, from one
    read of each (`facebank index verify`: the full check)."""
    build_dir = Path(build_dir)
    sha, fast = manifest_files(m), manifest_files(m, FAST)
    for name, digest in sha.items():
        file = build_dir / name
        if not file.is_file():
            raise IndexBuildError(f"{build_dir}: {name} is missing")
        try:
            got_sha, got_fast = file_digests(file)
        except OSError as exc:
            raise IndexBuildError(f"{build_dir}: {name} cannot be read ({exc.strerror or exc})") from exc
        if got_sha != digest or (name in fast and got_fast != fast[name]):
            raise IndexBuildError(f"{build_dir}: {name} does not match its checksum in the manifest")


def load_array(build_dir: str | os.PathLike, name: str, *, dtype: str, shape: tuple, mmap: bool = False) -> np.ndarray:
    """One .npy of a build, never unpickled, with the dtype and shape the manifest implies."""
    file = Path(build_dir) / name
    try:
        a = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # a pickle, a truncated or foreign file
        raise IndexBuildError(f"{build_dir}: {name} is not a readable .npy array ({exc})") from exc
    if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype) or a.shape != shape:
        got = f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}"
        raise IndexBuildError(f"{build_dir}: {name} must be {dtype} {shape}, got {got}")
    return a
