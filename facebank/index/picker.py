"""The picking core: a random (or the least similar) bank row that is provably dissimilar to a query.

Plain numpy over in-memory or memory-mapped arrays; storage and FAISS stay outside. One `Picker`
holds, per identity space, the bank's unit rows (same row order in every space) and one int group
code per row.

Similarity and eligibility. The similarity of row t in space s is the exact cosine of the query
as given and the float32 row the bank holds (facebank.index.cosine defines it). Row t is eligible
iff sim_s(t) <= thresholds[s] for every space in the query (and, in `pick_distinct`, for every
face of the photo), t is in the requested groups and t is not excluded. The decision is exact:
a float32 screen (the float32 unit query `q` dotted with the rows, float16 ones when the storage
is float16) is compared with the threshold widened by a proven error bound (`exact.Space.margin`);
rows inside that band are decided by the exact check (`Space.exact_one`: float64 within its own
bound, integers inside that). Reported similarities come from the exact check too, and every
returned row's is confirmed at or below its threshold (`Space.confirm`).

Furthest mode returns the eligible row with the smallest score, where the score of a row is the
maximum of its similarities over the query's spaces (and faces): the worst case one observer
could see. Ties go to the lowest row number.

Random picks draw in one loop (facebank.index.draws): the numpy reference loop, or its compiled
twin (facebank.index.screen, `_screen.c`) when it is built, with the same draws, blocks and
decisions and one C call per pick instead of a handful of numpy calls per block. The pieces:
exact.py (spaces, the exact checks), query.py (validated queries), draws.py (the loop),
scan.py (the exact scan), picker_batch.py (batches); this module binds them to a bank's rows.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from facebank.errors import InputError, UnknownSpace
from facebank.index import cosine, scan
from facebank.index.draws import DrawPlan, draw_plan, random_draws
from facebank.index.cosine import Given, unit_queries
from facebank.index.exact import BatchPick, PickResult, Space, make_space, rng_for_key
from facebank.index.groups import N_GROUPS, group_label
from facebank.index.margin import MarginCut, MarginSampler, check_margin
from facebank.index import picker_batch
from facebank.index.query import Query, make_query

__all__ = ["BatchPick", "PickResult", "Picker", "rng_for_key"]

MODES = ("random", "furthest")


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
        norms: space -> (smallest, largest) norm of its float32 rows, as a build recorded them
            (saves reading every row here; see exact.make_space for why a wrong one is harmless).
    """

    def __init__(self, vectors: Mapping[str, np.ndarray], groups: np.ndarray, *, dtype: str = "float32",
                 exact: Mapping[str, np.ndarray] | None = None, secret: bytes | None = None,
                 max_draws: int | None = None, norms: Mapping[str, tuple[float, float]] | None = None):
        if dtype not in ("float32", "float16"):
            raise InputError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        if not vectors:
            raise InputError("vectors must hold at least one space")
        g = np.asarray(groups)
        if g.ndim != 1 or g.dtype.kind not in "iu":
            raise InputError(f"groups must be a 1-D integer array, got {g.dtype} {g.shape}")
        self.n = g.shape[0]
        self._spaces: dict[str, Space] = {}
        for name, v in vectors.items():
            if not hasattr(v, "shape") or len(v.shape) != 2 or v.shape[0] != self.n or v.shape[1] == 0:
                raise InputError(f"vectors[{name!r}] must be ({self.n}, d), got {getattr(v, 'shape', None)}")
            self._spaces[name] = make_space(name, v, dtype, None if exact is None else exact.get(name),
                                            None if norms is None else norms.get(name))
        order = np.argsort(g, kind="stable")  # one pass: rows of each code, increasing
        codes, starts = np.unique(g[order], return_index=True)
        ends = np.append(starts[1:], self.n)
        self._members = {int(c): order[s:e] for c, s, e in zip(codes, starts, ends)}
        self._union_cache: dict[tuple[int, ...], np.ndarray] = {}
        self._rows_of: dict[tuple[int, ...], tuple[np.ndarray, str]] = {}  # `group_rows` of plain int tuples
        self._secret = secret
        self._max_draws = max_draws
        self._plans: dict[int, DrawPlan] = {}  # draw plans per group size (the whole bank's apart)
        self._all_rows = self._new_plan(self.n)
        self._margins = MarginSampler(self._spaces, self.n)

    @property
    def spaces(self) -> dict[str, int]:
        """space -> dimension."""
        return {s: sp.dim for s, sp in self._spaces.items()}

    def group_size(self, code: int) -> int:
        """Rows with this group code."""
        m = self._members.get(int(code))
        return 0 if m is None else int(m.size)

    def draw_plan(self, m: int) -> DrawPlan:
        """The draw plan of a group of m rows, computed once per size (cached)."""
        if m == self.n:
            return self._all_rows
        plan = self._plans.get(m)
        if plan is None:
            plan = self._new_plan(m)
            if len(self._plans) < 256:
                self._plans[m] = plan
        return plan

    def _new_plan(self, m: int) -> DrawPlan:
        return draw_plan(m, self._max_draws if self._max_draws is not None else min(8192, m // 8))

    # -- what a session needs: validated queries, generators, picks of a prepared query ------

    def space(self, name: str) -> Space:
        if name not in self._spaces:
            raise UnknownSpace(f"unknown space {name!r}; this picker has {sorted(self._spaces)}")
        return self._spaces[name]

    def prepare(self, faces: Sequence[Mapping[str, np.ndarray]], thresholds: Mapping[str, float],
                ndim: int = 1) -> Query:
        """A validated Query of one or more faces (ndim 1) or one batch (ndim 2) with thresholds."""
        if not faces or not all(isinstance(f, Mapping) and f for f in faces):
            raise InputError("a query must map at least one space to an embedding")
        names = list(faces[0])
        if any(set(f) != set(names) for f in faces):
            raise InputError("every face of a photo must give the same spaces")
        for s in thresholds:
            self.space(s)
        parts = []
        for s in names:
            sp = self.space(s)
            if s not in thresholds:
                raise InputError(f"no threshold given for space {s!r}")
            thr = thresholds[s]
            if isinstance(thr, bool) or not isinstance(thr, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(thr):
                raise InputError(f"threshold for space {s!r} must be a finite number, got {thr!r}")
            q = [unit_queries(f[s], space=s, dim=sp.dim, ndim=ndim) for f in faces]
            q = q[0] if len(q) == 1 else np.concatenate(q)
            given = np.concatenate([np.array(f[s]).reshape(-1, sp.dim) for f in faces])  # a copy, as given
            parts.append((sp, q, float(thr), Given(given)))
        return make_query(parts)

    def generator(self, rng=None, key: bytes | str | None = None) -> np.random.Generator:
        """The generator a pick draws from: `rng`, one derived from `key` and the secret, or a fresh one."""
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

    def group_rows(self, groups: Sequence[int] | int | None) -> tuple[np.ndarray | None, str]:
        """(member rows, increasing, or None for all rows; a description of the group)."""
        if groups is None:
            return None, "all"
        if type(groups) is tuple and all(type(c) is int for c in groups):  # a session's plan: cached
            hit = self._rows_of.get(groups)
            if hit is None:
                hit = self._group_rows(groups)
                if len(self._rows_of) < 1024:
                    self._rows_of[groups] = hit
            return hit
        return self._group_rows(groups)

    def _group_rows(self, groups) -> tuple[np.ndarray | None, str]:
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

    def margin_cut(self, qry: Query, groups, margin: float, exclude: Iterable[int] = ()) -> MarginCut:
        """The privacy margin's cut for a prepared query in a group (facebank.index.margin)."""
        members, _ = self.group_rows(groups)
        parts = {p.space.name: (p.q, p.threshold) for p in qry.parts}
        return self._margins.cut(parts, members, _group_key(groups), check_margin(margin), {int(r) for r in exclude})

    def _query_cut(self, query, thresholds, groups, margin, exclude) -> MarginCut:
        """`margin_cut` of one face; a float32 (d,) query in one space skips building a Query
        (the same float32 unit row: `cosine.unit_row`)."""
        if type(query) is dict and len(query) == 1 and type(thresholds) is dict and len(thresholds) == 1:
            (name, q), = query.items()
            sp, thr = self._spaces.get(name), thresholds.get(name)
            if sp is not None and type(q) is np.ndarray and q.dtype == np.float32 and q.shape == (sp.dim,) \
                    and isinstance(thr, float) and math.isfinite(thr):
                got = cosine.unit_row(q)
                if got is not None:
                    qf = got[0][None, :]
                    members, _ = (None, "all") if groups is None else self.group_rows(groups)
                    return self._margins.cut({name: (qf, thr)}, members, _group_key(groups), check_margin(margin),
                                             {int(r) for r in exclude} if exclude else frozenset())
        return self.margin_cut(self.prepare([query], thresholds), groups, margin, exclude)

    def tightened(self, qry: Query, groups, margin: float, exclude: Iterable[int] = ()) -> tuple[Query, MarginCut | None]:
        """`qry` with each threshold lowered to the margin's cut, and the cut (None for margin 1)."""
        if margin == 1.0:
            return qry, None
        cut = self.margin_cut(qry, groups, margin, exclude)
        return make_query([(p.space, p.q, cut.thresholds[p.space.name], p.given) for p in qry.parts]), cut

    def pick_query(self, qry: Query, groups, mode: str, rng: np.random.Generator, exclude: Iterable[int],
                   prefix: str = "", margin: float = 1.0) -> PickResult:
        """One pick for a prepared query (every face of it) from `rng`; `prefix` starts errors.
        `margin` < 1 draws among the furthest `margin` fraction of the group only (MarginCut)."""
        if mode not in MODES:
            raise InputError(f"mode must be 'random' or 'furthest', got {mode!r}")
        qry, cut = self.tightened(qry, groups, margin, exclude)
        if cut is not None:
            return _with_cut(self.pick_query(qry, groups, mode, rng, exclude, prefix), cut)
        members, desc = self.group_rows(groups)
        excluded = set(map(int, exclude))
        m = self.n if members is None else members.size
        tries = 0
        if mode == "random" and m:
            row, _, tries = random_draws(rng, self.n, self.draw_plan(m), members, qry.screen_parts(), qry.rows,
                                         excluded, qry.admits, lambda rows: (self._first_eligible(qry, rows, excluded),
                                                                             None))
            if row >= 0:
                return self._result(qry, row, tries, "rejection")
        return self.scan_pick(qry, members, desc, mode, rng, excluded, tries, prefix)

    # -- the checks of one block of draws ------------------------------------------------------

    @staticmethod
    def _first_eligible(qry: Query, rows: np.ndarray, excluded: set[int]) -> int:
        """Position of the first eligible, not excluded row of a small block, or -1.

        One gather and one float32 dot product per space, then scalar checks of the few rows
        that may be eligible, in draw order. Rows inside the error band are decided exactly
        (`QueryPart.admits`); rows below it need no float64 work.
        """
        one = qry.single
        if one is not None:
            sp = one.space
            blk = sp.data.take(rows, axis=0)
            s = np.dot(blk if sp.f32 else blk.astype(np.float32), one.q[0])
            hi, lo = one.hi, one.lo
            if s.size <= 32:  # Python scalars beat three more numpy calls on a small block
                cand = [i for i, x in enumerate(s.tolist()) if x <= hi]
            else:
                cand = np.flatnonzero(s <= hi).tolist()
            for i in cand:
                if excluded and int(rows[i]) in excluded:
                    continue
                if s[i] > lo and not one.admits(int(rows[i]), float(s[i])):  # in the band: exact
                    continue
                return i
            return -1
        sims, maybe = [], None
        for p in qry.parts:
            blk = p.space.block(rows)
            s = np.dot(blk, p.q[0]) if p.q.shape[0] == 1 else (blk @ p.q.T).max(axis=1)
            mb = s <= p.hi
            maybe = mb if maybe is None else maybe & mb
            sims.append(s)
        for i in np.flatnonzero(maybe).tolist():
            if excluded and int(rows[i]) in excluded:
                continue
            if all(s[i] <= p.lo or p.admits(int(rows[i]), float(s[i])) for p, s in zip(qry.parts, sims)):
                return i
        return -1

    # -- scans and results ---------------------------------------------------------------------

    def scan_pick(self, qry: Query, members, desc: str, mode: str, rng: np.random.Generator,
                  excluded_set: set[int], tries: int, prefix: str = "") -> PickResult:
        """The exact scan of a pick: after `tries` failed draws (random) or directly (furthest)."""
        m = self.n if members is None else members.size
        excluded = np.array(sorted(excluded_set), dtype=np.intp)
        elig, score, size = scan.scan(qry, self.n, members, excluded, want_score=mode == "furthest")
        if elig.size == 0:
            raise scan.no_target(qry, desc, size, 0, prefix)
        if mode == "random":
            row = int(elig[rng.integers(elig.size)])
        else:
            row = scan.lowest_exact(qry, elig, score)
        return self._result(qry, row, tries + m, "scan" if mode == "random" else "furthest")

    def furthest_among(self, faces: Sequence[Mapping[str, np.ndarray]], candidates: np.ndarray, *,
                       thresholds: Mapping[str, float], groups: Sequence[int] | int | None = None,
                       exclude: Iterable[int] = (), margin: float = 1.0) -> PickResult | None:
        """The least similar eligible row among `candidates`, decided exactly; None if none is.

        For approximate indexes (IVF, HNSW): they propose rows, this decides. The result is the
        true minimum over the candidates, not necessarily over the whole group.
        """
        qry, cut = self.tightened(self.prepare(list(faces), thresholds), groups, margin, exclude)
        members, _ = self.group_rows(groups)
        cand = np.unique(np.asarray(candidates, dtype=np.intp).ravel())
        cand = cand[(cand >= 0) & (cand < self.n)]  # FAISS pads missing results with -1
        if members is not None:
            cand = cand[np.isin(cand, members)]
        excluded = np.array(sorted({int(r) for r in exclude}), dtype=np.intp)
        elig, score, _ = scan.scan(qry, self.n, cand, excluded, want_score=True)
        if elig.size == 0:
            return None
        return _with_cut(self._result(qry, scan.lowest_exact(qry, elig, score), int(cand.size), "index_furthest"), cut)

    @staticmethod
    def _result(qry: Query, row: int, tries: int, method: str) -> PickResult:
        sims = {}
        for p in qry.parts:
            v = p.space.exact_one(row, p.given, p.threshold)
            if v is None:  # float16 rows alone: their float32 approximation
                v = float((p.q @ np.asarray(p.space.data[row], dtype=np.float32)).max())
            else:
                p.space.confirm(v, row, p.threshold)
            sims[p.space.name] = v
        return PickResult(row, sims, tries, method)

    # -- the public picks ----------------------------------------------------------------------

    def pick(self, query: Mapping[str, np.ndarray], *, thresholds: Mapping[str, float],
             groups: Sequence[int] | int | None = None, mode: str = "random",
             rng: np.random.Generator | None = None, key: bytes | str | None = None,
             exclude: Iterable[int] = (), margin: float = 1.0) -> PickResult:
        """Pick one row dissimilar to `query` in every space it gives.

        Args:
            query: space -> (d,) embedding, any real dtype (normalised here; never modified).
            thresholds: space -> largest allowed similarity; needed for every space of the query.
            groups: group codes to pick from (their union); None: all rows.
            mode: "random" (uniform over the eligible rows) or "furthest" (smallest score).
            rng / key: randomness; key (bytes or str) derives it with the picker's secret.
            exclude: row numbers never returned.
            margin: < 1 draws only among the furthest `margin` fraction of the group (the
                result's `cut` says how; facebank.index.margin); 1: every eligible row.
        Raises:
            InvalidEmbedding, UnknownSpace, InputError, NoEligibleTarget (with counts).
        """
        if margin != 1.0:
            cut = self._query_cut(query, thresholds, groups, margin, exclude)
            return _with_cut(self.pick(query, thresholds=cut.thresholds, groups=groups, mode=mode, rng=rng, key=key,
                                       exclude=exclude), cut)
        if mode == "random" and type(query) is dict and len(query) == 1 and type(thresholds) is dict \
                and len(thresholds) == 1:
            res = self._pick_fast(query, thresholds, groups, rng, key, exclude)
            if res is not None:
                return res
        qry = self.prepare([query], thresholds)
        return self.pick_query(qry, groups, mode, self.generator(rng, key), exclude)

    def _pick_fast(self, query, thresholds, groups, rng, key, exclude=()) -> PickResult | None:
        """`pick` for the common case, with the fewest numpy calls: one float32 query in one space
        (float32 or float16 rows), random mode, any groups and exclusions. None when the case is not
        that one, or the group is empty (the generic path then validates, raises or picks).

        The same computation as the generic path, step for step: the same float32 unit query
        (`cosine.unit_row`), the same draws (`random_draws`, the same plan), the same error band and
        exact checks (`Space.exact_one`), the same reported similarity; only the per-call
        machinery (`Query`, `group_rows`, `_result`) is skipped.
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
        got = cosine.unit_row(q)
        if got is None:  # NaN, infinity, zero or tiny: the generic path decides
            return None
        qf, given = got
        members, desc = (None, "all") if groups is None else self.group_rows(groups)
        m = self.n if members is None else members.size
        if m == 0:
            return None
        if m == self.n:
            members = None  # a group of every row: its members are 0..n-1, the draws themselves
        excluded = set(map(int, exclude)) if exclude else ()
        gen = rng if key is None and type(rng) is np.random.Generator else self.generator(rng, key)
        thr = float(thr)
        lo, hi = thr - sp.margin, thr + sp.margin

        def admits(row: int) -> bool:  # a draw in the band: the exact value decides
            ex = sp.exact_one(row, given, thr)
            return ex is not None and ex <= thr

        def first_eligible(rows: np.ndarray) -> tuple[int, float | None]:
            blk = sp.data.take(rows, axis=0)
            for i, x in enumerate(np.dot(blk if sp.f32 else blk.astype(np.float32), qf).tolist()):
                if x > hi or (excluded and int(rows[i]) in excluded):
                    continue
                if x > lo:  # within the error band: the exact value decides
                    ex = sp.exact_one(int(rows[i]), given, thr)
                    if ex is None or ex > thr:
                        continue
                    return i, ex
                return i, None
            return -1, None

        parts = ((sp.data, sp.dim, qf[None, :], lo, hi),) if sp.screen else None
        row, ex, n_tries = random_draws(gen, self.n, self.draw_plan(m), members, parts, 1, excluded, admits,
                                        first_eligible)
        if row < 0:
            return self.scan_pick(make_query([(sp, qf[None, :], thr, given)]), members, desc, "random", gen,
                                  set(excluded), n_tries)
        if ex is None:
            ex = sp.exact_one(row, given, thr)
            if ex is None:  # float16 rows alone: their float32 approximation, as `_result` gives it
                ex = float((qf[None, :] @ np.asarray(sp.data[row], dtype=np.float32)).max())
            else:
                sp.confirm(ex, row, thr)
        res = _new(PickResult)  # PickResult(row, ...) without the frozen __init__'s cost
        res.__dict__.update(row=row, similarities={name: ex}, tries=n_tries, method="rejection")
        return res

    def pick_distinct(self, queries: Sequence[Mapping[str, np.ndarray]], *, thresholds: Mapping[str, float],
                      groups: Sequence[int] | int | None = None,
                      face_groups: Sequence[Sequence[int] | int | None] | None = None, mode: str = "random",
                      rng: np.random.Generator | None = None, key: bytes | str | None = None,
                      exclude: Iterable[int] = (), margin: float = 1.0) -> list[PickResult]:
        """Distinct rows for all faces of one photo, each dissimilar to EVERY face of the photo.

        Args:
            queries: one space -> (d,) mapping per real face (the same spaces for all).
            groups: group codes shared by all faces; face_groups: per-face codes (overrides).
            Other arguments as in `pick`; results are in face order.
        """
        if face_groups is not None and len(face_groups) != len(queries):
            raise InputError("face_groups must give one entry per face")
        qry = self.prepare(list(queries), thresholds)
        gen = self.generator(rng, key)
        taken = set(int(r) for r in exclude)
        out = []
        for f in range(len(queries)):
            g = groups if face_groups is None else face_groups[f]
            res = self.pick_query(qry, g, mode, gen, taken, prefix=f"face {f}: ", margin=margin)
            taken.add(res.row)
            out.append(res)
        return out

    def pick_batch(self, queries: Mapping[str, np.ndarray], *, thresholds: Mapping[str, float],
                   groups: Sequence[int] | int | None = None, mode: str = "random",
                   rng: np.random.Generator | None = None, keys: Sequence[bytes | str] | None = None,
                   exclude: Iterable[int] = (), as_arrays: bool = False,
                   margin: float = 1.0) -> list[PickResult] | BatchPick:
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
        if keys is not None or mode != "random" or margin != 1.0:  # per query: each has its own cut
            qs = {s: np.asarray(v) for s, v in queries.items()}
            sizes = {v.shape[0] if v.ndim == 2 else -1 for v in qs.values()}
            if keys is not None and sizes != {len(keys)}:
                raise InputError("keys must give one key per query")
            gen = None if keys is not None else self.generator(rng, None)
            res = [self.pick({s: v[i] for s, v in qs.items()}, thresholds=thresholds, groups=groups, mode=mode,
                             rng=gen, key=None if keys is None else keys[i], exclude=exclude, margin=margin)
                   for i in range(max(sizes))]
            return picker_batch.as_arrays(res, list(queries)) if as_arrays else res
        qry = self.prepare([queries], thresholds, ndim=2)
        if len({p.q.shape[0] for p in qry.parts}) != 1:
            raise InputError("every space must give the same number of queries")
        gen = self.generator(rng, None)
        members, desc = self.group_rows(groups)
        out = picker_batch.batch_picks(self, qry, groups, members, desc, {int(r) for r in exclude}, gen)
        return out if as_arrays else picker_batch.as_list(out)


_new = object.__new__


def _group_key(groups) -> tuple:
    """The margin sampler's cache key of a group-code set (validated by `group_rows` first)."""
    if groups is None:
        return ("all",)
    return tuple(sorted({int(c) for c in ([groups] if isinstance(groups, (int, np.integer)) else groups)}))


def _with_cut(res: PickResult, cut: MarginCut | None) -> PickResult:
    if cut is not None:
        object.__setattr__(res, "cut", cut)
    return res
