"""One space's vectors read row by row straight from the fragments, not through the virtual dataset.

A pick re-checks each target against the bank's own stored vector. Through the top file's
virtual dataset one row costs ~86 us (HDF5 resolves the mapping on every read); read from its
fragment it costs ~17 us with h5py and ~5 us with `os.pread` at the chunk's byte offset, which
is what this does for the uncompressed chunks facebank writes (filtered datasets fall back to
h5py). The mapping is the manifest's, the same one the virtual dataset is made from, and
fragments are immutable, so the value read is the one the bank holds.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path

import h5py
import numpy as np

from facebank.errors import BankError

__all__ = ["VectorRows"]


class _Part:
    """One fragment's dataset of a space: its rows [start, stop) and how to read one."""

    def __init__(self, file: Path, group: str, start: int, stop: int, dim: int):
        self.file, self.group, self.start, self.stop, self.dim = file, group, start, stop, dim
        self._h5: h5py.File | None = None
        self._ds: h5py.Dataset | None = None
        self._fd: int | None = None
        self._offsets: dict[int, int] | None = None  # chunk's first row -> byte offset in the file
        self._chunk_rows = 0

    def _open(self) -> None:
        try:
            self._h5 = h5py.File(self.file, "r")
            self._ds = self._h5[self.group]["vectors"]
        except (OSError, KeyError) as exc:
            raise BankError(f"fragment {self.file} cannot be read ({exc})") from exc
        ds = self._ds
        direct = (ds.chunks is not None and ds.dtype == np.dtype("<f4") and ds.shape[1:] == (self.dim,)
                  and ds.id.get_create_plist().get_nfilters() == 0 and self._h5.userblock_size == 0)
        if direct:
            offsets: dict[int, int] = {}
            try:
                ds.id.chunk_iter(lambda info: offsets.__setitem__(info.chunk_offset[0], info.byte_offset))
            except (AttributeError, RuntimeError):  # HDF5 without H5Dchunk_iter: read with h5py
                return
            self._offsets, self._chunk_rows = offsets, ds.chunks[0]
            self._fd = os.open(self.file, os.O_RDONLY)

    def row(self, local: int) -> np.ndarray:
        if self._ds is None:
            self._open()
        if self._offsets is None:
            return np.asarray(self._ds[local], dtype=np.float32)
        first = local - local % self._chunk_rows
        offset = self._offsets.get(first)
        if offset is None:  # an unwritten chunk reads as the fill value
            return np.zeros(self.dim, np.float32)
        size = self.dim * 4
        data = os.pread(self._fd, size, offset + (local - first) * size)
        if len(data) != size:
            raise BankError(f"fragment {self.file} is shorter than its chunk index says (damaged)")
        return np.frombuffer(data, dtype="<f4")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._h5 is not None:
            self._h5.close()
            self._h5, self._ds, self._offsets = None, None, None


class VectorRows:
    """`rows[row]` -> the float32 vector the bank stores for that row in `space` (zero when none).

    Fragment files are opened on the first read of one of their rows and kept open until `close`.
    """

    def __init__(self, bank: Path, manifest: dict, space: str, dim: int):
        directory = Path(bank).parent / manifest["dir"]
        table = f"emb/{space}"
        parts = sorted((p["start"], p["stop"], fr["name"], p["group"]) for fr in manifest["fragments"]
                       for p in fr["parts"] if p["table"] == table and "vectors" in p["columns"]
                       and p["stop"] > p["start"])
        self.dim = dim
        self._parts = [_Part(directory / name, group, a, b, dim) for a, b, name, group in parts]
        self._starts = [p.start for p in self._parts]

    def __getitem__(self, row: int) -> np.ndarray:
        row = int(row)
        i = bisect.bisect_right(self._starts, row) - 1
        if i < 0 or row >= self._parts[i].stop:
            return np.zeros(self.dim, np.float32)
        part = self._parts[i]
        return part.row(row - part.start)

    def close(self) -> None:
        for p in self._parts:
            p.close()
