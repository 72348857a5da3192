"""Reading a bank: open once, read faces by id or row, read whole columns for index builds."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from facebank.bank import schema
from facebank._io.files import as_path
from facebank.bank.integrity import bound_folder, check_files, check_manifest, manifest_digest
from facebank.bank.layout import BankLayout, content_hash, fill_top
from facebank.bank.rows import MappedColumn, VectorRows
from facebank.errors import BankClosed, BankError, InputError, SchemaVersionError, UnknownFace, UnknownSpace

__all__ = ["Bank", "Face", "check_header", "open_bank"]


def check_header(f: h5py.File, path: os.PathLike | str) -> None:
    """Refuse files that are not banks, or banks of a schema or feature we do not know."""
    fmt = f.attrs.get("format")
    if not isinstance(fmt, str) or fmt != schema.FORMAT:  # an array attribute would compare elementwise
        raise BankError(f"{path} is not a facebank bank (format {fmt!r})")
    raw = f.attrs.get("schema_version", -1)
    if isinstance(raw, (bool, np.bool_)) or not isinstance(raw, (int, np.integer)):
        raise SchemaVersionError(f"{path}: attribute schema_version must be an integer, got {raw!r}")
    version = int(raw)
    if version == 1:
        raise SchemaVersionError(
            f"{path} has bank schema version 1; convert it with `facebank bank upgrade --bank {path}`"
        )
    if version != schema.SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} has bank schema version {version}; this facebank reads version {schema.SCHEMA_VERSION}"
        )
    required = _json_attr(f, "required_features", path, "[]", list)
    if not all(isinstance(x, str) for x in required):
        raise BankError(f"{path}: attribute required_features must be a JSON list of names")
    required = set(required)
    for name in ("content_hash", "writer"):
        if name in f.attrs and not isinstance(f.attrs[name], str):
            raise BankError(f"{path}: attribute {name} must be a string, got {type(f.attrs[name]).__name__}")
    if "content_hash" not in f.attrs:
        raise BankError(f"{path}: attribute content_hash is missing")
    unknown = required - schema.KNOWN_FEATURES
    if unknown:
        raise SchemaVersionError(f"{path} requires features this facebank lacks: {', '.join(sorted(unknown))}")


def _json_attr(f: h5py.File, name: str, path, default: str, kind: type):
    """A root attribute holding JSON of the given kind; BankError naming it otherwise."""
    raw = f.attrs.get(name, default)
    try:
        value = json.loads(raw if isinstance(raw, (str, bytes)) else "not json")
    except (ValueError, UnicodeDecodeError, RecursionError):  # ValueError: also a >4300-digit int
        value = None
    if not isinstance(value, kind):
        raise BankError(f"{path}: attribute {name} must be a JSON {kind.__name__}, got {str(raw)[:60]!r}")
    return value


@dataclass
class Face:
    """One face of the bank, as a face swapper needs it."""

    id: str
    row: int
    source: str
    source_id: str
    provenance: dict
    box: np.ndarray
    landmarks: np.ndarray
    crop: np.ndarray
    age: float
    gender: str
    age_confidence: float
    gender_confidence: float
    age_source: str
    gender_source: str
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    _bank: Bank | None = field(default=None, repr=False)

    def image_bytes(self) -> bytes:
        """The original encoded image (JPEG, PNG, ...), as it entered the bank."""
        return self._bank.image_bytes(self.row)

    def image(self) -> np.ndarray:
        """The original image decoded to RGB uint8 (H, W, 3)."""
        from facebank.vision.image_io import decode_image

        return decode_image(self.image_bytes(), name=self.id)


def _view(f: h5py.File, path: Path, manifest: dict) -> h5py.File:
    """An in-memory top file for `manifest`, resolving fragments beside `path` (readers never write).

    Built in memory with absolute fragment paths, then reopened read-only from its image: a view
    opened for writing would open its fragments for writing too, whose locks then clash with the
    read-only opens of the one-row readers (facebank.bank.rows)."""
    attrs = dict(f.attrs)
    f.close()
    absolute = {**manifest, "dir": str((path.parent / manifest["dir"]).resolve())}
    with h5py.File(path.parent / f".{path.name}.view", "w", driver="core", backing_store=False) as view:
        fill_top(view, absolute, float(attrs.get("created", 0.0)))
        for key, value in attrs.items():
            if key not in ("manifest", "manifest_sha256"):
                view.attrs[key] = value
        raw = json.dumps(manifest, sort_keys=True)  # the manifest as the folder beside it names it
        view.attrs["manifest"] = raw
        view.attrs["manifest_sha256"] = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
        view.flush()
        image = view.id.get_file_image()
    return h5py.File(h5py.h5f.open_file_image(image))


def refuse_directory(path: Path) -> None:
    """InputError for a bank path that is a folder (HDF5's own message is a C error dump)."""
    if path.is_dir():
        raise InputError(f"bank {path} is a directory; a bank is an .h5 file (its fragments sit in "
                         f"{path.name}.d/ beside it)")


class Bank:
    """A bank opened for reading. Cheap to keep open; reuse it across calls."""

    def __init__(self, path: str | os.PathLike):
        self.path = as_path(path, "bank")
        if not self.path.exists():
            raise InputError(f"bank {self.path} does not exist")
        refuse_directory(self.path)
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as exc:
            raise BankError(f"{self.path} is not a readable HDF5 bank ({exc})") from exc
        try:
            check_header(self._f, self.path)
            self._check_fragments()
            self._check_lengths()
            self._infos = self._check_spaces()
        except Exception:
            self._f.close()
            raise
        faces = self._f["faces"]
        self._n = int(faces["id"].shape[0])
        self._ids: np.ndarray | None = None  # read on first use: a 1M bank's ids take ~0.3 s
        self._row_of: dict[str, int] | None = None
        self.content_hash: str = str(self._f.attrs["content_hash"])
        self.writer: str = str(self._f.attrs.get("writer", ""))
        # Dataset handles and small columns are looked up once: a path lookup costs ~150 us.
        self._crop = faces["crop"]
        self._image = faces["image"]
        self._groups = {s: self._f["embeddings"][s] for s in self._f["embeddings"]}
        self._vec = {s: g["vectors"] for s, g in self._groups.items()}
        self._rows: dict[str, VectorRows] = {}  # one-row reads from the fragments (`vector`)
        self._mapped: dict[str, MappedColumn] = {}  # the same for fixed-size face columns (`mapped`)
        self._cols: dict[str, np.ndarray] = {}
        self._closed = False

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Reads through the virtual datasets: HDF5's error for a damaged fragment names no file."""
        try:
            yield
        except (OSError, RuntimeError) as exc:
            raise self._damaged(exc) from exc

    def _damaged(self, exc: BaseException) -> BankError:
        """A read through the virtual datasets failed (HDF5 names no file): find the fragment that did."""
        from facebank.bank.integrity import canonical_dir, damaged_file

        bad = damaged_file(self.manifest, canonical_dir(self.path))
        where = f"fragment file {bad} cannot be read" if bad else "a read failed"
        return BankError(f"{self.path}: {where} ({' '.join(str(exc).split())[:160]}); the bank is damaged")

    def _live(self) -> None:
        """h5py would raise a bare ValueError or OSError on a closed file: say what happened instead."""
        if self._closed:
            raise BankClosed(f"bank {self.path} was closed; open it again (facebank.open_bank)")

    def _check_fragments(self) -> None:
        """The manifest is whole and consistent, and its files are in this bank's own folder with the
        recorded sizes: a missing or cut fragment would read as fill values through the virtual datasets."""
        raw = self._f.attrs.get("manifest")
        manifest = _json_attr(self._f, "manifest", self.path, "null", dict)
        recorded = self._f.attrs.get("manifest_sha256")
        if recorded is not None and (not isinstance(raw, str) or recorded != manifest_digest(raw)):
            raise BankError(f"{self.path}: its manifest does not match manifest_sha256 (edited or damaged); "
                            f"the bank is damaged")
        check_manifest(manifest, self.path)
        if self._f.attrs["content_hash"] != content_hash(manifest):
            raise BankError(f"{self.path}: attribute content_hash does not match its manifest; the bank is damaged")
        folder = bound_folder(self.path, manifest)
        check_files(self.path, manifest, folder)
        self.recorded_dir: str = manifest["dir"]  # the folder the top file names; a writer re-binds it
        if manifest["dir"] != folder.name:  # renamed or copied with its folder: map onto the folder beside it
            manifest = {**manifest, "dir": folder.name}
            self._f = _view(self._f, self.path, manifest)
        self.manifest = manifest

    @property
    def layout(self) -> BankLayout:
        """The bank's manifest as a typed value (fragments, row counts, spaces; `dir` names the folder read)."""
        return BankLayout.from_dict(self.manifest, self.path)

    def _check_lengths(self) -> None:
        """Every /faces column and every space's datasets have one row per face, else BankError."""
        try:
            faces = self._f["faces"]
            lengths = {f"faces/{k}": len(faces[k]) for k in faces}
            for s in self._f["embeddings"]:
                lengths.update({f"embeddings/{s}/{k}": len(self._f["embeddings"][s][k]) for k in ("vectors", "present")})
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise BankError(f"{self.path}: its tables cannot be read ({exc})") from exc
        if "faces/id" not in lengths:
            raise BankError(f"{self.path}: has no faces/id column")
        n = lengths["faces/id"]
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            k = sorted(bad)[0]
            raise BankError(f"{self.path}: column {k} has {bad[k]} rows, faces/id has {n}; the bank is damaged")

    def _check_spaces(self) -> dict[str, dict]:
        """Each space's `info` attribute is a JSON object whose dim matches its float vectors."""
        infos = {}
        for s, g in self._f["embeddings"].items():
            where = f"{self.path}: embeddings/{s}"
            if not isinstance(g, h5py.Group) or not isinstance(g.get("vectors"), h5py.Dataset):
                raise BankError(f"{where} is not a space group with a vectors dataset")
            info = _json_attr(g, "info", where, "null", dict)
            dim, vectors = info.get("dim"), g["vectors"]
            if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
                raise BankError(f"{where}: attribute info field dim must be a positive integer, got {dim!r}")
            for key in ("model", "sha256"):
                if not isinstance(info.get(key), str):
                    raise BankError(f"{where}: attribute info field {key} must be a string, got {info.get(key)!r}")
            if vectors.ndim != 2 or vectors.shape[1] != dim or vectors.dtype.kind != "f":
                raise BankError(f"{where}: vectors are {vectors.dtype} {vectors.shape}, attribute info says dim {dim}")
            infos[s] = info
        return infos

    # -- shape of the bank --
    def __len__(self) -> int:
        return self._n

    @property
    def ids(self) -> np.ndarray:
        """Every face id (str, object array), in row order; read on first use."""
        if self._ids is None:
            self._live()
            self._ids = self.mapped("id").read_all(self._n).astype("U16").astype(object)
        return self._ids

    @property
    def spaces(self) -> list[str]:
        self._live()
        return sorted(self._f["embeddings"])

    def space_info(self, space: str) -> dict:
        """model, sha256, dim (and anything else the embedder recorded) of one space."""
        self._space(space)
        return dict(self._infos[space])

    def _space(self, space: str) -> h5py.Group:
        self._live()
        try:
            return self._groups[space]
        except KeyError:
            raise UnknownSpace(f"space {space!r} is not in {self.path}; it has: {', '.join(self.spaces) or 'none'}") \
                from None

    def _cached(self, name: str) -> np.ndarray:
        """A whole small column, read once (for one-face reads)."""
        self._live()
        if name not in self._cols:
            with self._reading():
                self._cols[name] = self.column(name) if name not in ("box", "landmarks") else self._f["faces"][name][:]
        return self._cols[name]

    # -- columns --
    def column(self, name: str) -> np.ndarray:
        """A whole per-face column (see schema.FACE_COLUMNS); strings come back as str."""
        self._live()
        if name not in schema.FACE_COLUMNS or name in ("image", "crop"):
            raise InputError(f"unknown or bulk column {name!r}")
        ds = self._f["faces"][name]
        with self._reading():
            if ds.dtype.kind == "O":
                return ds.asstr()[:]
            values = ds[:]
        return values.astype(str) if values.dtype.kind == "S" else values

    def vectors(self, space: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(n, d) float32 unit vectors of `space` (rows start..stop), rows of faces without one are zero."""
        group = self._space(space)
        with self._reading():
            return group["vectors"][start:stop]

    def present(self, space: str) -> np.ndarray:
        """(n,) bool: which faces have a vector in `space`."""
        group = self._space(space)
        with self._reading():
            return group["present"][:]

    def vector_rows(self, space: str) -> VectorRows:
        """A space's vectors read row by row from the fragments' memory maps (`rows[row]`, `rows.take`)."""
        self._live()
        reader = self._rows.get(space)
        if reader is None:
            vec = self._space(space)["vectors"]
            reader = self._rows[space] = VectorRows(self.path, self.manifest, space, int(vec.shape[1]))
        return reader

    def vector(self, space: str, row: int) -> np.ndarray:
        """One row's stored vector (read only), from its fragment's memory map (~1 us; ~86 us through
        the virtual dataset)."""
        reader = self.vector_rows(space)
        if not 0 <= int(row) < len(self):
            raise UnknownFace(f"row {row} is outside the bank (0..{len(self) - 1})")
        return reader[row]

    def face_id(self, row: int) -> str:
        """One face's id, read from its fragment (no need to load every id)."""
        return np.asarray(self.mapped("id")[row]).tobytes().rstrip(b"\0").decode()

    def mapped(self, name: str) -> MappedColumn:
        """A fixed-size face column (id, age, gender, crop, ...) read row by row from the fragments'
        memory maps (`col[row]`, `col.take(rows)`): ~1 us a row instead of ~86 us through HDF5."""
        self._live()
        col = self._mapped.get(name)
        if col is None:
            dtype, shape = schema.FACE_COLUMNS.get(name, (None, ()))
            if dtype is None or dtype in (schema.STR, schema.BYTES):
                raise InputError(f"column {name!r} is not a fixed-size face column")
            col = self._mapped[name] = MappedColumn(self.path, self.manifest, "faces", name,
                                                    np.dtype(dtype).newbyteorder("<"), shape)
        return col

    # -- one face --
    def row(self, face_id: str) -> int:
        if self._row_of is None:
            self._row_of = {fid: i for i, fid in enumerate(self.ids.tolist())}
        try:
            return self._row_of[face_id]
        except KeyError:
            raise UnknownFace(f"face {face_id!r} is not in {self.path}") from None

    def _check_row(self, row) -> int:
        """A row number as an int in range; anything else is a typed error, not h5py's."""
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)):
            raise InputError(f"row must be an int (a face's row; Bank.row(id) gives it), got {type(row).__name__}")
        if not 0 <= row < len(self):
            raise UnknownFace(f"row {row} is outside the bank (0..{len(self) - 1})")
        return int(row)

    def crop(self, row: int) -> np.ndarray:
        self._live()
        row = self._check_row(row)
        return self.mapped("crop")[row].copy()  # a damaged fragment: BankError naming it (rows.py)

    def image_bytes(self, row: int) -> bytes:
        self._live()
        row = self._check_row(row)
        with self._reading():
            return self._image[row].tobytes()

    def face(self, face_id_or_row: str | int, *, spaces: list[str] | None = None) -> Face:
        """One face by id (or row): crop, landmarks, attributes and its embeddings."""
        self._live()
        row = face_id_or_row if isinstance(face_id_or_row, (int, np.integer)) else self.row(face_id_or_row)
        if not 0 <= row < len(self):
            raise UnknownFace(f"row {row} is outside the bank (0..{len(self) - 1})")
        c = self._cached
        with self._reading():
            provenance = self._f["faces/provenance"].asstr()[row]
        embeddings = {}
        for space in self.spaces if spaces is None else spaces:
            self._space(space)
            if self._cached_present(space)[row]:
                embeddings[space] = self.vector(space, row).copy()
        return Face(
            id=self.face_id(row), row=int(row), source=c("source")[row], source_id=c("source_id")[row],
            provenance=json.loads(provenance),
            box=c("box")[row], landmarks=c("landmarks")[row], crop=self.mapped("crop")[row].copy(),
            age=float(c("age")[row]), gender=schema.gender_name(int(c("gender")[row])),
            age_confidence=float(c("age_confidence")[row]), gender_confidence=float(c("gender_confidence")[row]),
            age_source=c("age_source")[row], gender_source=c("gender_source")[row],
            embeddings=embeddings, _bank=self,
        )

    def _cached_present(self, space: str) -> np.ndarray:
        key = f"present:{space}"
        if key not in self._cols:
            with self._reading():
                self._cols[key] = self._groups[space]["present"][:]
        return self._cols[key]

    # -- logs --
    def rejections(self) -> list[dict]:
        self._live()
        r = self._f["rejections"]
        with self._reading():
            cols = {name: (r[name].asstr()[:] if r[name].dtype.kind == "O" else r[name][:]) for name in r}
        n = len(cols["reason"])
        return [
            {k: (v[i].decode() if isinstance(v[i], bytes) else v[i].item() if hasattr(v[i], "item") else v[i])
             for k, v in cols.items()}
            for i in range(n)
        ]

    def log(self) -> list[dict]:
        self._live()
        with self._reading():
            lines = self._f["log"].asstr()[:]
        return [json.loads(s) for s in lines]

    def close(self) -> None:
        self._closed = True
        for reader in [*self._rows.values(), *self._mapped.values()]:
            reader.close()
        self._rows.clear()
        self._mapped.clear()
        self._f.close()

    def __enter__(self) -> Bank:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Bank({str(self.path)!r}, faces={len(self)}, spaces={self.spaces})"


def open_bank(path: str | os.PathLike) -> Bank:
    """Open a bank for reading."""
    return Bank(path)
