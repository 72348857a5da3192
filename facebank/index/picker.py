"""The picking core: a random (or the least similar) bank row that is provably dissimilar to a query.

Plain numpy over in-memory or memory-mapped arrays; storage and FAISS stay outside. One `Picker`
holds, per identity space, the bank's unit rows (same row order in every space) and one int group
code per row.

Similarity and eligibility. A query is normalised to unit norm (in float64, then stored as float32
`q`). The similarity of row t in space s is the dot product of `q` with the float32 row the bank
holds, `sim_s(t) = q . v_s[t]`. Row t is eligible iff sim_s(t) <= thresholds[s] for every space in
the query (and, in `pick_distinct`, for every face of the photo), t is in the requested groups and
t is not excluded. The decision is exact: the float32 dot product (against float16 rows when the
storage is float16) is compared with the threshold widened by a proven error bound (`exact._Space`);
rows inside that band are re-checked in float64 against the float32 row (products of two float32
are exact in float64; a float64 sum within its own error bound of the threshold is replaced by the
correctly rounded math.fsum, `_Space.refine`), so the decision is that of the exact dot product.
A float32-only check would be as ambiguous as the summation order of the BLAS kernel that ran
it; this check is not. Reported similarities come from the same computation, so a returned
row's reported similarity never exceeds its threshold.

Furthest mode returns the eligible row with the smallest score, where the score of a row is the
maximum of its similarities over the query's spaces (and faces): the worst case one observer
could see. Ties go to the lowest row number.

Random picks in one space run their draws in a compiled loop (facebank.index.screen,
`_screen.c`) when it is built: the same draws, blocks and decisions as the numpy loop here, with
one C call per pick instead of a handful of numpy calls per block.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from facebank.errors import InputError, NoEligibleTarget, UnknownSpace
from facebank.index import screen
from facebank.index.exact import _SUB16, _U16, BatchPick, PickResult, _new, _Query, _Space, rng_for_key, unit_queries
from facebank.index.groups import N_GROUPS, group_label
from facebank.index.picker_batch import batch_similarities

__all__ = ["BatchPick", "PickResult", "Picker", "rng_for_key", "unit_queries"]

_SCAN_CHUNK = 16384  # rows per scan step: bounds the scan's temporary memory (~32 MB at 512-d)
# Draws verified per rejection block: the first settles ~99% of picks at >= 40% eligible, the
# second (60 draws in all) ~99.8% at 10% eligible; larger blocks after that, up to 512.
_BLOCKS = (10, 50, 200, 512)
_SHIFTS = [np.uint64(64 - b) for b in range(64)]  # random_raw word >> (64 - bits): uniform on [0, 2^bits)
_NO_ROWS = np.empty(0, np.int64)


class Picker:
    """Picks bank rows that are dissimilar to a query in every given space.

    Args:
        vectors: space -> (n, d) unit rows, the same n and row order in every space. float32
            C-contiguous arrays (np.memmap included) are used as they are, never copied.
        groups: (n,) int group codes (see facebank.index.groups), one per row.
        dtype: "float32" keeps the rows as given; "float16" stores a half-size copy for the fast
            path (arrays already float16 are used as they are).
        exact: space -> (n, d) float32 rows used to re-check the rare rows within the float16
            error bound of a threshold (np.memmap or an h5py dataset keeps them on disk); they must be
            the rows the float16 ones were rounded from. Defaults
            to `vectors` when those are float32. Without it such rows count as too similar, and
            reported similarities are the float16 approximations.
        secret: bytes for `key=` picks (see rng_for_key); None means keys are refused.
        max_draws: random draws before the exact scan; None: min(8192, group size // 8).
    """

    def __init__(self, vectors: Mapping[str, np.ndarray], groups: np.ndarray, *, dtype: str = "float32",
                 exact: Mapping[str, np.ndarray] | None = None, secret: bytes | None = None,
                 max_draws: int | None = None):
        if dtype not in ("float32", "float16"):
            raise InputError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        if not vectors:
            raise InputError("vectors must hold at least one space")
        g = np.asarray(groups)
        if g.ndim != 1 or g.dtype.kind not in "iu":
            raise InputError(f"groups must be a 1-D integer array, got {g.dtype} {g.shape}")
        self.n = g.shape[0]
        self._spaces: dict[str, _Space] = {}
        for name, v in vectors.items():
            if not hasattr(v, "shape") or len(v.shape) != 2 or v.shape[0] != self.n or v.shape[1] == 0:
                raise InputError(f"vectors[{name!r}] must be ({self.n}, d), got {getattr(v, 'shape', None)}")
            data, ex = self._storage(name, v, dtype, None if exact is None else exact.get(name))
            self._spaces[name] = _Space(name, data, ex, self._max_norm(name, data, ex))
        order = np.argsort(g, kind="stable")  # one pass: rows of each code, increasing
        codes, starts = np.unique(g[order], return_index=True)
        ends = np.append(starts[1:], self.n)
        self._members = {int(c): order[s:e] for c, s, e in zip(codes, starts, ends)}
        # codes holding every row: their members are 0..n-1 in order, so draws need no gather
        self._union_cache: dict[tuple[int, ...], np.ndarray] = {}
        self._secret = secret
        self._max_draws = max_draws
        # `_pick_fast`'s draw constants for the whole bank (see `_draw_constants`)
        self._draw_cache: dict[int, tuple] = {}
        self._fast_draws = self._make_draw_constants(self.n)

    # -- construction helpers -------------------------------------------------------------

    @staticmethod
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

    @staticmethod
    def _max_norm(name, data, exact) -> float:
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

    @property
    def spaces(self) -> dict[str, int]:
        """space -> dimension."""
        return {s: sp.dim for s, sp in self._spaces.items()}

    def group_size(self, code: int) -> int:
        """Rows with this group code."""
        m = self._members.get(int(code))
        return 0 if m is None else int(m.size)

    # -- validation -----------------------------------------------------------------------

    def _space(self, name: str) -> _Space:
        if name not in self._spaces:
            raise UnknownSpace(f"unknown space {name!r}; this picker has {sorted(self._spaces)}")
        return self._spaces[name]

    def _prepare(self, faces: Sequence[Mapping[str, np.ndarray]], thresholds: Mapping[str, float],
                 ndim: int = 1) -> _Query:
        if not faces or not all(isinstance(f, Mapping) and f for f in faces):
            raise InputError("a query must map at least one space to an embedding")
        names = list(faces[0])
        if any(set(f) != set(names) for f in faces):
            raise InputError("every face of a photo must give the same spaces")
        for s in thresholds:
            self._space(s)
        parts = []
        for s in names:
            sp = self._space(s)
            if s not in thresholds:
                raise InputError(f"no threshold given for space {s!r}")
            thr = thresholds[s]
            if isinstance(thr, bool) or not isinstance(thr, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(thr):
                raise InputError(f"threshold for space {s!r} must be a finite number, got {thr!r}")
            q = [unit_queries(f[s], space=s, dim=sp.dim, ndim=ndim) for f in faces]
            q = q[0] if len(q) == 1 else np.concatenate(q)
            parts.append((sp, q, float(thr)))
        return _Query(parts)

    def _rng(self, rng, key) -> np.random.Generator:
        if key is not None:
            if rng is not None:
                raise InputError("give rng or key, not both")
            if self._secret is None:
                raise InputError("key picks need a Picker created with secret=")
            return rng_for_key(key, self._secret)
        if rng is None:
            return np.random.default_rng()
        if not isinstance(rng, np.random.Generator):
            raise InputError("rng must be a numpy.random.Generator")
        return rng

    def _group(self, groups: Sequence[int] | None) -> tuple[np.ndarray | None, str]:
        """(member rows, increasing, or None for all rows; a description of the group)."""
        if groups is None:
            return None, "all"
        if isinstance(groups, (int, np.integer)):
            groups = [groups]
        codes = []
        for c in groups:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
                raise InputError(f"group codes must be ints, got {c!r}")
            codes.append(int(c))
        key = tuple(sorted(set(codes)))
        desc = "+".join(group_label(c) if 0 <= c < N_GROUPS else f"code {c}" for c in key)
        if len(key) == 1:
            return self._members.get(key[0], np.empty(0, np.intp)), desc
        if key not in self._union_cache:
            if len(self._union_cache) >= 64:
                self._union_cache.clear()
            parts = [self._members[c] for c in key if c in self._members]
            self._union_cache[key] = np.sort(np.concatenate(parts)) if parts else np.empty(0, np.intp)
        return self._union_cache[key], desc

    # -- exact verification ---------------------------------------------------------------

    def _verify(self, qry: _Query, rows: np.ndarray | slice, want_score: bool = False):
        """Exact eligibility of rows (bool (k,)) and, if asked, approximate scores float32 (k,)."""
        ok = None
        score = None
        for sp, q, q64, thr, m in qry.parts:
            s = sp.block(rows) @ q[0] if q.shape[0] == 1 else (sp.block(rows) @ q.T).max(axis=1)
            good = s <= thr - m
            if np.count_nonzero(s <= thr + m) > np.count_nonzero(good):
                # rare: rows within the error bound are decided in float64 against the float32 rows
                border = np.flatnonzero((s > thr - m) & (s <= thr + m))
                idx = border + rows.start if isinstance(rows, slice) else rows[border]
                ex = sp.exact_many(idx, q64, thr)
                if ex is not None:  # else (float16 rows alone) the band counts as too similar
                    good[border] = ex <= thr
            ok = good if ok is None else ok & good
            if want_score:
                score = s if score is None else np.maximum(score, s)
        return ok, score

    def _first_eligible(self, qry: _Query, rows: np.ndarray, excluded: set[int]) -> int:
        """Position of the first eligible, not excluded row of a small block, or -1.

        The fast path of random picks: one gather and one float32 dot product per space, then
        scalar checks of the few rows that may be eligible, in draw order. Rows inside the error
        band are decided exactly (`_Space.exact_one`); rows below it need no float64 work.
        """
        one = qry.one
        if one is not None:
            sp, q, q64, thr, lo, hi = one
            blk = sp.data.take(rows, axis=0)
            s = np.dot(blk if sp.f32 else blk.astype(np.float32), q)
            if s.size <= 32:  # Python scalars beat three more numpy calls on a small block
                cand = [i for i, x in enumerate(s.tolist()) if x <= hi]
            else:
                cand = np.flatnonzero(s <= hi).tolist()
            for i in cand:
                if excluded and int(rows[i]) in excluded:
                    continue
                if s[i] > lo:  # within the error bound: decide exactly
                    ex = sp.exact_one(int(rows[i]), q64, thr)
                    if ex is None or ex > thr:
                        continue
                return i
            return -1
        sims, maybe = [], None
        for sp, q, _, thr, m in qry.parts:
            blk = sp.block(rows)
            s = np.dot(blk, q[0]) if q.shape[0] == 1 else (blk @ q.T).max(axis=1)
            mb = s <= thr + m
            maybe = mb if maybe is None else maybe & mb
            sims.append(s)
        for i in np.flatnonzero(maybe).tolist():
            if excluded and int(rows[i]) in excluded:
                continue
            for (sp, q, q64, thr, m), s in zip(qry.parts, sims):
                if s[i] > thr - m:  # within the error bound: decide exactly
                    ex = sp.exact_one(int(rows[i]), q64, thr)
                    if ex is None or ex > thr:
                        break
            else:
                return i
        return -1

    def _exact_scores(self, qry: _Query, rows: np.ndarray) -> dict[str, np.ndarray]:
        """space -> float64 (k,) similarity (max over faces); approximations without a float32 source."""
        out = {}
        for sp, q, q64, thr, m in qry.parts:
            ex = sp.exact_rows(rows)
            out[sp.name] = (ex @ q64.T).max(axis=1) if ex is not None else \
                (sp.block(rows) @ q.T).max(axis=1).astype(np.float64)
        return out

    def _scan(self, qry: _Query, members, excluded: np.ndarray, want_score: bool):
        """Exact scan of a group: (eligible rows int64, their approx scores or None, group size)."""
        m = self.n if members is None else members.size
        found, scores = [], []
        for i in range(0, m, _SCAN_CHUNK):
            j = min(m, i + _SCAN_CHUNK)
            rows = slice(i, j) if members is None else members[i:j]
            ok, score = self._verify(qry, rows, want_score)
            idx = np.flatnonzero(ok)
            found.append(idx + i if members is None else rows[idx])
            if want_score:
                scores.append(score[idx])
        elig = np.concatenate(found) if found else np.empty(0, np.intp)
        score = np.concatenate(scores) if want_score and scores else None
        size = m
        if excluded.size:
            keep = ~np.isin(elig, excluded)
            elig = elig[keep]
            score = None if score is None else score[keep]
            in_group = excluded if members is None else excluded[np.isin(excluded, members)]
            size -= int(np.count_nonzero((in_group >= 0) & (in_group < self.n)))
        return elig, score, size

    def _no_target(self, qry, desc, size, n_elig, prefix=""):
        thr = {sp.name: thr for sp, _, _, thr, _ in qry.parts}
        return NoEligibleTarget(
            f"{prefix}no eligible target in group {desc}: {size} faces, all {size - n_elig} too similar "
            f"(thresholds {thr})", group_size=size, too_similar=size - n_elig, group=desc)

    # -- picking --------------------------------------------------------------------------

    def _draws_limit(self, m: int) -> int:
        return self._max_draws if self._max_draws is not None else min(8192, m // 8)

    def _pick_one(self, qry: _Query, groups, mode: str, rng: np.random.Generator,
                  exclude: Iterable[int], prefix: str = "") -> PickResult:
        if mode not in ("random", "furthest"):
            raise InputError(f"mode must be 'random' or 'furthest', got {mode!r}")
        members, desc = self._group(groups)
        excluded_set = set(map(int, exclude))
        m = self.n if members is None else members.size
        tries = 0
        if mode == "random" and m and screen.AVAILABLE and all(p[0].screen for p in qry.parts) \
                and screen.usable_members(members):
            # The loop below, compiled (facebank.index.screen): the same draws and decisions.
            parts = tuple((sp.data, sp.dim, q, thr - mg, thr + mg) for sp, q, _, thr, mg in qry.parts)
            row, tries = screen.screen_one(rng, self.n, parts, members, m, qry.parts[0][1].shape[0],
                                           self._draw_constants(m),
                                           np.array(sorted(excluded_set), np.int64) if excluded_set else _NO_ROWS,
                                           lambda r: self._band_eligible(qry, r))
            if row >= 0:
                return self._result(qry, row, tries, "rejection")
        elif mode == "random" and m:
            # Rejection sampling. Every draw is an independent uniform member of the group; we
            # return the first draw that is eligible and not excluded. Conditioned on that draw
            # being eligible it is uniform over the eligible set E, whatever its position. If all
            # draws fail we scan and choose uniformly from E with fresh randomness. The failure
            # event does not depend on which eligible row would have been returned, so
            # P(t) = P(success) / |E| + P(failure) / |E| = 1 / |E| for every t in E.
            #
            # Draw j of the stream is the j-th raw 64-bit word whose top `bits` bits are < m (the
            # others are discarded: what is kept is uniform on [0, m)). Blocks only batch the
            # verification: the returned row is the first eligible draw of the stream whatever
            # the block sizes, and a block never reaches past `limit` draws, so the stopping rule
            # depends on counts alone. The block sizes are fixed (_BLOCKS, in draws), so how much
            # of the generator a pick consumes depends only on the query and the bank, never on
            # earlier picks: seeded and keyed sequences of picks (pick_distinct) reproduce.
            limit, bits = self._draws_limit(m), max(1, (m - 1).bit_length())
            raw, shift = rng.bit_generator.random_raw, _SHIFTS[bits]
            full, scale = m == 1 << bits, (1 << bits) / m  # raw words per draw, on average
            nb = 0
            while tries < limit:
                want = _BLOCKS[nb] if nb < len(_BLOCKS) else _BLOCKS[-1]
                nb += 1
                draw = raw(min(math.ceil(want * scale), limit - tries)) >> shift
                if not full:
                    draw = draw[draw < m]
                    if not draw.size:
                        continue
                rows = draw if members is None else members.take(draw)
                i = self._first_eligible(qry, rows, excluded_set)
                if i >= 0:
                    return self._result(qry, int(rows[i]), tries + i + 1, "rejection")
                tries += draw.size
        return self._scan_pick(qry, members, desc, mode, rng, excluded_set, tries, prefix)

    def _scan_pick(self, qry: _Query, members, desc: str, mode: str, rng: np.random.Generator,
                   excluded_set: set[int], tries: int, prefix: str = "") -> PickResult:
        """The exact scan of `_pick_one`: after `tries` failed draws (random) or directly (furthest)."""
        m = self.n if members is None else members.size
        excluded = np.array(sorted(excluded_set), dtype=np.intp)
        elig, score, size = self._scan(qry, members, excluded, want_score=mode == "furthest")
        if elig.size == 0:
            raise self._no_target(qry, desc, size, 0, prefix)
        if mode == "random":
            row = int(elig[rng.integers(elig.size)])
        else:
            # Approximate scores are within qry.margin of the exact ones, so the true minimum is
            # among rows whose approximation is within 2 * margin of the smallest approximation.
            cand = elig[score <= score.min() + 2 * qry.margin]
            exact = np.max(np.stack(list(self._exact_scores(qry, cand).values())), axis=0)
            row = int(cand[np.argmin(exact)])  # cand is increasing: ties go to the lowest row
        return self._result(qry, row, tries + m, "scan" if mode == "random" else "furthest")

    def furthest_among(self, faces: Sequence[Mapping[str, np.ndarray]], candidates: np.ndarray, *,
                       thresholds: Mapping[str, float], groups: Sequence[int] | int | None = None,
                       exclude: Iterable[int] = ()) -> PickResult | None:
        """The least similar eligible row among `candidates`, decided exactly; None if none is.

        For approximate indexes (IVF, HNSW): they propose rows, this decides. The result is the
        true minimum over the candidates, not necessarily over the whole group.
        """
        qry = self._prepare(list(faces), thresholds)
        members, _ = self._group(groups)
        cand = np.unique(np.asarray(candidates, dtype=np.intp).ravel())
        cand = cand[(cand >= 0) & (cand < self.n)]  # FAISS pads missing results with -1
        if members is not None:
            cand = cand[np.isin(cand, members)]
        excluded = np.array(sorted({int(r) for r in exclude}), dtype=np.intp)
        elig, score, _ = self._scan(qry, cand, excluded, want_score=True)
        if elig.size == 0:
            return None
        close = elig[score <= score.min() + 2 * qry.margin]  # as in _pick_one: exact among the close ones
        exact = np.max(np.stack(list(self._exact_scores(qry, close).values())), axis=0)
        return self._result(qry, int(close[np.argmin(exact)]), int(cand.size), "index_furthest")

    def _result(self, qry: _Query, row: int, tries: int, method: str) -> PickResult:
        sims = {}
        for sp, q, q64, thr, _ in qry.parts:
            v = sp.exact_one(row, q64, thr)  # exact where it decides: never contradicts the pick
            if v is None:  # float16 rows alone: their float32 approximation
                v = float((q @ np.asarray(sp.data[row], dtype=np.float32)).max())
            sims[sp.name] = v
        return PickResult(row, sims, tries, method)

    def pick(self, query: Mapping[str, np.ndarray], *, thresholds: Mapping[str, float],
             groups: Sequence[int] | int | None = None, mode: str = "random",
             rng: np.random.Generator | None = None, key: bytes | str | None = None,
             exclude: Iterable[int] = ()) -> PickResult:
        """Pick one row dissimilar to `query` in every space it gives.

        Args:
            query: space -> (d,) embedding, any real dtype (normalised here; never modified).
            thresholds: space -> largest allowed similarity; needed for every space of the query.
            groups: group codes to pick from (their union); None: all rows.
            mode: "random" (uniform over the eligible rows) or "furthest" (smallest score).
            rng / key: randomness; key (bytes or str) derives it with the picker's secret.
            exclude: row numbers never returned.
        Raises:
            InvalidEmbedding, UnknownSpace, InputError, NoEligibleTarget (with counts).
        """
        if mode == "random" and type(query) is dict and len(query) == 1 and type(thresholds) is dict \
                and len(thresholds) == 1:
            res = self._pick_fast(query, thresholds, groups, rng, key, exclude)
            if res is not None:
                return res
        qry = self._prepare([query], thresholds)
        return self._pick_one(qry, groups, mode, self._rng(rng, key), exclude)

    def _draw_constants(self, m: int) -> tuple:
        """Draw constants of a group of m rows: (draw limit, shift, whether 2^bits == m, raw words
        per block, bits, the words as int64 and the largest block, for the compiled loop)."""
        if m == self.n:
            return self._fast_draws
        consts = self._draw_cache.get(m)
        if consts is None:
            consts = self._make_draw_constants(m)
            if len(self._draw_cache) < 256:
                self._draw_cache[m] = consts
        return consts

    def _make_draw_constants(self, m: int) -> tuple:
        bits = max(1, (m - 1).bit_length())
        scale = (1 << bits) / max(m, 1)  # raw words per draw, on average
        words = tuple(math.ceil(b * scale) for b in _BLOCKS)
        return (self._draws_limit(m), _SHIFTS[bits], m == 1 << bits, words, bits, np.array(words, np.int64),
                max(words))

    def _pick_fast(self, query, thresholds, groups, rng, key, exclude=()) -> PickResult | None:
        """`pick` for the common case, with the fewest numpy calls: one float32 query in one space
        (float32 or float16 rows), random mode, any groups and exclusions. None when the case is not
        that one, or the group is empty (the generic path then validates, raises or picks).

        The same computation as the generic path, step for step: the same float32 unit query
        (`unit_queries`), the same raw words of the generator (`_pick_one`'s draws, blocks and
        limit), the same error band and exact re-checks (`_Space.exact_one`), the same reported
        similarity; only the per-call machinery (`_Query`, `_group`, `_result`) is skipped, and
        the draws run in the compiled loop (facebank.index.screen) when it is built.
        """
        (name, q), = query.items()
        sp = self._spaces.get(name)
        if sp is None:
            return None
        thr = thresholds.get(name)
        # a finite float threshold (np.float64 included); anything else takes the generic path
        if not isinstance(thr, float) or not math.isfinite(thr) or type(q) is not np.ndarray \
                or q.dtype != np.float32 or q.shape != (sp.dim,):
            return None
        v = q.astype(np.float64)  # as unit_queries: normalised in float64, rounded to float32
        ss = float(np.dot(v, v))  # squares of float32 values cannot overflow float64
        if not 1e-280 < ss < math.inf:  # NaN, infinity, zero or tiny: the generic path decides
            return None
        qf = (v * (1.0 / math.sqrt(ss))).astype(np.float32)
        members, desc = (None, "all") if groups is None else self._group(groups)
        m = self.n if members is None else members.size
        if m == 0:
            return None
        if m == self.n:
            members = None  # a group of every row: its members are 0..n-1, the draws themselves
        excluded = set(map(int, exclude)) if exclude else ()
        gen = rng if key is None and type(rng) is np.random.Generator else self._rng(rng, key)
        thr = float(thr)
        consts = self._draw_constants(m)
        q64 = qf.astype(np.float64)
        if sp.screen and screen.AVAILABLE and screen.usable_members(members):
            row, n_tries = screen.screen_one(
                gen, self.n, ((sp.data, sp.dim, qf[None, :], thr - sp.margin, thr + sp.margin),), members, m, 1,
                consts, np.array(sorted(excluded), np.int64) if excluded else _NO_ROWS,
                lambda r: self._eligible_in_band(sp, r, q64, thr))
            ex = None
        else:
            row, ex, n_tries = self._draws_numpy(sp, qf, q64, thr, members, m, excluded, gen, consts)
        if row < 0:
            qry = _Query([(sp, qf[None, :], thr)])
            return self._scan_pick(qry, members, desc, "random", gen, set(excluded), n_tries)
        if ex is None:
            ex = self._exact_fast(sp, row, q64, thr)
            if ex is None:  # float16 rows alone: their float32 approximation, as `_result` gives it
                ex = float((qf[None, :] @ np.asarray(sp.data[row], dtype=np.float32)).max())
        res = _new(PickResult)  # PickResult(row, ...) without the frozen __init__'s cost
        res.__dict__.update(row=row, similarities={name: ex}, tries=n_tries, method="rejection")
        return res

    @staticmethod
    def _exact_fast(sp: _Space, row: int, q64: np.ndarray, thr: float) -> float | None:
        """`_Space.exact_one` for one face, in fewer numpy calls: exact where it decides; None
        without float32 rows (float16 storage alone)."""
        if sp.src is None:
            return None
        r64 = np.asarray(sp.src[row], dtype=np.float64)
        ex = float(np.dot(r64, q64))
        if -sp.e64 <= ex - thr <= sp.e64:
            ex = math.fsum((r64 * q64).tolist())
        return ex

    def _band_eligible(self, qry: _Query, row: int) -> bool:
        """`_first_eligible`'s decision on one row that lies within the error band of some space:
        exact where float32 rows exist; float16 rows alone count below the band only."""
        for sp, q, q64, thr, mg in qry.parts:
            ex = sp.exact_one(row, q64, thr)
            if ex is None:
                if float((sp.block(np.array([row])) @ q.T).max()) > thr - mg:
                    return False
            elif ex > thr:
                return False
        return True

    def _eligible_in_band(self, sp: _Space, row: int, q64: np.ndarray, thr: float) -> bool:
        """The exact decision on a row within the error band (too similar without float32 rows)."""
        ex = self._exact_fast(sp, row, q64, thr)
        return ex is not None and ex <= thr

    def _draws_numpy(self, sp: _Space, qf, q64, thr: float, members, m: int, excluded, gen, consts):
        """The rejection loop of `_pick_one` for one float32 face in one space:
        (row or -1, its exact similarity or None, draws made)."""
        limit, shift, full, words = consts[:4]
        raw = gen.bit_generator.random_raw
        data = sp.data
        lo, hi = thr - sp.margin, thr + sp.margin
        tries = nb = 0
        while tries < limit:  # exactly `_pick_one`'s rejection loop (see there)
            want = words[nb] if nb < len(words) else words[-1]
            nb += 1
            draw = raw(min(want, limit - tries)) >> shift
            if not full:
                draw = draw[draw < m]
                if not draw.size:
                    continue
            rows = draw if members is None else members.take(draw)
            blk = data.take(rows, axis=0)
            s = np.dot(blk if sp.f32 else blk.astype(np.float32), qf).tolist()
            for i, x in enumerate(s):
                if x > hi:
                    continue
                row = int(rows[i])
                if excluded and row in excluded:
                    continue
                if x > lo:  # within the error band: the exact value decides
                    ex = self._exact_fast(sp, row, q64, thr)
                    if ex is None or ex > thr:
                        continue
                    return row, ex, tries + i + 1
                return row, None, tries + i + 1
            tries += draw.size
        return -1, None, tries

    def _batch(self, qry: _Query, groups, members, desc: str, excluded_set: set[int], gen) -> BatchPick:
        """Random picks for the B queries of `qry`, one after another from one generator: pick b
        equals `pick` of query row b (in every space) with the generator where pick b - 1 left it."""
        parts = qry.parts
        b_all = parts[0][1].shape[0]
        m = self.n if members is None else members.size
        if m == self.n:
            members = None  # a group of every row: its members are 0..n-1, the draws themselves

        def one(b: int) -> _Query:  # query b alone, as `pick` sees it
            return _Query([(sp, q[b:b + 1], thr) for sp, q, _, thr, _ in parts])

        if not (m and screen.AVAILABLE and all(p[0].screen for p in parts) and screen.usable_members(members)):
            res = [self._pick_one(one(b), groups, "random", gen, excluded_set, prefix=f"query {b}: ")
                   for b in range(b_all)]
            return _as_arrays(res, [p[0].name for p in parts])
        excluded = np.array(sorted(excluded_set), np.int64) if excluded_set else _NO_ROWS

        def on_limit(b: int, tries: int) -> int:  # as `_scan_pick`: a uniform choice after a scan
            qb = one(b)
            elig, _, size = self._scan(qb, members, excluded, want_score=False)
            if elig.size == 0:
                raise self._no_target(qb, desc, size, 0, prefix=f"query {b}: ")
            return int(elig[gen.integers(elig.size)])

        rows, tries, scanned = screen.screen_picks(
            gen, self.n, tuple((sp.data, sp.dim, q, thr - mg, thr + mg) for sp, q, _, thr, mg in parts), members, m,
            b_all, 1, self._draw_constants(m), excluded, lambda b, row: self._band_eligible(one(b), row), on_limit)
        tries[scanned] += m
        return BatchPick(rows, batch_similarities(qry, rows), tries, np.where(scanned, "scan", "rejection"))

    def pick_distinct(self, queries: Sequence[Mapping[str, np.ndarray]], *, thresholds: Mapping[str, float],
                      groups: Sequence[int] | int | None = None,
                      face_groups: Sequence[Sequence[int] | int | None] | None = None, mode: str = "random",
                      rng: np.random.Generator | None = None, key: bytes | str | None = None,
                      exclude: Iterable[int] = ()) -> list[PickResult]:
        """Distinct rows for all faces of one photo, each dissimilar to EVERY face of the photo.

        Args:
            queries: one space -> (d,) mapping per real face (the same spaces for all).
            groups: group codes shared by all faces; face_groups: per-face codes (overrides).
            Other arguments as in `pick`; results are in face order.
        """
        if face_groups is not None and len(face_groups) != len(queries):
            raise InputError("face_groups must give one entry per face")
        qry = self._prepare(list(queries), thresholds)
        gen = self._rng(rng, key)
        taken = set(int(r) for r in exclude)
        out = []
        for f in range(len(queries)):
            g = groups if face_groups is None else face_groups[f]
            res = self._pick_one(qry, g, mode, gen, taken, prefix=f"face {f}: ")
            taken.add(res.row)
            out.append(res)
        return out

    def pick_batch(self, queries: Mapping[str, np.ndarray], *, thresholds: Mapping[str, float],
                   groups: Sequence[int] | int | None = None, mode: str = "random",
                   rng: np.random.Generator | None = None, keys: Sequence[bytes | str] | None = None,
                   exclude: Iterable[int] = (), as_arrays: bool = False) -> list[PickResult] | BatchPick:
        """Pick one row for each of B queries, each with the semantics of `pick`.

        Random picks are the picks `pick` would make for the (normalised) query rows one after
        another from `rng`, drawn for the whole batch in one call of the compiled loop.

        Args:
            queries: space -> (B, d) embeddings, the same B in every space.
            keys: B keys (then each pick equals `pick(..., key=keys[i])`); else one shared rng.
            as_arrays: return a BatchPick of arrays instead of B PickResults.
        Raises:
            NoEligibleTarget naming the first query that has none.
        """
        if keys is not None or mode != "random":
            qs = {s: np.asarray(v) for s, v in queries.items()}
            sizes = {v.shape[0] if v.ndim == 2 else -1 for v in qs.values()}
            if keys is not None and sizes != {len(keys)}:
                raise InputError("keys must give one key per query")
            gen = None if keys is not None else self._rng(rng, None)
            res = [self.pick({s: v[i] for s, v in qs.items()}, thresholds=thresholds, groups=groups, mode=mode,
                             rng=gen, key=None if keys is None else keys[i], exclude=exclude)
                   for i in range(max(sizes))]
            return _as_arrays(res, list(queries)) if as_arrays else res
        qry = self._prepare([queries], thresholds, ndim=2)
        bsz = {q.shape[0] for _, q, _, _, _ in qry.parts}
        if len(bsz) != 1:
            raise InputError("every space must give the same number of queries")
        gen = self._rng(rng, None)
        members, desc = self._group(groups)
        excluded_set = {int(r) for r in exclude}
        out = self._batch(qry, groups, members, desc, excluded_set, gen)
        return out if as_arrays else _as_list(out)


def _as_list(b: BatchPick) -> list[PickResult]:
    cols = {s: v.tolist() for s, v in b.similarities.items()}
    return [PickResult(r, {s: c[i] for s, c in cols.items()}, t, m)
            for i, (r, t, m) in enumerate(zip(b.rows.tolist(), b.tries.tolist(), b.methods.tolist()))]


def _as_arrays(res: list[PickResult], names: list[str]) -> BatchPick:
    return BatchPick(np.array([r.row for r in res], np.int64),
                     {s: np.array([r.similarities[s] for r in res]) for s in names},
                     np.array([r.tries for r in res], np.int64), np.array([r.method for r in res]))
