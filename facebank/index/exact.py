"""Exact similarity per identity space: storage, the float32 screen's proven error bound, and
the exact checks that decide every row the screen cannot (facebank.index.cosine defines the
similarity and holds the float64 and integer arithmetic).

`Space.exact_one` / `exact_many` are the one exact check; `Space.margin` the one screen bound.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass

import numpy as np

from facebank.errors import IndexBuildError, InputError
from facebank.index import cosine, screen
from facebank.index.cosine import Given

__all__ = ["BatchPick", "PickResult", "Space", "WrongNorms", "make_space", "norm_range", "rng_for_key", "row_norms"]

_U32 = 2.0**-24  # unit roundoff of float32
_U16 = 2.0**-11  # unit roundoff of float16 (normal range)
_SUB16 = 2.0**-25  # half the float16 subnormal spacing: absolute rounding error below 2^-14


def rng_for_key(key: bytes | str, secret: bytes) -> np.random.Generator:
    """A generator seeded by HMAC-SHA256(secret, key).

    The same (photo, face) key always gives the same pick; without the secret, picks made for
    different keys cannot be linked to each other or to the key.
    """
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)) or not isinstance(secret, (bytes, bytearray)) or not secret:
        raise InputError("key must be bytes or str and secret non-empty bytes")
    digest = hmac.new(bytes(secret), bytes(key), hashlib.sha256).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))


@dataclass(frozen=True)
class PickResult:
    """One picked row.

    row: bank row number. similarities: space -> similarity of the row to the query (the maximum
    over the photo's faces in `pick_distinct`), exact in float64. tries: rows verified (draws,
    plus the group size when it scanned). method: "rejection", "scan" or "furthest".
    """

    row: int
    similarities: dict[str, float]
    tries: int
    method: str
    cut: object = None  # the privacy margin's MarginCut (facebank.index.margin), None without a margin


@dataclass(frozen=True)
class BatchPick:
    """Batch picks as arrays: rows int64 (B,), similarities space -> float64 (B,), tries int64 (B,),
    methods (B,) str."""

    rows: np.ndarray
    similarities: dict[str, np.ndarray]
    tries: np.ndarray
    methods: np.ndarray


_SCAN_CHUNK = 16384  # rows per chunk of a scan or a float16 conversion: bounds temporary memory


class WrongNorms(IndexBuildError):
    """A row the float32 screen passed has an exact similarity above the threshold: the screen's
    error bound rested on row norms that are not the rows' (a build manifest's `norms` edited)."""


@dataclass(frozen=True, eq=False)
class Space:
    """One identity space: storage rows, the float32 rows for exact checks, and the error bounds.

    Made by `make_space`. `margin` bounds |float32 screen value - exact cosine| (see there);
    `e64` bounds |float64 cosine - exact cosine| (facebank.index.cosine.bound64); `norms` is the
    (smallest, largest) row norm the bound rests on.
    """

    name: str
    data: np.ndarray  # (n, d) float32 or float16, what the fast path reads
    exact: np.ndarray | None  # (n, d) float32 rows for exact checks, or None (fp16 without a source)
    dim: int
    coef: float
    margin: float
    f32: bool
    src: object  # float32 rows for exact similarities: the exact source, else float32 storage, else None
    src_nd: bool
    screen: bool  # rows the compiled loop can read in place
    e64: float
    norms: tuple[float, float]

    def block(self, rows: np.ndarray | slice) -> np.ndarray:
        """float32 (k, d) rows of the fast path (a view for a slice of float32 storage)."""
        blk = self.data[rows] if isinstance(rows, slice) else self.data.take(rows, axis=0)
        return blk if blk.dtype == np.float32 else blk.astype(np.float32)

    def exact_rows(self, rows: np.ndarray) -> np.ndarray | None:
        """float64 (k, d) float32 rows for exact similarities, or None without a float32 source."""
        src = self.src
        if src is None:
            return None
        if self.src_nd:
            return src.take(rows, axis=0).astype(np.float64)
        order = np.unique(rows)  # h5py-like sources read increasing, unique indices
        got = np.asarray(src[order], dtype=np.float64)
        return got[np.searchsorted(order, rows)]

    def exact_one(self, row: int, g: Given, thr: float) -> float | None:
        """The exact check of one row: its cosine to the query rows `g` (the largest over them),
        decided exactly against `thr` (facebank.index.cosine), or None without a float32 source."""
        if self.src is None:
            return None
        if g.shape[0] == 1:  # one face: scalar work, the hot path's form
            r = self.src[row].astype(np.float64) if self.src_nd else np.asarray(self.src[row], dtype=np.float64)
            return cosine.decide_one(g, 0, r, thr, self.e64)
        return float(self.exact_many(np.array([row]), g, thr)[0])

    def exact_many(self, rows: np.ndarray, g: Given, thr: float, per_row: bool = False) -> np.ndarray | None:
        """`exact_one` for k rows: float64 (k,). g: the query rows shared by all rows, or with
        per_row k rows, row i of g for row i (one face each)."""
        ex = self.exact_rows(rows)
        return None if ex is None else cosine.decide(g, ex, thr, per_row)

    def scores(self, rows: np.ndarray, g: Given, q: np.ndarray) -> np.ndarray:
        """float64 (k,) cosines (largest over g's rows) for ordering, within e64 of exact; the
        float32 screen values (q: its float32 unit rows) without a float32 source."""
        ex = self.exact_rows(rows)
        if ex is None:
            return (self.block(rows) @ q.T).max(axis=1).astype(np.float64)
        q64, qn2 = g.f64()
        return cosine.cosines64(q64, qn2, ex, np.einsum("kd,kd->k", ex, ex)).max(axis=1)

    def confirm(self, value: float, row: int, thr: float) -> float:
        """A returned row's exact similarity, refused above `thr` (the screen passed it only if its
        bound rested on wrong norms: `WrongNorms`)."""
        if not value <= thr:
            raise WrongNorms(f"space {self.name!r}: row {row} passed the float32 screen with exact similarity "
                             f"{value!r} > {thr}: the row norms its error bound rests on {self.norms} are wrong "
                             "(build manifest edited?); rebuild the index")
        return value


def make_space(name: str, v, dtype: str, exact, norms: tuple[float, float] | None = None) -> Space:
    """A Space of rows `v` (n, d): the fast-path storage in `dtype`, the float32 rows for exact
    checks (`exact`, else `v` when float32) and the error bounds, copying only when needed.

    norms: the (smallest, largest) norm of the float32 rows as a build recorded them; computed
    here (a read of every row) when None or unusable. A recorded value that is wrong narrows the
    screen's band, and a row the screen then lets through above its threshold is refused when
    its exact similarity is computed (every returned row's is: `Space.confirm`).
    """
    data, ex = _storage(name, v, dtype, exact)
    f32 = data.dtype == np.float32
    src = ex if ex is not None else (data if f32 else None)
    d = data.shape[1]
    if not (src is not None and _usable(norms)):  # from the float32 rows in memory, else bounded from float16
        norms = norm_range(name, src if isinstance(src, np.ndarray) else data)
    lo_n, hi_n = norms[0] * (1 - d * 2.0**-50), norms[1] * (1 + d * 2.0**-50)  # their float64 rounding
    gamma = d * _U32 / (1 - d * _U32)  # float32 dot product of length d, any summation order
    if f32:
        # |fl32(q.v) - q.v| <= gamma_d * sum|q_i v_i| <= gamma_d * ||q|| * ||v||.
        coef = gamma * hi_n
    else:
        # h = fp16(v): |h_i - v_i| <= 2^-11 |v_i| + 2^-25, so |q.h - q.v| <= 2^-11 ||q|| ||v||
        # + 2^-25 sqrt(d) ||q||; plus the float32 accumulation gamma_d * ||q|| * ||h|| with
        # ||h|| <= (1 + 2^-11) ||v|| + 2^-25 sqrt(d).
        coef = (gamma * (1 + _U16) + _U16) * hi_n + (gamma + 1) * _SUB16 * math.sqrt(d)
    coef = coef * 1.01 + 1e-12  # slack for the float64 norms that enter the bound
    # From the screen's q.v to the exact cosine: the float32 unit query is within 2^-24 (its
    # rounding) + (d + 8) 2^-52 (the float64 normalisation) + sqrt(d) 2^-150 (subnormals) of the
    # exact unit query, times ||v||; dividing by ||v|| moves a cosine by at most | ||v|| - 1 |.
    qerr = (_U32 * (1 + 1e-9) + (d + 8) * 2.0**-52 + math.sqrt(d) * 2.0**-150) * hi_n
    dev = max(hi_n - 1.0, 1.0 - lo_n, 0.0)
    margin = (coef * (1 + 1e-6) + qerr + dev) * (1 + 1e-6)  # ||q|| <= 1 + 2^-24 (+ float64 noise)
    return Space(name=name, data=data, exact=ex, dim=d, coef=coef, margin=margin, f32=f32, src=src,
                 src_nd=isinstance(src, np.ndarray), screen=screen.usable(data), e64=cosine.bound64(d),
                 norms=(float(norms[0]), float(norms[1])))


def _usable(norms) -> bool:
    return isinstance(norms, tuple) and len(norms) == 2 and all(
        isinstance(x, float) and math.isfinite(x) and x >= 0 for x in norms) and norms[0] <= norms[1]


def row_norms(rows: np.ndarray) -> np.ndarray:
    """float64 (k,) norms of rows (float32 or float16; squares and sums in float64)."""
    c = np.asarray(rows, dtype=np.float64)
    return np.sqrt(np.einsum("ij,ij->i", c, c))


def norm_range(name: str, data) -> tuple[float, float]:
    """(smallest, largest) row norm of the float32 rows, read in chunks; bounded from the float16
    rows when only those exist. What a build records (facebank.index.build)."""
    lo, hi = math.inf, 0.0
    for i in range(0, data.shape[0], 2048):  # small chunks: little temporary memory
        nrm = row_norms(data[i:i + 2048])
        if not np.isfinite(nrm).all():
            raise InputError(f"vectors[{name!r}] has rows with NaN or infinity")
        if nrm.size:
            lo, hi = min(lo, float(nrm.min())), max(hi, float(nrm.max()))
    if lo == math.inf:
        lo = 1.0
    if data.dtype == np.float16:  # ||v|| within (||h|| -+ 2^-25 sqrt d) / (1 +- 2^-11)
        lo = max(0.0, (lo - _SUB16 * math.sqrt(data.shape[1])) / (1 + _U16))
        hi = (hi + _SUB16 * math.sqrt(data.shape[1])) / (1 - _U16)
    return lo, hi


def _storage(name, v, dtype, exact):
    """(fast-path array, float32 source or None) of one space, copying only when needed."""
    src = v if v.dtype == np.float32 and v.flags.c_contiguous else None
    if dtype == "float32":
        data = src if src is not None else np.ascontiguousarray(v, dtype=np.float32)
        return data, None
    if v.dtype == np.float16 and v.flags.c_contiguous:
        data = v
    else:
        data = np.empty(v.shape, dtype=np.float16)
        for i in range(0, v.shape[0], _SCAN_CHUNK):  # chunked: no full-size float32 temporary
            chunk = np.asarray(v[i:i + _SCAN_CHUNK], dtype=np.float32)
            if np.abs(chunk).max(initial=0) >= 65504:
                raise InputError(f"vectors[{name!r}] has values beyond the float16 range")
            data[i:i + _SCAN_CHUNK] = chunk  # round to nearest, what the error bound assumes
    if exact is None:
        exact = src if src is not None else (v if v.dtype == np.float32 else None)
    elif getattr(exact, "shape", None) != v.shape:
        raise InputError(f"exact[{name!r}] must have shape {v.shape}")
    return data, exact
