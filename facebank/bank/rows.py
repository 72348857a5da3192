"""A bank column read row by row straight from the fragments, not through HDF5.

A pick re-checks each target against the bank's own vector, id, age and gender. Through the top
file's virtual dataset one row costs ~86 us (HDF5 resolves the mapping on every read). Here each
fragment's chunk byte offsets are read once (HDF5's chunk index), and then:

- small columns (ids, ages, genders: rows of at most 64 bytes) are read from a memory map of the
  fragment, in bulk (a session reads them whole: ~20 ms for a million ids);
- large rows (a vector, a crop) are one `os.pread` at the row's byte offset (~1-2 us). Not a view
  of the map: a random row of a large bank is a page the process never touched, and its page
  fault costs more than the system call on these VMs (measured at 1M faces: 46,000 faults in a
  few thousand picks), and chunks start at any byte, so the view would be unaligned, which makes
  numpy and BLAS several times slower on it (measured: docs/api-performance.md).

That holds for the uncompressed chunks facebank writes; a filtered or virtual dataset falls back
to h5py. The mapping is the manifest's, the same one the virtual dataset is made from, and
fragments are immutable, so the bytes read are the ones the bank holds
(tests/index/test_build_integrity.py compares every row of every column read so).
"""

from __future__ import annotations

import bisect
import mmap
import os
from pathlib import Path

import h5py
import numpy as np

from facebank.errors import BankError

__all__ = ["MappedColumn", "VectorRows"]

_SMALL_ROW = 64  # rows up to this many bytes are read from the map; larger ones with pread (see _Part.row)
_BATCH_ROWS = 64  # from this many rows of a large column `take` gathers from the map, not with pread
_ITER_CHUNKS = 65536  # up to this many chunks their offsets are read at once; beyond, per chunk on demand


def _damaged(file: Path, exc: BaseException) -> BankError:
    return BankError(f"fragment file {file} cannot be read ({' '.join(str(exc).split())[:160]}); the bank is damaged")


def _short(file: Path) -> BankError:
    return BankError(f"fragment file {file} is shorter than its chunk index says; the bank is damaged")


class _Part:
    """One fragment's dataset of a column: its rows [start, stop) and how to read them."""

    def __init__(self, file: Path, dset: str, start: int, stop: int, dtype: np.dtype, shape: tuple):
        self.file, self.dset, self.start, self.stop = file, dset, start, stop
        self.dtype, self.shape = dtype, shape
        self._row_bytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))  # an attribute: read per row
        self._h5: h5py.File | None = None
        self._ds: h5py.Dataset | None = None
        self._mm: mmap.mmap | None = None  # bulk reads of small columns (ids, ages, genders)
        self._fd: int | None = None  # row reads of large ones (vectors, crops)
        self._size = 0
        self._offsets: dict[int, int] | None = None  # chunk index -> byte offset (-1: unwritten)
        self._lazy = False  # offsets looked up per chunk on demand (datasets of very many chunks)
        self._offset_list: list[int] | None = None  # the same as a list, when all were read at once
        self.array: np.ndarray | None = None  # every row as one view when the chunks are consecutive
        self._cr = 0
        self._segments: tuple[np.ndarray, list[np.ndarray]] | None = None  # runs of consecutive chunks (`gather`)
        self._fill: np.ndarray | None = None
        self.mapped = False

    def open(self) -> None:
        try:
            self._h5 = h5py.File(self.file, "r")
            self._ds = self._h5[self.dset]
        except (OSError, KeyError) as exc:
            raise _damaged(self.file, exc) from exc
        ds = self._ds
        if not (ds.chunks is not None and not ds.is_virtual and ds.dtype == self.dtype and ds.shape[1:] == self.shape
                and ds.chunks[1:] == self.shape and ds.id.get_create_plist().get_nfilters() == 0
                and self._h5.userblock_size == 0 and ds.shape[0] >= self.stop - self.start):
            return  # read with h5py
        self._cr = ds.chunks[0]
        with open(self.file, "rb") as fh:
            self._size = os.fstat(fh.fileno()).st_size
            if self._size == 0:
                raise BankError(f"fragment file {self.file} is empty; the bank is damaged")
            self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._fd = os.open(self.file, os.O_RDONLY)
        fill = np.zeros((), self.dtype) if ds.fillvalue is None else ds.fillvalue
        self._fill = np.full(self.shape, fill, self.dtype)
        self._fill.flags.writeable = False
        n_chunks = -(-(self.stop - self.start) // self._cr)
        chunk_bytes = self._cr * self._row_bytes
        if n_chunks > _ITER_CHUNKS:
            self._offsets, self._lazy, self.mapped = {}, True, True
            return
        got: list[tuple[int, int, int]] = []
        try:
            ds.id.chunk_iter(lambda info: got.append((info.chunk_offset[0], info.byte_offset, info.size)))
        except (AttributeError, RuntimeError):  # HDF5 without H5Dchunk_iter: per chunk on demand
            self._offsets, self._lazy, self.mapped = {}, True, True
            return
        offsets = {k: -1 for k in range(n_chunks)}
        for first, offset, size in got:
            if first // self._cr < n_chunks:
                self._check_span(offset, size, chunk_bytes)
                offsets[first // self._cr] = offset
        self._offsets, self.mapped = offsets, True
        self._offset_list = [offsets[k] for k in range(n_chunks)]
        o0 = offsets[0]
        if o0 >= 0 and all(offsets[k] == o0 + k * chunk_bytes for k in range(n_chunks)):
            n = self.stop - self.start
            a = np.frombuffer(self._mm, dtype=self.dtype, count=n * int(np.prod(self.shape, dtype=np.int64)), offset=o0)
            if a.flags.aligned:  # HDF5 puts chunks at any byte: an unaligned view would make every use slow
                self.array = a.reshape((n, *self.shape))


    def _check_span(self, offset: int, size: int, chunk_bytes: int) -> None:
        if size != chunk_bytes or offset < 0 or offset + size > self._size:
            raise _short(self.file)

    def _offset(self, k: int) -> int:
        offset = self._offsets.get(k)
        if offset is None:  # lazy: one HDF5 look-up per chunk, then remembered
            info = self._ds.id.get_chunk_info_by_coord((k * self._cr,) + (0,) * len(self.shape))
            offset = -1 if info.byte_offset is None else info.byte_offset
            if offset >= 0:
                self._check_span(offset, info.size, self._cr * self._row_bytes)
            self._offsets[k] = offset
        return offset

    def row(self, local: int) -> np.ndarray:
        if self._ds is None:
            self.open()
        if self.array is not None and self._row_bytes <= _SMALL_ROW:
            return self.array[local]
        if self._mm is None:
            return self._h5_read(local)
        k = local // self._cr
        offset = self._offset_list[k] if self._offset_list is not None else self._offset(k)
        if offset < 0:  # an unwritten chunk reads as the fill value
            return self._fill
        rb = self._row_bytes
        # Large rows (vectors, crops) are read with `pread`, not through the map: a random row of a
        # large bank is a page the process never touched, and the page fault (several us on these
        # VMs) costs more than the system call; chunks also start at any byte, so a view of the map
        # would be unaligned, which makes numpy and BLAS several times slower on it.
        data = os.pread(self._fd, rb, offset + (local - k * self._cr) * rb)
        if len(data) != rb:
            raise _short(self.file)
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape)

    def all(self) -> np.ndarray:
        """Every row of the part as one array: the view when its chunks are consecutive, else a
        copy made chunk by chunk (for small columns: ids, ages, genders)."""
        if self._ds is None:
            self.open()
        if self.array is not None:
            return self.array
        n = self.stop - self.start
        if self._mm is None:
            return self._h5_read(slice(0, n))
        out = np.empty((n, *self.shape), self.dtype)
        out_bytes = out.reshape(n, -1).view(np.uint8)
        for k in range(-(-n // self._cr)):
            a, b = k * self._cr, min(n, (k + 1) * self._cr)
            offset = self._offset(k)
            if offset < 0:
                out[a:b] = self._fill
            else:
                rows = np.frombuffer(self._mm, dtype=np.uint8, count=(b - a) * self._row_bytes, offset=offset)
                out_bytes[a:b] = rows.reshape(b - a, self._row_bytes)  # bytes: aligned whatever the offset
        return out

    def take(self, local: np.ndarray) -> np.ndarray:
        if self._ds is None:
            self.open()
        small = self._row_bytes <= _SMALL_ROW
        if self.array is not None and small:
            return self.array[local]
        if len(local) * 4 >= self.stop - self.start and small:  # many rows of a small column
            return self.all()[local]
        if len(local) >= _BATCH_ROWS and self._offset_list is not None and self._mm is not None:
            return self._gather(local)
        out = np.empty((len(local), *self.shape), self.dtype)
        if self._mm is None:
            for j, i in enumerate(local.tolist()):
                out[j] = self.row(i)
            return out
        order = np.argsort(local, kind="stable")  # runs of one chunk, each in increasing row order
        srt = local[order]
        k = srt // self._cr
        cut = np.flatnonzero(np.diff(k)) + 1
        starts, ends = np.append(0, cut).tolist(), np.append(cut, len(srt)).tolist()
        out_bytes = out.reshape(len(local), -1).view(np.uint8)
        rb, cr, srt_l, k_l = self._row_bytes, self._cr, srt.tolist(), k.tolist()
        for a, b in zip(starts, ends):  # one read per chunk touched: the span of its rows asked for
            c = k_l[a]
            sel = order[a:b]
            offset = self._offset(c)
            if offset < 0:
                out[sel] = self._fill
                continue
            lo, hi = srt_l[a] - c * cr, srt_l[b - 1] - c * cr + 1
            data = os.pread(self._fd, (hi - lo) * rb, offset + lo * rb)
            if len(data) != (hi - lo) * rb:
                raise _short(self.file)
            out_bytes[sel] = np.frombuffer(data, dtype=np.uint8).reshape(hi - lo, rb)[srt[a:b] - c * cr - lo]
        return out

    def _h5_read(self, sel) -> np.ndarray:
        """Rows through h5py (a filtered or virtual dataset): its read errors name no file."""
        try:
            return np.asarray(self._ds[sel], dtype=self.dtype)
        except (OSError, RuntimeError) as exc:
            raise _damaged(self.file, exc) from exc

    def _gather(self, local: np.ndarray) -> np.ndarray:
        """Many rows of a large column at once: one fancy index per run of consecutive chunks (byte
        views of the map, so any alignment), the page faults amortised over the batch."""
        if self._segments is None:
            rb, cr, offs = self._row_bytes, self._cr, self._offset_list
            n = self.stop - self.start
            firsts, views, k = [], [], 0
            while k < len(offs):
                j = k
                while j + 1 < len(offs) and offs[k] >= 0 and offs[j + 1] == offs[j] + cr * rb:
                    j += 1
                rows = min(n, (j + 1) * cr) - k * cr
                firsts.append(k * cr)
                views.append(None if offs[k] < 0 else  # one opaque item per row: indexing copies whole rows
                             np.frombuffer(self._mm, np.dtype((np.void, rb)), count=rows, offset=offs[k]))
                k = j + 1
            self._segments = (np.array(firsts, np.int64), views)
        firsts, views = self._segments
        seg = np.searchsorted(firsts, local, side="right") - 1
        if len(views) == 1 and views[0] is not None:
            out = views[0][local]
        else:
            out = np.empty(len(local), np.dtype((np.void, self._row_bytes)))
            for i in np.unique(seg).tolist():
                sel = np.flatnonzero(seg == i)
                out[sel] = self._fill.tobytes() if views[i] is None else views[i][local[sel] - firsts[i]]
        return out.view(self.dtype).reshape((len(local), *self.shape))

    def close(self) -> None:
        self.array, self._segments = None, None  # views of the map go before it
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a row handed out still views it: the map closes when that goes
                pass
            self._mm = None
        if self._h5 is not None:
            self._h5.close()
            self._h5, self._ds, self._offsets, self._offset_list = None, None, None, None


class MappedColumn:
    """`col[row]` -> the value the bank stores for that row of one fixed-size column (a view, read
    only), from the fragments' memory maps; `col.take(rows)` for many; the fill value where no
    fragment holds the row. Fragment files are opened on the first read of one of their rows."""

    def __init__(self, bank: Path, manifest: dict, table: str, column: str, dtype, shape: tuple = ()):
        directory = Path(bank).parent / manifest["dir"]
        parts = sorted((p["start"], p["stop"], fr["name"], p["group"]) for fr in manifest["fragments"]
                       for p in fr["parts"] if p["table"] == table and column in p["columns"]
                       and p["stop"] > p["start"])
        self.dtype, self.shape = np.dtype(dtype), tuple(shape)
        self._parts = [_Part(directory / name, f"{group}/{column}", a, b, self.dtype, self.shape)
                       for a, b, name, group in parts]
        self._starts = [p.start for p in self._parts]
        self._fill = np.zeros(self.shape, self.dtype)

    def _part(self, row: int) -> _Part | None:
        i = bisect.bisect_right(self._starts, row) - 1
        if i < 0 or row >= self._parts[i].stop:
            return None
        return self._parts[i]

    def __getitem__(self, row: int) -> np.ndarray:
        row = int(row)
        if len(self._parts) == 1:
            part = self._parts[0]
            if part.start <= row < part.stop:
                return part.row(row - part.start)
        part = self._part(row)
        if part is None:
            return self._fill
        return part.row(row - part.start)

    def whole(self) -> np.ndarray | None:
        """Rows 0..n as one array view when a single mapped run of chunks holds them all, else None."""
        if len(self._parts) != 1 or self._parts[0].start != 0:
            return None
        p = self._parts[0]
        if p._ds is None:
            p.open()
        return p.array

    def read_all(self, n: int) -> np.ndarray:
        """Rows 0..n as one array (a view when `whole` is one, else a copy assembled part by part)."""
        w = self.whole()
        if w is not None and len(w) == n:
            return w
        out = np.empty((n, *self.shape), self.dtype)
        out[:] = self._fill
        for p in self._parts:
            b = min(p.stop, n)
            if p.start < b:
                out[p.start:b] = p.all()[:b - p.start]
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The values of `rows` (int array), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(self._parts) == 1 and rows.size and self._parts[0].start <= rows.min() and rows.max() < self._parts[0].stop:
            p = self._parts[0]
            return p.take(rows - p.start)
        return np.stack([self[r] for r in rows.tolist()]) if rows.size else np.empty((0, *self.shape), self.dtype)

    def close(self) -> None:
        for p in self._parts:
            p.close()


class VectorRows(MappedColumn):
    """`rows[row]` -> the float32 vector the bank stores for that row in `space` (zero when none)."""

    def __init__(self, bank: Path, manifest: dict, space: str, dim: int):
        super().__init__(bank, manifest, f"emb/{space}", "vectors", "<f4", (dim,))
        self.dim = dim
