"""InsightFace model packs (buffalo_l, ...): fetch once with checksum verification, list what is present.

LICENSE: InsightFace's pretrained models (the buffalo_* packs included) are released for
non-commercial research purposes only. Fetching them here does not grant any other use.

A pack is a zip of ONNX files. `fetch_pack` downloads it once into a cache (facebank._io.download:
the zip's sha256 is recorded on first download, or pinned by the caller, and checked on every
later use), extracts it safely into a temporary directory beside the destination, checks that the
ONNX files facebank uses are there and open in onnxruntime, writes a manifest of every file's
sha256, then moves the directory into place with `os.replace`. The result is the directory that
load_detector('scrfd'), load_embedder('arcface') and load_attribute_model('insightface') take.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from facebank._io.download import cache_record, check_sha256_hex, fetch, is_url, sha256_file
from facebank.errors import InputError, ModelError, SourceError

__all__ = ["DEFAULT_DEST", "LICENSE_NOTICE", "MANIFEST_NAME", "PACKS", "PUBLISHED", "PUBLISHED_ZIP_SHA256", "ModelPack",
           "check_published", "extract_zip", "fetch_pack", "list_packs"]

PathLike = Union[str, os.PathLike]

LICENSE_NOTICE = ("InsightFace model packs are for non-commercial research use only "
                  "(see https://github.com/deepinsight/insightface#license).")
DEFAULT_DEST = Path("~/.insightface/models")  # where InsightFace itself keeps them
MANIFEST_NAME = ".facebank-pack.json"  # hidden: the loaders glob *.onnx and must not see it
MANIFEST_FORMAT_VERSION = 1
_RELEASE = "https://github.com/deepinsight/insightface/releases/download/v0.7"
_MAX_MEMBERS = 1000
_MAX_UNPACKED = 4 << 30  # the largest official pack unpacks to ~330 MB; this stops zip bombs


@dataclass(frozen=True)
class ModelPack:
    name: str
    url: str
    required: tuple[str, ...]  # ONNX files facebank uses: each must exist and open in onnxruntime
    optional: tuple[str, ...] = ()  # also in the official zip; facebank does not use them


# Published sha256 and size of the official files, per pack (from the table in
# shared/docs/MODEL_CHECKSUMS.md: each value was seen in several independent public places, and
# det_500m.onnx matches the copy in the test assets). After extraction every listed file must
# match; a file of the pack the table does not list (1k3d68.onnx; genderage.onnx outside
# buffalo_l) is recorded on first download instead. Checking each member is stronger than the zip:
# only buffalo_sc's zip has a published sha256, and it is pinned below.
_R50 = ("4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43", 174_383_860)
_MBF = ("9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f", 13_616_099)
_DET_500M = ("5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a", 2_524_817)
PUBLISHED: dict[str, dict[str, tuple[str, int]]] = {
    "buffalo_l": {
        "w600k_r50.onnx": _R50,
        "det_10g.onnx": ("5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91", 16_923_827),
        "genderage.onnx": ("4fde69b1c810857b88c64a335084f1c3fe8f01246c9a191b48c7bb756d6652fb", 1_322_532),
        "2d106det.onnx": ("f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf", 5_030_888),
    },
    "buffalo_m": {"w600k_r50.onnx": _R50},
    "buffalo_s": {"w600k_mbf.onnx": _MBF, "det_500m.onnx": _DET_500M},
    "buffalo_sc": {"w600k_mbf.onnx": _MBF, "det_500m.onnx": _DET_500M},
}
PUBLISHED_ZIP_SHA256 = {"buffalo_sc": "57d31b56b6ffa911c8a73cfc1707c73cab76efe7f13b675a05223bf42de47c72"}

_LANDMARKS = ("1k3d68.onnx", "2d106det.onnx")
PACKS = {
    "buffalo_l": ModelPack("buffalo_l", f"{_RELEASE}/buffalo_l.zip",
                           ("det_10g.onnx", "w600k_r50.onnx", "genderage.onnx"), _LANDMARKS),
    "buffalo_m": ModelPack("buffalo_m", f"{_RELEASE}/buffalo_m.zip",
                           ("det_2.5g.onnx", "w600k_r50.onnx", "genderage.onnx"), _LANDMARKS),
    "buffalo_s": ModelPack("buffalo_s", f"{_RELEASE}/buffalo_s.zip",
                           ("det_500m.onnx", "w600k_mbf.onnx", "genderage.onnx"), _LANDMARKS),
    "buffalo_sc": ModelPack("buffalo_sc", f"{_RELEASE}/buffalo_sc.zip", ("det_500m.onnx", "w600k_mbf.onnx")),
}


def _offline_hint(name: str) -> str:
    return (f"if offline, download {name}.zip elsewhere and pass it with --url file:///path/to/{name}.zip, "
            "or unzip it and pass the directory to --model/--detector-path")


def _member_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The member's path as safe parts; SourceError for anything that could land outside the target."""
    name = info.filename
    if "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise SourceError(f"unsafe zip member {name!r}: absolute or Windows-style path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise SourceError(f"unsafe zip member {name!r}: '..' would leave the destination")
    # Unix zips keep st_mode in the high 16 bits; the type bits are 0 where no type was written.
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if not info.is_dir() and file_type and file_type != stat.S_IFREG:  # symlinks, devices, fifos
        raise SourceError(f"unsafe zip member {name!r}: not a regular file")
    return parts


def extract_zip(zip_path: PathLike, target: PathLike) -> list[str]:
    """Extract the regular files of a zip into the existing empty directory `target`.

    No member may escape `target` (absolute paths, '..', symlinks are refused, SourceError). A
    single top-level folder holding everything ('buffalo_l/...') is stripped, so both layouts of
    a pack give the same directory. Returns the relative paths written, sorted.
    """
    target = Path(target)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = []
            for info in zf.infolist():
                parts = _member_parts(info)
                if info.is_dir() or not parts or parts[0] == "__MACOSX":  # macOS zip litter
                    continue
                members.append((info, parts))
            if not members:
                raise SourceError(f"{zip_path} holds no files")
            if len(members) > _MAX_MEMBERS or sum(i.file_size for i, _ in members) > _MAX_UNPACKED:
                raise SourceError(f"{zip_path} is too large to be a model pack")
            tops = {parts[0] for _, parts in members}
            strip = 1 if len(tops) == 1 and all(len(p) > 1 for _, p in members) else 0
            written = []
            for info, parts in members:
                out = target.joinpath(*parts[strip:])
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(out, "xb") as dst:  # "x": a duplicate name is refused
                        shutil.copyfileobj(src, dst, 1 << 20)
                except FileExistsError:
                    raise SourceError(f"zip member {info.filename!r} appears twice in {zip_path}") from None
                written.append("/".join(parts[strip:]))
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise SourceError(f"{zip_path} is not a readable zip ({exc})") from exc
    return sorted(written)


def _check_onnx(directory: Path, pack: ModelPack | None, label: str) -> None:
    """ModelError unless the files facebank uses are present and onnxruntime opens them."""
    from facebank.vision.model_files import onnx_session

    names = pack.required if pack else tuple(sorted(p.name for p in directory.glob("*.onnx")))
    missing = [n for n in names if not (directory / n).is_file()]
    if missing or not names:
        found = ", ".join(sorted(p.name for p in directory.glob("*.onnx"))) or "no .onnx files"
        raise ModelError(f"{label} lacks {', '.join(missing) or 'any .onnx file'} (found: {found})")
    for name in names:
        try:
            onnx_session(directory / name, what=name, threads=1)
        except ModelError as exc:
            raise ModelError(f"{label}: {exc}") from exc


def check_published(name: str, files: dict[str, dict], label: str) -> list[str]:
    """ModelError, in one line, unless every file of pack `name` that has a published checksum
    matches it (size and sha256); returns the names checked. `files` is a _file_table."""
    checked = []
    for member, (sha256, size) in sorted(PUBLISHED.get(name, {}).items()):
        got = files.get(member)
        if got is None:
            continue  # a required file that is missing is _check_onnx's error, with the full list
        if got["size"] != size or got["sha256"] != sha256:
            raise ModelError(f"{label}: {member} is not the published {name} file (sha256 {got['sha256'][:16]}..., "
                             f"{got['size']} bytes; published {sha256[:16]}..., {size} bytes); refusing it")
        checked.append(member)
    return checked


def _file_table(directory: Path) -> dict[str, dict]:
    return {p.relative_to(directory).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME}


def _read_manifest(directory: Path) -> dict | None:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        version = manifest["format_version"]
        manifest["files"], manifest["zip_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"pack manifest {path} is unreadable; delete {directory} to fetch again") from exc
    if version != MANIFEST_FORMAT_VERSION:
        raise ModelError(f"pack manifest {path} has format version {version}; this facebank reads "
                         f"{MANIFEST_FORMAT_VERSION}")
    return manifest


def _changed_files(recorded: dict, actual: dict) -> list[str]:
    names = set(recorded) | set(actual)
    return sorted(n for n in names if recorded.get(n, {}).get("sha256") != actual.get(n, {}).get("sha256"))


def _existing(target: Path, pack: ModelPack | None, pin: str | None) -> dict:
    """A pack already in place: check it against its manifest (or, unrecorded, just its files)."""
    manifest = _read_manifest(target)
    files = _file_table(target)
    if manifest is None:
        if pin is not None:
            raise SourceError(f"{target} was not fetched by facebank, so its zip's sha256 is unknown; "
                              "move it away to fetch and check it")
    else:
        changed = _changed_files(manifest["files"], files)
        if changed:
            raise ModelError(f"{target} changed since it was fetched ({', '.join(changed)}); delete it to fetch again")
        if pin is not None and manifest["zip_sha256"] != pin:
            raise SourceError(f"{target} came from a zip with sha256 {manifest['zip_sha256']}, expected {pin}; "
                              "delete it to fetch again")
    published = check_published(target.name, files, str(target)) if pack else []
    _check_onnx(target, pack, str(target))
    return {"status": "present", "recorded": manifest is not None, "url": (manifest or {}).get("url"),
            "zip_sha256": (manifest or {}).get("zip_sha256"), "files": files, "published_checked": published}


def fetch_pack(name: str, *, dest: PathLike = DEFAULT_DEST, url: Optional[str] = None,
               expected_sha256: Optional[str] = None, cache_dir: Optional[PathLike] = None) -> dict:
    """Make the model pack `name` present as the directory dest/name; returns what was done.

    Args:
        name: a pack in PACKS ('buffalo_l', ...) or, with `url`, any simple name.
        dest: the models directory (created if missing); default ~/.insightface/models.
        url: where the zip is: an http(s) or file:// URL, or a local path. None = the official URL.
        expected_sha256: the zip's hex sha256 to insist on; None = trust the first download and
            check its recorded sha256 on every later use.
        cache_dir: where downloaded zips are kept; None = dest/.downloads.

    Returns a plain dict: name, path, status ('fetched' or 'present'), recorded (facebank wrote
    the manifest), url, zip_sha256, files {relative path: {sha256, size}}, license.

    Raises SourceError (bad name, unreachable URL, checksum mismatch, unsafe or unreadable zip)
    and ModelError (a required ONNX file missing or not loadable, a pack changed since fetch).
    Nothing is left in dest on failure, and a downloaded zip that fails is removed from the cache.
    The models are for non-commercial research use only (LICENSE_NOTICE).
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise InputError(f"a model pack name is letters, digits, '.', '_' or '-', got {name!r}")
    pack = PACKS.get(name)
    if pack is None and url is None:
        raise InputError(f"unknown model pack {name!r}; known: {', '.join(PACKS)} (or give --url)")
    pin = check_sha256_hex(expected_sha256)
    if pin is None and url is None:  # the official zip: its published sha256, where there is one
        pin = PUBLISHED_ZIP_SHA256.get(name)
    dest = Path(dest).expanduser()
    target = dest / name
    info = {"name": name, "path": str(target), "license": LICENSE_NOTICE}
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise SourceError(f"{target} exists and is not a directory")
        return {**info, **_existing(target, pack, pin)}

    source = url if url is not None else pack.url
    dest.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else dest / ".downloads"
    zip_path = fetch(source, cache_dir=cache, expected_sha256=pin, what="model pack", default_name=f"{name}.zip",
                     offline_hint=_offline_hint(name))
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".part", dir=dest))
    try:
        extract_zip(zip_path, tmp)
        files = _file_table(tmp)
        published = check_published(name, files, f"{name} from {source}") if pack else []
        _check_onnx(tmp, pack, f"{name} from {source}")
        zip_sha256 = sha256_file(zip_path)
        manifest = {"format": "facebank-model-pack", "format_version": MANIFEST_FORMAT_VERSION,
                    "writer": f"facebank {_version()}", "name": name, "url": str(source), "zip_sha256": zip_sha256,
                    "files": files, "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, target)  # atomic: the pack is either whole or absent
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_url(source):  # a cached zip that is not a good pack would fail the same way forever
            zip_path.unlink(missing_ok=True)
            cache_record(zip_path).unlink(missing_ok=True)
        raise
    return {**info, "status": "fetched", "recorded": True, "url": str(source), "zip_sha256": zip_sha256,
            "files": files, "published_checked": published}


def _version() -> str:
    from facebank._version import __version__

    return __version__


def list_packs(dest: PathLike = DEFAULT_DEST) -> list[dict]:
    """Every known pack and every other directory of ONNX files under `dest`, with its files' sha256.

    Each entry: name, path, present, recorded (has facebank's manifest), zip_sha256, missing
    (required files absent), changed (files that differ from the manifest), files {path: {sha256, size}},
    and error where the manifest cannot be read.
    """
    dest = Path(dest).expanduser()
    names = list(PACKS)
    if dest.is_dir():
        names += sorted(p.name for p in dest.iterdir()
                        if p.is_dir() and not p.name.startswith(".") and p.name not in PACKS and any(p.glob("*.onnx")))
    entries = []
    for name in names:
        path = dest / name
        entry = {"name": name, "path": str(path), "present": path.is_dir(), "recorded": False, "zip_sha256": None,
                 "missing": [], "changed": [], "files": {}, "error": None}
        if path.is_dir():
            entry["files"] = _file_table(path)
            pack = PACKS.get(name)
            entry["missing"] = [n for n in (pack.required if pack else ()) if n not in entry["files"]]
            entry["unpublished"] = sorted(  # files that differ from their published checksum
                n for n, (sha, size) in PUBLISHED.get(name, {}).items()
                if n in entry["files"] and (entry["files"][n]["sha256"], entry["files"][n]["size"]) != (sha, size))
            try:
                manifest = _read_manifest(path)
            except ModelError as exc:  # one bad manifest should not hide the other packs
                entry["error"] = str(exc)
                manifest = None
            if manifest is not None:
                entry.update(recorded=True, zip_sha256=manifest["zip_sha256"],
                             changed=_changed_files(manifest["files"], entry["files"]))
        entries.append(entry)
    return entries
