"""What "similarity" means, to the last bit, and the arithmetic that decides it.

The similarity of a query q (as given: any real dtype, never rounded first) and a stored row v
(as stored: float32, not exactly unit length) is their cosine, q.v / (|q| |v|), each normalised
in exact arithmetic. A row is eligible iff that exact cosine is <= the threshold (a float64).

Three tiers decide it; each hands on only what it cannot prove:

1. The float32 screen (facebank.index.exact.Space.margin): the float32 unit query `unit_queries`
   gives, dotted with the stored rows in float32. Its distance to the exact cosine is bounded
   (rounding of the dot product, of the query, and the rows' distance from unit length).
2. float64 (`cosines64`): q.v / sqrt(|q|^2 |v|^2) from the query's float64 rows (`Given`) and the
   float32 rows, within `bound64(d)` of the exact cosine (rounding of three sums of d terms, the
   product, the square root and the division; see there).
3. Integers (`exact_le`): every float is m * 2^e with integer m, so q.v, |q|^2 and |v|^2 are
   integers times powers of two, and cos <= t is decided by squaring with care for the signs:
   q.v <= t |q| |v|. Only rows within bound64 of the threshold get here (rare; about a
   millisecond each at d = 512).

`decided` turns a float64 value into the one the decision means: a value on the far side of the
threshold from the exact decision (possible only within bound64) becomes the threshold itself
or the next double above it, so a returned row's reported similarity never exceeds its threshold.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from facebank.errors import InvalidEmbedding

__all__ = ["Given", "bound64", "cosine_of", "cosines64", "decide", "decide_one", "decide_pair", "decided", "exact_le",
           "unit_queries", "unit_row"]

_U = 2.0**-53  # unit roundoff of float64


def unit_row(q: np.ndarray) -> tuple[np.ndarray, Given] | None:
    """(the float32 unit row, the query as given) of one float32 (d,) query: normalised in
    float64, then rounded to float32; None when its squared norm is zero, tiny, NaN or infinite
    (`unit_queries` then decides or refuses). The same bits as `unit_queries` gives, with the
    fewest numpy calls. The Given holds q itself: use it while q is unchanged."""
    v = q.astype(np.float64)
    ss = float(np.dot(v, v))  # squares of float32 values cannot overflow float64
    if not 1e-280 < ss < math.inf:
        return None
    return (v * (1.0 / math.sqrt(ss))).astype(np.float32), Given(q[None, :], (v, ss))


def unit_queries(q: np.ndarray, *, space: str, dim: int, ndim: int = 1) -> np.ndarray:
    """Validate query embeddings and return them as float32 unit rows (a new array): the query of
    the float32 screen. The exact check uses the query as given (`Given`).

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
        if a.dtype == np.float32:
            got = unit_row(a.reshape(dim))
            if got is not None:
                return got[0].reshape(1, dim)
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


class Given:
    """Validated query rows as given, (k, d) of any real dtype (not copied: the caller passes a
    copy or keeps it unchanged while it is used), for tiers 2 and 3.

    `f64(idx)` gives float64 rows and their squared norms: float32, float16 and small integer
    rows as they are (exact); wider ones scaled by a power of two per row (exact, so the cosine
    is unchanged) so that squares neither overflow nor underflow. `ints(i)` gives row i as
    integers (the common power of two cancels in a cosine), made once per row."""

    __slots__ = ("a", "shape", "_plain", "_f64", "_one", "_ints")

    def __init__(self, a: np.ndarray, one: tuple[np.ndarray, float] | None = None):
        self.a = a
        self.shape = a.shape
        self._plain = a.dtype.itemsize <= 4
        self._one = one  # (float64 (d,), squared norm) of a single row, when the caller has them
        self._f64 = self._rows64(slice(None)) if one is None and a.shape[0] <= 64 else None
        if self._one is None and self._f64 is not None and a.shape[0] == 1:
            self._one = (self._f64[0][0], float(self._f64[1][0]))
        self._ints: dict[int, list[int]] = {}

    @staticmethod
    def of_row(q: np.ndarray) -> Given:
        """A Given of one (d,) query row (validated), with the fewest numpy calls."""
        a = np.asarray(q)
        if a.dtype.itemsize <= 4 and a.ndim == 1:  # exact in float64; squares cannot overflow
            v = a.astype(np.float64)
            return Given(a[None, :], (v, float(np.dot(v, v))))
        return Given(a.reshape(1, -1))

    def take(self, idx) -> Given:
        """Rows idx (a slice or index array) as a Given of their own."""
        return Given(self.a[idx])

    def _rows64(self, idx) -> tuple[np.ndarray, np.ndarray]:
        r = self.a[idx].astype(np.float64)
        if not self._plain:  # float64, int64 (rounded to float64: bound64 allows for it), longdouble
            _, e = np.frexp(np.abs(r).max(axis=1))
            r = np.ldexp(r, -e[:, None])
        return r, np.einsum("kd,kd->k", r, r)

    def f64(self, idx=slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """(float64 (m, d) rows, float64 (m,) squared norms) of rows idx (int, slice or array)."""
        if isinstance(idx, (int, np.integer)):
            idx = slice(int(idx), int(idx) + 1)
        if self._f64 is not None:
            return self._f64[0][idx], self._f64[1][idx]
        return self._rows64(idx)

    def one(self, i: int) -> tuple[np.ndarray, float]:
        """(float64 (d,), squared norm) of row i."""
        if i == 0 and self._one is not None:
            return self._one
        q64, qn2 = self.f64(i)
        return q64[0], float(qn2[0])

    def ints(self, i: int) -> list[int]:
        got = self._ints.get(i)
        if got is None:
            got = self._ints[i] = _as_ints(self.a[i])
        return got


def _as_ints(a: np.ndarray) -> list[int]:
    """Integers m_i with a_i = m_i * 2^e for one common e (exact, any real dtype)."""
    if a.dtype.kind in "iu":
        return [int(x) for x in a.tolist()]
    mant, exp = np.frexp(a)  # a = mant * 2^exp, |mant| in [0.5, 1) (0 for zeros)
    bits = np.finfo(a.dtype).nmant + 1
    m = [int(x) for x in np.ldexp(mant, bits)]  # integer-valued: exact
    e = (exp.astype(np.int64) - bits).tolist()
    low = min(ei for ei, mi in zip(e, m) if mi) if any(m) else 0
    return [mi << (ei - low) if mi else 0 for mi, ei in zip(m, e)]


@functools.lru_cache(maxsize=64)
def bound64(d: int) -> float:
    """|cosines64 - exact cosine| <= bound64(d) for d-dimensional rows (any summation order).

    The dot product and the two squared norms are sums of d terms, each within gamma_d =
    d u / (1 - d u) of theirs (u = 2^-53; |sum error| <= gamma_d |q| |v| by Cauchy-Schwarz); the
    product, square root and division add 3 u. So |c64 - c| <= gamma_d + (1 + gamma_d)(gamma_d
    + 2.5 u) < 3 gamma_d + 4 u; 4 u more covers queries wider than float64 (int64, longdouble)
    rounded to it, and 1e-270 the float64 products of a scaled query that underflow."""
    g = d * _U / (1 - d * _U)
    return 3 * g + 8 * _U + 1e-270


def cosines64(q64: np.ndarray, qn2: np.ndarray, v64: np.ndarray, vn2: np.ndarray) -> np.ndarray:
    """float64 (k, F) cosines of k rows v64 (squared norms vn2) to F query rows q64 (qn2)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # zero rows: NaN, never eligible
        return (v64 @ q64.T) / np.sqrt(vn2[:, None] * qn2[None, :])


def cosine_of(q: np.ndarray, v: np.ndarray) -> float:
    """The float64 cosine of one query (d,) as given and one stored row (d,), within bound64 of the
    exact one (for reports; decisions go through `decide_one`)."""
    q64, qn2 = Given(np.asarray(q).reshape(1, -1)).f64()
    v64 = np.asarray(v, dtype=np.float64).reshape(1, -1)
    return float(cosines64(q64, qn2, v64, np.einsum("kd,kd->k", v64, v64))[0, 0])


def exact_le(q: list[int], v: np.ndarray, t: float) -> bool:
    """Whether the exact cosine of q (integers, `Given.ints`) and the stored row v is <= t.

    With P = |q|^2 |v|^2 (integers up to a power of two that cancels) and t = a / b:
    cos <= t iff b q.v <= a sqrt(P); for a >= 0 true when q.v <= 0, else (b q.v)^2 <= a^2 P;
    for a < 0 false when q.v >= 0, else (b q.v)^2 >= a^2 P. A zero or non-finite row is never
    eligible (its cosine is undefined)."""
    if not np.isfinite(v).all():
        return False
    w = _as_ints(v)
    qv = sum(x * y for x, y in zip(q, w))
    p = sum(x * x for x in q) * sum(y * y for y in w)
    if p == 0:
        return False
    a, b = float(t).as_integer_ratio()
    lhs = b * qv
    if a >= 0:
        return lhs <= 0 or lhs * lhs <= a * a * p
    return lhs < 0 and lhs * lhs >= a * a * p


def decided(value: float, eligible: bool, t: float) -> float:
    """`value` (within bound64 of the exact cosine) on the side of t the exact decision says."""
    if eligible:
        return value if value <= t else t
    return value if value > t else math.nextafter(t, math.inf)


def decide_one(g: Given, i: int, v64: np.ndarray, t: float, e: float | None = None) -> float:
    """The cosine of query row i of g and one stored row (float64 (d,) holding float32 values),
    decided exactly against t: the float64 value, or, within e = bound64(d) of t (or for a zero
    row), the value on the side of t the integers say (`decided`)."""
    q, qq = g._one if i == 0 and g._one is not None else g.one(i)  # the hot path: a dict-free look-up
    vv = float(np.dot(v64, v64))
    c = float(np.dot(v64, q)) / math.sqrt(vv * qq) if vv > 0 else math.nan
    if not abs(c - t) > (bound64(v64.shape[0]) if e is None else e):  # near t, or NaN: exactly
        c = decided(c, exact_le(g.ints(i), v64, t), t)
    return c


def decide_pair(q: np.ndarray, v: np.ndarray, t: float) -> float:
    """`decide_one` of one query row as given (d,) and one stored float32 row (d,): for queries of
    at most 32 bits the three sums come from one 2 x 2 Gram product (the same bound64)."""
    if q.dtype.itemsize > 4 or q.ndim != 1:
        return decide_one(Given.of_row(q), 0, v.astype(np.float64), t)
    m = np.empty((2, v.shape[0]))
    m[0], m[1] = q, v
    (qq, qv), (_, vv) = np.dot(m, m.T).tolist()
    c = qv / math.sqrt(qq * vv) if vv > 0 else math.nan
    if not abs(c - t) > bound64(v.shape[0]):  # near t, or NaN: exactly
        c = decided(c, exact_le(_as_ints(q), m[1], t), t)
    return c


def decide(g: Given, v64: np.ndarray, t: float, per_row: bool = False) -> np.ndarray:
    """`decide_one` for k stored rows v64 (float64 (k, d)): float64 (k,), the largest over g's
    rows; with per_row, row i of v64 against row i of g only."""
    q64, qn2 = g.f64()
    vn2 = np.einsum("kd,kd->k", v64, v64)
    if per_row:
        with np.errstate(divide="ignore", invalid="ignore"):
            f = (np.einsum("kd,kd->k", v64, q64) / np.sqrt(vn2 * qn2))[:, None]
    else:
        f = cosines64(q64, qn2, v64, vn2)
    with np.errstate(invalid="ignore"):
        near = ~(np.abs(f - t) > bound64(v64.shape[1]))  # within the bound, or NaN (a zero row)
    for i, j in zip(*np.nonzero(near)):  # rare: decided exactly
        k = int(i if per_row else j)
        f[i, j] = decided(float(f[i, j]), exact_le(g.ints(k), v64[i], t), t)
    return f.max(axis=1)
