"""One commit: merge the pending batches into ONE new fragment, then switch the bank to a new top file.

Only new data is written: new faces, rejections and log lines as new row ranges, and for the
updates (annotation columns, embedding vectors) of rows committed earlier, copy-on-write of just
the updated columns of each affected row range. The existing fragments are never rewritten.

The images, nearly all of a generated face's bytes (1.4 MB of PNG against ~40 kB for everything
else), are not copied: each pending batch that adds faces is hard-linked beside the new fragment
(its `refs`), and the fragment's `image` column is a virtual dataset over those files. A batch
file (a Ray worker's or this writer's) is thus written once and read never by the commit, so one
driver keeps up with many GPUs. `copy_images=True` copies them instead (no `fragment-refs`).
"""

from __future__ import annotations

import bisect
import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from facebank.bank import schema
from facebank.bank.layout import FragmentWriter, fragment_dir, fragment_files, write_top
from facebank.errors import InputError

__all__ = ["CommitState", "commit_pending"]


@dataclass
class CommitState:
    """What the writer knows of the committed bank (kept in memory between commits)."""

    manifest: dict
    created: float
    ids: list[str] = field(default_factory=list)  # row -> face id
    row_of: dict[str, int] = field(default_factory=dict)
    shas: set[str] = field(default_factory=set)  # committed content hashes
    rejected: set[tuple] = field(default_factory=set)  # committed rejection keys


def _rej_keys(g: h5py.Group) -> list[tuple]:
    return list(zip(g["content_sha256"][:], g["source_id"].asstr()[:], g["stage"].asstr()[:]))


def _append(ds: h5py.Dataset, values, at: int | None = None) -> None:
    """Write `values` after the dataset's rows, or over rows [at, at + len) of a dataset that has them."""
    n = ds.shape[0] if at is None else at
    if at is None:
        ds.resize((n + len(values), *ds.shape[1:]))
    if ds.dtype.kind == "O" and h5py.check_vlen_dtype(ds.dtype) not in (str, bytes):
        for i, v in enumerate(values):  # vlen arrays one by one: h5py would stack equal-length ones
            ds[n + i] = v
    else:
        ds[n:n + len(values)] = values  # strings and fixed-size rows in one write


def _take(ds: h5py.Dataset, keep: list[int]):
    return ds[:][keep]  # one read per column, vlen included (an object array)


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """Sorted row indices as [start, stop) runs of consecutive rows."""
    out: list[list[int]] = []
    for r in rows:
        if out and out[-1][1] == r:
            out[-1][1] = r + 1
        else:
            out.append([r, r + 1])
    return [(a, b) for a, b in out]


def _segments(manifest: dict) -> list[tuple[int, int]]:
    return sorted((p["start"], p["stop"]) for fr in manifest["fragments"] for p in fr["parts"]
                  if p["table"] == "faces" and "id" in p["columns"])


def _drop(manifest: dict, table: str, start: int, stop: int, columns: set[str]) -> None:
    """Stop referencing `columns` of `table` rows [start, stop) in the older parts (superseded)."""
    keep_frags = []
    for frag in manifest["fragments"]:
        for part in frag["parts"]:
            if part["table"] == table and part["start"] == start and part["stop"] == stop:
                part["columns"] = [c for c in part["columns"] if c not in columns]
                part["sums"] = {k: v for k, v in part["sums"].items() if k in part["columns"] or table != "faces"}
        frag["parts"] = [p for p in frag["parts"] if p["columns"] and not (p["table"].startswith("emb/") and
                                                                           not {"vectors", "present"} <= set(p["columns"]))]
        if frag["parts"]:
            keep_frags.append(frag)
        else:
            manifest["retired"].extend(fragment_files(frag))
    manifest["fragments"] = keep_frags


class _Commit:
    def __init__(self, bank: Path, state: CommitState, copy_images: bool = False, checksums: dict | None = None):
        self.bank, self.state, self.copy_images = bank, state, copy_images
        self.checksums = checksums or {}  # batch file -> XXH3-128 the writer checked when it adopted it
        self.m = copy.deepcopy(state.manifest)
        self.m["version"] += 1
        self.fw = FragmentWriter(fragment_dir(bank, self.m), self.m["version"], memory=not copy_images)
        self.n0 = self.m["rows"]["faces"]
        self.faces = self.rej = self.log = None
        self.attrs: list[tuple[int, str, object]] = []  # (row, column, value), in order
        self.vecs: dict[str, list[tuple[int, np.ndarray]]] = {}
        self.ids: list[str] = []
        self.images: list[tuple[str, int, list[int]]] = []  # (batch file, its faces, rows kept), in row order
        self.new_faces: dict[str, list[np.ndarray]] = {}  # column -> values of the new rows, per batch

    def _group(self, table: str, start: int) -> h5py.Group:
        cols = list(schema.REJECTION_COLUMNS if table == "rejections" else ["log"])
        return self.fw.part(table, start, start, cols)

    @staticmethod
    def _face_columns() -> list[str]:
        # `image` is made in `finish`, from the batch files: a virtual dataset over them, or a copy.
        return [c for c in schema.FACE_COLUMNS if c != "image"]

    def add_batch(self, p: h5py.File, path: str) -> None:
        st = self.state
        if "faces" in p:
            pf = p["faces"]
            keep, seen = [], set()
            for i, h in enumerate(pf["content_sha256"][:]):
                if h.decode() not in st.shas and h not in seen:
                    keep.append(i)
                    seen.add(h)
            if keep:
                # Held in memory and written once per commit: a dataset write per batch and column
                # cost more than the data (~5 ms a face at 8 faces a batch).
                whole = len(keep) == pf["id"].shape[0]
                for name in self._face_columns():
                    values = pf[name][:]
                    self.new_faces.setdefault(name, []).append(values if whole else values[keep])
                self.images.append((path, pf["image"].shape[0], keep))
                for h, fid in zip(pf["content_sha256"][keep], pf["id"][keep]):
                    st.shas.add(h.decode())
                    self.ids.append(fid.decode())
                    st.row_of[fid.decode()] = self.n0 + len(self.ids) - 1
        if "rejections" in p:
            pr = p["rejections"]
            keep = [i for i, k in enumerate(_rej_keys(pr)) if k not in st.rejected]
            if keep:
                self.rej = self.rej or self._group("rejections", self.m["rows"]["rejections"])
                for name in schema.REJECTION_COLUMNS:
                    _append(self.rej[name], _take(pr[name], keep))
                st.rejected.update(_rej_keys(pr))
        for space, g in p.get("embeddings", {}).items():
            self._space(space, json.loads(g.attrs["info"]))
            rows = [st.row_of.get(h.decode(), -1) for h in g["ids"][:]]
            self.vecs.setdefault(space, []).extend((r, v) for r, v in zip(rows, g["vectors"][:]) if r >= 0)
        for g in p.get("attributes", {}).values():
            rows = [st.row_of.get(h.decode(), -1) for h in g["ids"][:]]
            for name in g:
                if name != "ids":
                    values = g[name].asstr()[:] if g[name].dtype.kind == "O" else g[name][:]
                    self.attrs.extend((r, name, v) for r, v in zip(rows, values) if r >= 0)
        if "log" in p:
            self.log = self.log or self._group("log", self.m["rows"]["log"])
            _append(self.log["log"], p["log"].asstr()[:].astype(object))

    def _space(self, space: str, info: dict) -> None:
        old = self.m["spaces"].get(space)
        if old is None:
            self.m["spaces"][space] = info
        elif int(old["dim"]) != int(info["dim"]) or old.get("sha256") != info.get("sha256"):
            raise InputError(
                f"space {space!r} was made by {old.get('model')} ({old.get('sha256', '')[:12]}), "
                f"not {info.get('model')} ({info.get('sha256', '')[:12]}); use another space name")

    def finish(self, top: h5py.File | None) -> dict:
        n1 = self.n0 + len(self.ids)
        if self.new_faces:
            columns = {name: np.concatenate(parts) for name, parts in self.new_faces.items()}
            for row, name, value in self.attrs:  # new rows: straight into the new part
                if row >= self.n0:
                    columns[name][row - self.n0] = value
            self.faces = self.fw.part("faces", self.n0, n1, list(columns))
            for name, values in columns.items():
                _append(self.faces[name], values, at=0)
        segments = _segments(self.m) + ([(self.n0, n1)] if n1 > self.n0 else [])
        starts = [s for s, _ in segments]
        by_seg: dict[int, dict[str, dict[int, object]]] = {}
        for row, name, value in self.attrs:
            if row < self.n0:
                seg = bisect.bisect_right(starts, row) - 1
                by_seg.setdefault(seg, {}).setdefault(name, {})[row] = value
        for seg, cols in sorted(by_seg.items()):
            self._rewrite_columns(top, *segments[seg], cols)
        for space, updates in self.vecs.items():
            per: dict[int, dict[int, np.ndarray]] = {}
            for row, vec in updates:
                per.setdefault(bisect.bisect_right(starts, row) - 1, {})[row] = vec
            for seg, rows in sorted(per.items()):
                self._rewrite_space(top, space, *segments[seg], rows)
        if self.images:
            self._image_copies() if self.copy_images else self._image_refs()
            entry = next(p for p in self.fw.parts if p["group"] == self.faces.name.lstrip("/"))
            entry["columns"] = sorted([*entry["columns"], "image"])
        for part, table in ((self.faces, "faces"), (self.rej, "rejections"), (self.log, "log")):
            if part is not None:
                entry = next(p for p in self.fw.parts if p["group"] == part.name.lstrip("/"))
                entry["stop"] = entry["start"] + part[entry["columns"][0]].shape[0]
                self.m["rows"][table] = entry["stop"]
                self.fw.seal(part)
        return self.m

    def _image_refs(self) -> None:
        """The new rows' `image` column: a virtual dataset over the batch files, linked beside the fragment."""
        dtype = schema.FACE_COLUMNS["image"][0]
        layout = h5py.VirtualLayout(shape=(len(self.ids),), dtype=dtype)
        row = 0
        for path, n, keep in self.images:
            source = h5py.VirtualSource(self.fw.link(path, self.checksums.get(path)), "faces/image", shape=(n,), dtype=dtype)
            for a, b in _runs(keep):  # rows of a batch that were already in the bank are skipped
                layout[row:row + b - a] = source[a:b]
                row += b - a
        self.faces.create_virtual_dataset("image", layout, fillvalue=None)

    def _image_copies(self) -> None:
        """copy_images: the new rows' `image` column copied in, one batch file in memory at a time."""
        self.faces.create_dataset("image", shape=(len(self.ids),), dtype=schema.FACE_COLUMNS["image"][0],
                                  chunks=(min(schema.chunk_rows("image"), len(self.ids)),))
        row = 0
        for path, _, keep in self.images:
            with h5py.File(path, "r") as p:
                images = p["faces/image"][:]
            _append(self.faces["image"], images[keep], at=row)
            row += len(keep)

    def _rewrite_columns(self, top, start: int, stop: int, cols: dict[str, dict[int, object]]) -> None:
        g = self.fw.part("faces", start, stop, list(cols))
        for name, rows in cols.items():
            ds = top["faces"][name]
            values = ds.asstr()[start:stop].astype(object) if ds.dtype.kind == "O" else ds[start:stop]
            for r, v in rows.items():
                values[r - start] = v
            g[name][...] = values
        self.fw.seal(g)
        _drop(self.m, "faces", start, stop, set(cols))

    def _rewrite_space(self, top, space: str, start: int, stop: int, rows: dict[int, np.ndarray]) -> None:
        dim = int(self.m["spaces"][space]["dim"])
        table = f"emb/{space}"
        if start >= self.n0 or top is None or space not in top["embeddings"]:
            vectors, present = np.zeros((stop - start, dim), np.float32), np.zeros(stop - start, bool)
        else:
            vectors, present = top["embeddings"][space]["vectors"][start:stop], top["embeddings"][space]["present"][start:stop]
        for r, v in rows.items():
            vectors[r - start], present[r - start] = v, True
        _drop(self.m, table, start, stop, {"vectors", "present"})
        g = self.fw.part(table, start, stop, ["vectors", "present"], dim=dim)
        g["vectors"][...], g["present"][...] = vectors, present
        self.fw.seal(g)


def commit_pending(bank: Path, state: CommitState, pending: list[str], *, copy_images: bool = False,
                   checksums: dict[str, str] | None = None) -> None:
    """Apply `pending` batch files as one new version of `bank`; updates `state` in place."""
    applied = set(state.manifest.get("applied_batches", []))
    todo = [p for p in pending if os.path.basename(p) not in applied]  # a kill after the switch
    if todo:
        c = _Commit(bank, state, copy_images, checksums)
        try:
            for name in todo:
                with h5py.File(name, "r") as p:
                    c.add_batch(p, name)
            with h5py.File(bank, "r") as top:
                manifest = c.finish(top)
            entry = c.fw.close()
        except BaseException:
            c.fw.abort()
            raise
        if entry is not None:
            manifest["fragments"].append(entry)
        manifest["applied_batches"] = sorted(os.path.basename(p) for p in todo)
        write_top(bank, manifest, state.created)
        state.manifest = manifest
        state.ids.extend(c.ids)
    for name in pending:
        os.unlink(name)
