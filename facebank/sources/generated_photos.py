"""generated.photos exports: folders with `dataset.csv`, per-face API JSON, and zip archives of either.

An export is read without extracting anything: folders through a root-confined path resolver and
zip archives member by member in memory, so a CSV row or archive member that points outside the
export (`../x`, an absolute path) is rejected, never followed.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from facebank.errors import SourceError
from facebank.sources.base import IMAGE_SUFFIXES, MAX_FILE_BYTES, SourceItem, inside, safe_name

SOURCE = "generated_photos"

_SIZE = re.compile(r"_(\d+)\.(jpe?g|png|webp)$", re.IGNORECASE)
_CSV_FIELDS = {"Emotion": "emotion", "Hair_length": "hair_length", "Hair_color": "hair_color", "Eye": "eye_color",
               "Gender": "gender", "Ethnicity": "ethnicity", "Age": "age", "Confidence": "confidence"}


_MAX_RATIO = 200  # uncompressed / compressed size of a zip member: images barely compress


class _Tree:
    """A read-only view of an export: a folder or a zip archive, paths always '/'-separated.

    Names that are not UTF-8 and symlinks out of the folder are kept aside (`refused`), so the
    export's other files are still read and the refused ones become rejections.
    """

    def __init__(self, path: Path):
        self.path = path
        self._zip = None
        self.refused: dict[str, tuple[str, str]] = {}
        if path.is_file():
            try:
                self._zip = zipfile.ZipFile(path)
                infos = self._zip.infolist()
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                raise SourceError(f"{path} is neither a folder nor a readable zip archive ({exc})") from exc
            self._info = {i.filename: i for i in infos if not i.is_dir()}
            self._names = set(self._info)
        elif path.is_dir():
            self._names = set()
            for p in path.rglob("*"):
                if not p.is_file():
                    continue
                name, ok = safe_name(p.relative_to(path).as_posix())
                if not ok:
                    self.refused[name] = ("unreadable", "file name is not valid UTF-8")
                elif not inside(path, p):
                    self.refused[name] = ("unsafe_path", "a symlink that points outside the export")
                else:
                    self._names.add(name)
        else:
            raise SourceError(f"{path} does not exist")

    def files(self) -> list[str]:
        return sorted(self._names)

    def resolve(self, base_dir: str, ref: str) -> str | None:
        """The export-relative path `ref` names from `base_dir`, or None if it escapes the export."""
        ref = ref.replace("\\", "/")
        if ref.startswith("/") or re.match(r"^[A-Za-z]:", ref):
            return None
        joined = posixpath.normpath(posixpath.join(base_dir, ref))
        if joined == ".." or joined.startswith("../"):
            return None
        return joined

    def exists(self, name: str) -> bool:
        return name in self._names

    def read(self, name: str) -> bytes:
        """A member's bytes, streamed with a size cap and (in a zip) a compression-ratio cap.

        SourceError for a missing, oversized, bomb-like or corrupt (bad CRC) member.
        """
        if name not in self._names:
            raise SourceError(f"{name} is not in {self.path}")
        try:
            if self._zip is None:
                if (self.path / name).stat().st_size > MAX_FILE_BYTES:
                    raise SourceError(f"{name} is larger than {MAX_FILE_BYTES >> 20} MiB")
                return (self.path / name).read_bytes()
            info = self._info[name]
            if info.file_size > MAX_FILE_BYTES or info.file_size > _MAX_RATIO * max(info.compress_size, 1 << 16):
                raise SourceError(f"{name}: zip member of {info.file_size} bytes "
                                  f"({info.compress_size} compressed) is past the size or ratio cap")
            out = bytearray()
            with self._zip.open(info) as fh:  # the header may lie: cap what is actually inflated
                while chunk := fh.read(1 << 20):
                    out += chunk
                    if len(out) > min(MAX_FILE_BYTES, _MAX_RATIO * max(info.compress_size, 1 << 16)):
                        raise SourceError(f"{name}: zip member inflates past its size cap")
            return bytes(out)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            raise SourceError(f"{name}: cannot be read ({exc})") from exc

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def iter_generated_photos(path: str | Path) -> Iterator[SourceItem]:
    """Every face of a generated.photos export (folder or zip), largest size of each face.

    Yields items whose `metadata` holds the export's labels (age category, gender, emotion,
    ethnicity, ...). Rows whose file is missing or escapes the export come with a `rejection`.
    """
    tree = _Tree(Path(path))
    try:
        files = tree.files()
        csvs = [f for f in files if posixpath.basename(f).lower() == "dataset.csv"]
        jsons = [f for f in files if f.lower().endswith(".json")]
        if not csvs and not jsons and not tree.refused:
            raise SourceError(f"{path} holds no generated.photos export (no dataset.csv, no per-face .json)")
        for name in csvs:
            yield from _from_csv(tree, name)
        for name in jsons:
            yield from _from_json(tree, name)
        for name, (reason, detail) in sorted(tree.refused.items()):  # those no CSV row or JSON named
            yield SourceItem(SOURCE, name, rejection=(reason, detail))
    finally:
        tree.close()


def _size_of(name: str) -> int:
    m = _SIZE.search(name)
    return int(m.group(1)) if m else 0


def _face_key(name: str) -> str:
    return _SIZE.sub("", posixpath.basename(name))


def _from_csv(tree: _Tree, csv_name: str) -> Iterator[SourceItem]:
    base = posixpath.dirname(csv_name)
    try:
        text = tree.read(csv_name).decode("utf-8-sig")
        rows = list(csv.DictReader(io.StringIO(text)))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"{csv_name}: not a readable dataset.csv ({exc})") from exc
    if rows and "Image" not in rows[0]:
        raise SourceError(f"{csv_name}: no 'Image' column")
    # One row per face (the largest size listed), keyed by the folder it names and the face's
    # name without its size: the same file name in two sub-folders is two faces.
    best: dict[str, dict] = {}
    for line, row in enumerate(rows, start=2):
        ref = row.get("Image")
        if not isinstance(ref, str) or not ref.strip():
            yield SourceItem(SOURCE, f"{csv_name}:{line}", rejection=("unreadable", f"CSV line {line} has no Image value"))
            continue
        key = posixpath.join(posixpath.dirname(tree.resolve(base, ref) or ref), _face_key(ref))
        if key not in best or _size_of(ref) > _size_of(best[key]["Image"]):
            best[key] = row
    for row in best.values():
        meta = {_CSV_FIELDS.get(k, k.lower()): v for k, v in row.items()
                if isinstance(k, str) and k != "Image" and isinstance(v, str) and v}
        yield _item(tree, base, row["Image"], None, meta)


def _bad_face(face: dict) -> str | None:
    """Why a per-face JSON object cannot be read, or None."""
    if not isinstance(face["meta"], dict):
        return f"meta must be an object, got {type(face['meta']).__name__}"
    urls = face.get("urls", [])
    if not isinstance(urls, list) or not all(isinstance(u, dict) for u in urls):
        return "urls must be a list of objects"
    if not all(isinstance(v, str) for u in urls for k, v in u.items() if str(k).isdigit()):
        return "every url must be a string"
    if not isinstance(face.get("id", ""), (str, int)) or isinstance(face.get("id"), bool):
        return "id must be a string"
    return None


def _from_json(tree: _Tree, json_name: str) -> Iterator[SourceItem]:
    base = posixpath.dirname(json_name)
    try:
        doc = json.loads(tree.read(json_name))
    except (ValueError, RecursionError) as exc:  # also bad UTF-8, a >4300-digit int, nesting past the limit
        yield SourceItem(SOURCE, json_name, rejection=("unreadable", f"not JSON: {str(exc)[:120]}"))
        return
    docs = doc.get("faces", [doc]) if isinstance(doc, dict) else doc
    if not isinstance(docs, list):
        yield SourceItem(SOURCE, json_name, rejection=("unreadable", f"expected faces as a list, got {type(docs).__name__}"))
        return
    stem = posixpath.splitext(posixpath.basename(json_name))[0]
    for k, face in enumerate(docs):
        if not isinstance(face, dict) or "meta" not in face:
            continue  # some other JSON file in the export
        fid = face.get("id", stem)
        source_id = f"{base}/{fid}" if base else str(fid)
        why = _bad_face(face)
        if why is not None:
            yield SourceItem(SOURCE, f"{json_name}#{k}", rejection=("unreadable", why))
            continue
        meta = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in face["meta"].items()}
        meta["api_id"] = face.get("id", "")
        meta["version"] = face.get("version", "")
        urls = {}
        for entry in face.get("urls", []):
            urls.update({int(k): v for k, v in entry.items() if str(k).isdigit()})
        candidates = [posixpath.basename(urls[s].split("?")[0]) for s in sorted(urls, reverse=True)]
        candidates += [f"{fid}{ext}" for ext in IMAGE_SUFFIXES] + [f"{stem}{ext}" for ext in IMAGE_SUFFIXES]
        ref = next((c for c in candidates if tree.exists(tree.resolve(base, c) or "")), candidates[0])
        yield _item(tree, base, ref, source_id, meta)


def _item(tree: _Tree, base: str, ref: str, source_id: str | None, meta: dict) -> SourceItem:
    """The item `ref` names; `source_id` None: the export-relative path of the file (unique)."""
    name = tree.resolve(base, ref)
    if name is None:
        return SourceItem(SOURCE, source_id or posixpath.join(base, ref), metadata=meta,
                          rejection=("unsafe_path", f"{ref!r} points outside the export"))
    if not tree.exists(name):
        # CSVs from the download tool name "./images/1_512.jpg" while the files sit beside the CSV.
        alt = tree.resolve(base, posixpath.basename(ref))
        if alt is None or not tree.exists(alt):
            rejection = tree.refused.pop(name, None) or ("missing_file", f"{ref} not found")
            return SourceItem(SOURCE, source_id or name, metadata=meta, rejection=rejection)
        name = alt
    try:
        data = tree.read(name)
    except SourceError as exc:  # a corrupt or oversized member: a rejection, the run goes on
        return SourceItem(SOURCE, source_id or name, metadata=meta, rejection=("unreadable", str(exc)))
    return SourceItem(SOURCE, source_id or name, data=data, metadata=meta)
