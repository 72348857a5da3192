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
from collections.abc import Iterator
from pathlib import Path

from facebank.errors import SourceError
from facebank.labels import AGE_CATEGORIES, metadata_attributes  # noqa: F401  (the export's labels; old import path)
from facebank.sources.base import IMAGE_SUFFIXES, SourceItem

SOURCE = "generated_photos"

_SIZE = re.compile(r"_(\d+)\.(jpe?g|png|webp)$", re.IGNORECASE)
_CSV_FIELDS = {"Emotion": "emotion", "Hair_length": "hair_length", "Hair_color": "hair_color", "Eye": "eye_color",
               "Gender": "gender", "Ethnicity": "ethnicity", "Age": "age", "Confidence": "confidence"}


class _Tree:
    """A read-only view of an export: a folder or a zip archive, paths always '/'-separated."""

    def __init__(self, path: Path):
        self.path = path
        self._zip = None
        if path.is_file():
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise SourceError(f"{path} is neither a folder nor a readable zip archive ({exc})") from exc
            self._names = {n for n in self._zip.namelist() if not n.endswith("/")}
        elif path.is_dir():
            self._names = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
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
        if name not in self._names:
            raise SourceError(f"{name} is not in {self.path}")
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

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
        if not csvs and not jsons:
            raise SourceError(f"{path} holds no generated.photos export (no dataset.csv, no per-face .json)")
        for name in csvs:
            yield from _from_csv(tree, name)
        for name in jsons:
            yield from _from_json(tree, name)
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
    best: dict[str, dict] = {}  # one row per face: the largest size listed
    for row in rows:
        key = _face_key(row["Image"])
        if key not in best or _size_of(row["Image"]) > _size_of(best[key]["Image"]):
            best[key] = row
    for key, row in best.items():
        meta = {_CSV_FIELDS.get(k, k.lower()): v for k, v in row.items() if k != "Image" and v not in (None, "")}
        ref = row["Image"]
        source_id = f"{base}/{posixpath.basename(ref)}" if base else posixpath.basename(ref)
        yield _item(tree, base, ref, source_id, meta)


def _from_json(tree: _Tree, json_name: str) -> Iterator[SourceItem]:
    base = posixpath.dirname(json_name)
    try:
        doc = json.loads(tree.read(json_name))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        yield SourceItem(SOURCE, json_name, rejection=("unreadable", f"not JSON: {exc}"))
        return
    docs = doc.get("faces", [doc]) if isinstance(doc, dict) else doc
    for face in docs:
        if not isinstance(face, dict) or "meta" not in face:
            continue  # some other JSON file in the export
        meta = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in face["meta"].items()}
        meta["api_id"] = face.get("id", "")
        meta["version"] = face.get("version", "")
        urls = {}
        for entry in face.get("urls", []):
            urls.update({int(k): v for k, v in entry.items() if str(k).isdigit()})
        candidates = [posixpath.basename(urls[s].split("?")[0]) for s in sorted(urls, reverse=True)]
        stem = posixpath.splitext(posixpath.basename(json_name))[0]
        candidates += [f"{face.get('id', stem)}{ext}" for ext in IMAGE_SUFFIXES] + [f"{stem}{ext}" for ext in IMAGE_SUFFIXES]
        ref = next((c for c in candidates if tree.exists(tree.resolve(base, c) or "")), candidates[0] if candidates else "")
        yield _item(tree, base, ref, f"{base}/{face.get('id', stem)}" if base else str(face.get("id", stem)), meta)


def _item(tree: _Tree, base: str, ref: str, source_id: str, meta: dict) -> SourceItem:
    name = tree.resolve(base, ref)
    if name is None:
        return SourceItem(SOURCE, source_id, metadata=meta, rejection=("unsafe_path", f"{ref!r} points outside the export"))
    if not tree.exists(name):
        # CSVs from the download tool name "./images/1_512.jpg" while the files sit beside the CSV.
        alt = tree.resolve(base, posixpath.basename(ref))
        if alt is None or not tree.exists(alt):
            return SourceItem(SOURCE, source_id, metadata=meta, rejection=("missing_file", f"{ref} not found"))
        name = alt
    return SourceItem(SOURCE, source_id, data=tree.read(name), metadata=meta)
