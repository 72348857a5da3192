"""Exact similarity: validated unit queries, per-space storage with proven rounding bounds,
and the float64 / correctly rounded re-checks that decide rows inside a bound.

The picker (facebank.index.picker) decides eligibility with these pieces; see its docstring for
why the decision is exact. `Space.exact_one` is the one exact check of one row.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass

import numpy as np

from facebank.errors import InputError, InvalidEmbedding
from facebank.index import screen

__all__ = ["BatchPick", "PickResult", "Space", "make_space", "rng_for_key", "unit_queries"]

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


def unit_queries(q: np.ndarray, *, space: str, dim: int, ndim: int = 1) -> np.ndarray:
    """Validate query embeddings and return them as float32 unit rows (a new array).

    Args:
        q: (dim,) when ndim == 1, or (B, dim) when ndim == 2; any real dtype.
    Returns:
        float32 (k, dim): k = 1 or B, each row normalised in float64 then rounded to float32.
    """
    a = np.asarray(q)
    if a.dtype.kind not in "fiu" or a.ndim != ndim or a.shape[-1] != dim or a.size == 0:
        want = f"({dim},)" if ndim == 1 else f"(B, {dim})"
        raise InvalidEmbedding(f"space {space!r}: expected a real {want} embedding, got {a.dtype} {a.shape}")
    if ndim == 1 or a.shape[0] == 1:  # the common single query: scalar checks, a few microseconds
        safe = a.dtype.kind in "iu" or a.dtype.itemsize <= 4
        a = a.reshape(1, dim).astype(np.float64)  # a copy: the caller's array is never touched
        v = a[0]
        if safe:
            ss = float(np.dot(v, v))  # squares of float32/float16 values cannot overflow float64
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # caught below, with a clear error
                ss = float(np.dot(v, v))
        if not 1e-280 < ss < math.inf:  # NaN, infinity, zero, or a sum that under/overflowed
            a = _rescaled(a, space)
            ss = float(a[0] @ a[0])
        return (a * (1.0 / math.sqrt(ss))).astype(np.float32)
    a = a.reshape(-1, dim)
    safe = a.dtype.kind in "iu" or a.dtype.itemsize <= 4
    out = np.empty(a.shape, np.float32)
    step = max(1, 262144 // dim)  # chunks: float64 temporaries stay small (2 MiB); rows are independent
    for i in range(0, a.shape[0], step):
        c = a[i:i + step].astype(np.float64)
        if safe:  # squares of float32 values neither overflow nor underflow float64
            ss = np.einsum("ij,ij->i", c, c)
            if not np.isfinite(ss).all():
                raise InvalidEmbedding(f"space {space!r}: embedding has NaN or infinity")
            if not ss.all():
                raise InvalidEmbedding(f"space {space!r}: embedding has zero norm")
        else:
            c = _rescaled(c, space)
            ss = np.einsum("ij,ij->i", c, c)
        np.multiply(c, (1.0 / np.sqrt(ss))[:, None], out=c)
        out[i:i + step] = c  # rounds to float32
    return out


def _rescaled(a: np.ndarray, space: str) -> np.ndarray:
    """Rows divided by their largest magnitude (so squares neither overflow nor underflow)."""
    if not np.isfinite(a).all():
        raise InvalidEmbedding(f"space {space!r}: embedding has NaN or infinity")
    top = np.abs(a).max(axis=1, keepdims=True)
    if (top == 0).any():
        raise InvalidEmbedding(f"space {space!r}: embedding has zero norm")
    return a / top


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


@dataclass(frozen=True, eq=False)
class Space:
    """One identity space: storage rows, the float32 rows for exact re-checks, and the error bounds.

    Made by `make_space`. `margin` bounds |float32 similarity - exact similarity| for a unit
    query (see there); `e64` bounds the error of a float64 dot product of two float32 vectors.
    """

    name: str
    data: np.ndarray  # (n, d) float32 or float16, what the fast path reads
    exact: np.ndarray | None  # (n, d) float32 rows for re-checks, or None (fp16 without a source)
    dim: int
    coef: float
    margin: float
    f32: bool
    src: object  # float32 rows for exact similarities: the exact source, else float32 storage, else None
    src_nd: bool
    screen: bool  # rows the compiled loop can read in place
    e64: float

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

    def exact_one(self, row: int, q64: np.ndarray, thr: float) -> float | None:
        """The exact one-row check: the similarity of one row to q64, exact where it decides
        against `thr` (see `refine`), or None without a float32 source.

        q64: float64 (d,), one face (a single dot product, the fast path's form), or (F, d), the
        maximum over F faces."""
        src = self.src
        if src is None:
            return None
        if q64.ndim == 1:
            r64 = np.asarray(src[row], dtype=np.float64)
            ex = float(np.dot(r64, q64))
            if -self.e64 <= ex - thr <= self.e64:
                ex = math.fsum((r64 * q64).tolist())
            return ex
        if self.src_nd:
            v = src[row:row + 1].astype(np.float64)
        else:
            v = np.asarray(src[np.array([row])], dtype=np.float64).reshape(1, -1)
        return self.refine((v @ q64.T)[0].tolist(), v[0], q64, thr)

    def exact_many(self, rows: np.ndarray, q64: np.ndarray, thr: float, per_row: bool = False) -> np.ndarray | None:
        """`exact_one` for k rows: float64 (k,). q64: (F, d) shared by all rows, or with per_row
        (k, d), row i of q64 for row i (one face each)."""
        ex = self.exact_rows(rows)
        if ex is None:
            return None
        f = np.einsum("kd,kd->k", ex, q64)[:, None] if per_row else ex @ q64.T
        out = f.max(axis=1)
        for i in np.flatnonzero(np.abs(f - thr).min(axis=1) <= self.e64).tolist():  # rare
            out[i] = self.refine(f[i].tolist(), ex[i], q64[i:i + 1] if per_row else q64, thr)
        return out

    def settle(self, f: np.ndarray, rows: np.ndarray, q64, thr: float) -> np.ndarray:
        """f: float64 (k,) similarities of `rows` to the k faces of q64 (row j to face j); those
        within the float64 error bound of `thr` are replaced by `exact_one`'s value."""
        for j in np.flatnonzero(np.abs(f - thr) <= self.e64).tolist():  # rare
            f[j] = self.exact_one(int(rows[j]), q64[j:j + 1], thr)
        return f

    def refine(self, f: list[float], v: np.ndarray, q64: np.ndarray, thr: float) -> float:
        """max over faces of f (float64 dot products of v with each row of q64), each made exact
        where it matters: a float64 dot product of two float32 vectors is off by at most e64 (the
        products are exact; the sum of d terms is off by gamma_d(2^-53) * ||q|| * ||v||). Values
        within e64 of `thr` are replaced by the correctly rounded sum (math.fsum of the exact
        products), so `value <= thr` holds exactly when the true similarity is <= thr, and the
        reported similarity of a returned row never exceeds its threshold."""
        e = self.e64
        for i, x in enumerate(f):
            if -e <= x - thr <= e:
                f[i] = math.fsum((v * q64[i]).tolist())
        return max(f)


def make_space(name: str, v, dtype: str, exact) -> Space:
    """A Space of rows `v` (n, d): the fast-path storage in `dtype`, the float32 rows for exact
    re-checks (`exact`, else `v` when float32) and the error bounds, copying only when needed."""
    data, ex = _storage(name, v, dtype, exact)
    max_norm = _max_norm(name, data)
    d = data.shape[1]
    gamma = d * _U32 / (1 - d * _U32)  # float32 dot product of length d, any summation order
    if data.dtype == np.float32:
        # |fl32(q.v) - q.v| <= gamma_d * sum|q_i v_i| <= gamma_d * ||q|| * ||v||.
        coef = gamma * max_norm
    else:
        # h = fp16(v): |h_i - v_i| <= 2^-11 |v_i| + 2^-25, so |q.h - q.v| <= 2^-11 ||q|| ||v||
        # + 2^-25 sqrt(d) ||q||; plus the float32 accumulation gamma_d * ||q|| * ||h|| with
        # ||h|| <= (1 + 2^-11) ||v|| + 2^-25 sqrt(d).
        coef = (gamma * (1 + _U16) + _U16) * max_norm + (gamma + 1) * _SUB16 * math.sqrt(d)
    coef = coef * 1.01 + 1e-12  # slack for the float64 norms that enter the bound
    f32 = data.dtype == np.float32
    src = ex if ex is not None else (data if f32 else None)
    g64 = d * 2.0**-53 / (1 - d * 2.0**-53)  # float64 sum of d exact products
    return Space(name=name, data=data, exact=ex, dim=d, coef=coef,
                 margin=coef * (1 + 1e-6),  # ||q|| <= 1 + 2^-24 (+ float64 noise): see facebank.index.query
                 f32=f32, src=src, src_nd=isinstance(src, np.ndarray), screen=screen.usable(data),
                 e64=g64 * max_norm * (1 + 1e-6) * 1.01 + 1e-300)


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


def _max_norm(name, data) -> float:
    """Largest row norm of the float32 rows (bounded from the float16 rows when only those exist)."""
    top = 0.0
    for i in range(0, data.shape[0], 2048):  # small chunks: little temporary memory
        c = np.asarray(data[i:i + 2048], dtype=np.float64)
        sq = np.einsum("ij,ij->i", c, c)
        if not np.isfinite(sq).all():
            raise InputError(f"vectors[{name!r}] has rows with NaN or infinity")
        top = max(top, float(np.sqrt(sq.max(initial=0))))
    if data.dtype == np.float16:  # ||v|| <= (||h|| + 2^-25 sqrt d) / (1 - 2^-11)
        top = (top + _SUB16 * math.sqrt(data.shape[1])) / (1 - _U16)
    return top
