"""Picking against a bank and one of its index builds: open once, pick many times.

`FaceBank` binds a build to its bank (refusing a stale one), maps ages and genders to groups,
applies the fallback policy, and returns `Target`s that give access to the face a swapper needs.
The exactness of every pick lives in `facebank.index.picker`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from facebank.bank import open_bank
from facebank.config import DEFAULT_BUILDS
from facebank.errors import BankClosed, BankError, IndexBuildError, InputError, NoEligibleTarget, StaleIndex, UnknownSpace
from facebank.index import groups as G
from facebank.index.build import recorded_norms, resolve_build
from facebank.index.build_files import load_array, open_files, verify_files
from facebank.index.manifest import read_manifest
from facebank.index.picker import Picker, PickResult
from facebank.labels import check_age, gender_name
from facebank.pick.guard import BankGuard, calibrated_thresholds
from facebank.pick.analyse import FaceAnalyser, ImageInput, PhotoFace  # numpy only: models load on first use
from facebank.pick.options import FALLBACKS, MODES, Embedding, Embeddings, PickOptions, QueryFace, Threshold
from facebank.pick.targets import ImagePick, Target, TargetBatch


_new = object.__new__
_GENDER_NAMES = {0: gender_name(0), 1: gender_name(1)}
_MODES, _FALLBACKS = frozenset(MODES), frozenset(FALLBACKS)


def _as_query(embedding, space: str | None, spaces: list[str]) -> dict[str, np.ndarray]:
    if space is not None and not isinstance(space, str):
        raise InputError(f"space must be a space name (str), got {type(space).__name__}")
    if type(embedding) is not np.ndarray and isinstance(embedding, Mapping):  # the ABC check only when needed
        query = dict(embedding)
    else:
        if space is None:
            if len(spaces) != 1:
                raise InputError(f"give space= (the build has {', '.join(spaces)}) or a dict of space -> embedding")
            space = spaces[0]
        query = {space: embedding}
    if not query:
        raise InputError("the query has no embedding")
    for s in query:
        if s not in spaces:
            raise UnknownSpace(f"space {s!r} is not in this build; it has: {', '.join(spaces)}")
    return query


def _fallback_used(res: PickResult, plan: tuple[G.PlanStep, ...], step: int) -> str | None:
    """What the fallback policy did for a pick: None, the widened age group, or a relaxed margin."""
    if step:
        return f"widen_age:{plan[step].label}"
    if res.cut is not None and res.cut.relaxed:  # the group is too small for the margin
        return f"margin_relaxed:{res.cut.share:.3g}"
    return None


class FaceBank:
    """A bank and one of its index builds, opened once and reused across picks.

    Args:
        build: a build directory, or the builds folder (its `current` is used); None: `out/current`.
        bank: the bank file; None: the path recorded in the build's manifest.
        dtype: "float32", or "float16" to halve memory (picks stay exact; see Picker).
        secret: bytes that `key=` picks derive their randomness from; None: the build's
            `secret.key` (keys then give the same target whenever this build is used), or a
            fresh random secret when the build has none.
    """

    def __init__(self, build: str | os.PathLike | None = None, *, bank: str | os.PathLike | None = None,
                 dtype: str = "float32", secret: bytes | None = None, out: str | os.PathLike = DEFAULT_BUILDS):
        self.build_dir = resolve_build(build, out=out)
        self.manifest = read_manifest(self.build_dir)
        # Every file the picker reads is checked against the manifest before it is loaded, so a
        # tampered, truncated or swapped file is refused here instead of deciding a pick (XXH3-128,
        # streamed; sha256 for version-1 builds). FAISS indexes are checked when first read.
        verify_files(self.build_dir, self.manifest, open_files(self.manifest))
        self.bank_path = Path(bank or self.manifest.bank.path)
        self._bank_file = os.fspath(self.bank_path)
        self.bank = open_bank(self.bank_path)
        self._bank_stat = self._stat()
        self._check_fresh()
        self.spaces = sorted(self.manifest.spaces)
        self.thresholds = self.manifest.thresholds
        # The privacy margin picks use unless told otherwise (builds made before margins: none).
        self.default_margin = self.manifest.default_margin
        m = self.manifest.rows
        self.rows = load_array(self.build_dir, "rows.npy", dtype="int64", shape=(m,))
        self.ids = load_array(self.build_dir, "ids.npy", dtype="S16", shape=(m,))
        self.codes = load_array(self.build_dir, "groups.npy", dtype="int16", shape=(m,))
        self._check_rows()
        self._id_rows: dict[str, int] | None = None  # id -> build row, made for the first `exclude`
        self._calibrated = calibrated_thresholds(self.manifest)
        # Plain ndarray views of the memory maps: same mapped pages, no memmap subclass cost per access.
        vectors = {s: load_array(self.build_dir, f"vectors.{s}.npy", dtype="float32",
                                 shape=(m, self.manifest.spaces[s].dim), mmap=True).view(np.ndarray)
                   for s in self.spaces}
        self._vectors = vectors
        self._plans: dict[tuple, list] = {}
        self._raw_plans: dict[tuple, list] = {}
        self._thr_of: dict[tuple, dict[str, float]] = {}  # the query's spaces -> the build's thresholds
        self._labels = [G.group_label(c) for c in range(G.N_GROUPS)]
        if secret is None:
            key_file = self.build_dir / "secret.key"
            secret = key_file.read_bytes() if key_file.is_file() else secrets.token_bytes(32)
        self.picker = Picker(vectors, self.codes, dtype=dtype, secret=secret, norms=recorded_norms(self.manifest))
        self._guard_of = self._new_guard()
        # Approximate FAISS indexes (ivf, hnsw) propose candidates for furthest picks; the exact
        # picker decides. Flat builds need no index at pick time: the exact scan is the index.
        self._approx = {s: m.index.type for s, m in self.manifest.spaces.items() if m.index.type != "flat"}
        self._faiss: dict = {}
        self.furthest_candidates = 256
        self._source_ids: np.ndarray | None = None  # read on the first pick, not at open (a 1M bank's strings)
        self._analysers: dict[tuple, FaceAnalyser] = {}
        self._on_close = None  # set by the module-level cache: leaving `with` evicts the session from it
        self._closed = False

    # -- freshness --
    def _stat(self) -> tuple[int, int]:
        st = os.stat(self._bank_file)  # a str: os.stat of a Path costs a __fspath__ call per pick
        return st.st_ino, st.st_mtime_ns

    def _check_fresh(self, bank=None) -> None:
        bank = self.bank if bank is None else bank
        if bank.content_hash != self.manifest.bank.content_hash:
            raise StaleIndex(
                f"build {self.manifest.build_id} was made from another bank content than {self.bank_path} "
                f"holds now ({self.manifest.bank.content_hash[:12]} != {bank.content_hash[:12]}); "
                "rebuild the index"
            )

    def _check_rows(self) -> None:
        """The build's rows, ids and groups against the bank: a desynchronised build is refused."""
        n = len(self.bank)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= n):
            raise IndexBuildError(f"{self.build_dir}: rows.npy points outside the bank's {n} rows")
        if len(self.codes) and (self.codes.min() < 0 or self.codes.max() >= G.N_GROUPS):
            raise IndexBuildError(f"{self.build_dir}: groups.npy holds codes outside 0..{G.N_GROUPS - 1}")
        got = self.bank.mapped("id").read_all(n)[self.rows]  # from the fragments' maps: ~20 ms at 1M rows
        if got.dtype != self.ids.dtype or not np.array_equal(got.view(np.uint8), self.ids.view(np.uint8)):
            raise StaleIndex(f"{self.build_dir}: ids.npy does not match the bank's ids at rows.npy; rebuild the index")

    def _new_guard(self) -> BankGuard:
        return BankGuard(self.bank, self._vectors, self.codes, self.thresholds, self._calibrated, self.build_dir)

    def _guard(self, index_row: int, bank_row: int, queries: Sequence[Mapping], thresholds: Mapping) -> tuple[float, int]:
        """The last check before a target leaves (facebank.pick.guard): the BANK's own vector of
        that face, in every space of the query, is the build's and is within the threshold of every
        query face; each threshold is not looser than the calibrated one unless given explicitly;
        the target's group is the one of the bank's own age and gender. Returns (age, gender code).

        The picker decides on the build's files; this makes the guarantee rest on the bank's, read
        from its fragments' memory maps (about a microsecond a space)."""
        return self._guard_of.check(index_row, bank_row, queries, thresholds)

    @property
    def _index_row(self) -> dict[str, int]:
        """face id -> build row, made on first use (only `exclude` needs it; ~0.3 s at 1M faces)."""
        if self._id_rows is None:
            self._id_rows = dict(zip(self.ids.astype("U16").tolist(), range(len(self.ids))))
        return self._id_rows

    def live_bank(self):
        """The session's bank, reopened if its file was replaced since (BankClosed after close(),
        StaleIndex when the new file holds other content than the build was made from)."""
        self._recheck()
        return self.bank

    def _recheck(self) -> None:
        if self._closed:
            raise BankClosed(f"the picking session on {self.build_dir} was closed; open a new one "
                             "(facebank.FaceBank or facebank.open_facebank)")
        # The bank is only ever replaced whole (os.replace), so a changed inode or mtime is the signal.
        try:
            changed = self._stat() != self._bank_stat
        except FileNotFoundError:
            raise BankError(f"bank {self.bank_path} of build {self.build_dir} no longer exists") from None
        if changed:  # the new file is taken only if it holds the build's content; else every call says so
            stat, new = self._stat(), open_bank(self.bank_path)
            try:
                self._check_fresh(new)
            except StaleIndex:
                new.close()
                raise
            self.bank.close()
            self.bank, self._bank_stat, self._source_ids = new, stat, None
            self._guard_of = self._new_guard()

    # -- groups --
    def _group_plan(self, age: float | None, gender: str | None, fallback: str) -> tuple[G.PlanStep, ...]:
        """Group-code sets to try in order, with their labels (cached: a plan depends on the
        age group, gender and fallback only; PickOptions validated the fallback)."""
        # The raw arguments (with their types: True is not 1) -> the plan, once they were validated.
        raw = (age.__class__, age, gender.__class__, gender, fallback)
        try:
            plan = self._raw_plans.get(raw)
        except TypeError:  # unhashable: validated below, and refused or planned without the memo
            plan, raw = None, None
        if plan is not None:
            return plan
        key = (None if age is None else G.age_group(check_age(age)), None if gender is None else G.gender_name(gender),
               fallback)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = G.group_plan(*key)
        if raw is not None and len(self._raw_plans) < 4096:
            self._raw_plans[raw] = plan
        return plan

    def _index_rows(self, exclude: Iterable) -> set[int]:
        if type(exclude) in (tuple, list) and not exclude:  # the common case: nothing excluded
            return set()
        try:
            if isinstance(exclude, (str, bytes)):
                raise TypeError
            items = list(exclude)
        except TypeError:
            raise InputError(f"exclude takes a list of face ids (str), got {type(exclude).__name__}") from None
        out = set()
        for e in items:
            if isinstance(e, str):
                if e in self._index_row:
                    out.add(self._index_row[e])
            else:
                raise InputError(f"exclude takes face ids (str), got {type(e).__name__}")
        return out

    def _thresholds(self, query: Mapping, threshold, allow_looser: bool = False) -> dict[str, float]:
        if threshold is None:
            return {s: self.thresholds[s] for s in query}
        if isinstance(threshold, Mapping):
            for s in threshold:
                if s not in self.thresholds:
                    raise UnknownSpace(f"threshold for space {s!r}, which is not in this build; it has: "
                                       f"{', '.join(self.spaces)}")
            out = {s: threshold[s] if s in threshold else self.thresholds[s] for s in query}  # values: PickOptions
        elif len(query) != 1:
            raise InputError("a single threshold needs a single-space query; give a dict of space -> threshold")
        else:
            s = next(iter(query))
            out = {s: threshold}
        looser = [s for s, t in out.items() if t > self.thresholds[s]]
        if looser and not allow_looser:  # a higher cosine admits more similar faces: never silently
            s = looser[0]
            raise InputError(f"threshold {out[s]} for {s!r} is looser than the build's calibrated {self.thresholds[s]}; "
                             "pass allow_looser=True (CLI: --allow-looser) to weaken the guarantee on purpose")
        return out

    def _target(self, res: PickResult, thresholds, requested: str, fallback_used: str | None, mode: str,
                queries: Sequence[Mapping], margin: float = 1.0) -> Target:
        """The checked Target of a pick (the bank guard first), its fields set once."""
        index_row = res.row
        bank_row = int(self.rows[index_row])
        age, gender = self._guard_of.check(index_row, bank_row, queries, thresholds)
        if self._source_ids is None:
            self._source_ids = self.bank.column("source_id")
        t = _new(Target)  # Target(...) without the frozen __init__'s cost: the fields are set once, here
        t.__dict__.update(
            id=self.ids[index_row].decode(), row=bank_row, source_id=str(self._source_ids[bank_row]),
            similarities=dict(res.similarities), thresholds=dict(thresholds), age=age, gender=_GENDER_NAMES[gender],
            group=self._labels[self.codes[index_row]], requested_group=requested, fallback=fallback_used, mode=mode,
            method=res.method, margin=margin, cut=None if res.cut is None else res.cut.to_dict(),
            looser=any(v > self.thresholds[s] for s, v in thresholds.items()), _session=self)
        return t

    def _batch_targets(self, res, bank_rows: np.ndarray, ages: np.ndarray, genders: np.ndarray, thresholds: dict,
                       mode: str) -> TargetBatch:
        """The Targets of a checked batch: columns gathered once, each Target made when read."""
        if self._source_ids is None:
            self._source_ids = self.bank.column("source_id")
        return TargetBatch(ids=self.ids[res.rows], rows=bank_rows, source_ids=self._source_ids[bank_rows],
                           similarities=res.similarities, thresholds=dict(thresholds), ages=ages, genders=genders,
                           codes=self.codes[res.rows], labels=self._labels, gender_names=_GENDER_NAMES, mode=mode,
                           methods=res.methods, looser=any(v > self.thresholds[s] for s, v in thresholds.items()),
                           session=self)

    # -- the API: the keyword forms build one PickOptions; pick_faces and pick_rows do the work --
    def pick_target(self, embedding: Embedding, *, space: str | None = None, age: float | None = None,
                    gender: str | None = None, threshold: Threshold = None, mode: str = "random",
                    rng: np.random.Generator | None = None, key: bytes | str | None = None,
                    exclude: Iterable[str] = (), fallback: str = "error", margin: float | None = None,
                    allow_looser: bool = False) -> Target:
        """A synthetic face dissimilar to `embedding` in every space it gives; see facebank.pick_target."""
        # The common call (an array or a dict of arrays, the build's thresholds, nothing excluded)
        # goes straight to the pick; anything else, and every invalid value, takes the general
        # path below, which validates each option and raises its typed error.
        if threshold is None and allow_looser is False and type(exclude) is tuple and not exclude \
                and type(mode) is str and mode in _MODES and type(fallback) is str and fallback in _FALLBACKS \
                and (margin is None or (type(margin) is float and 0.0 < margin <= 1.0)):
            query = self._fast_query(embedding, space)
            if query is not None:
                return self._pick_one(query, age, gender, mode, fallback,
                                      self.default_margin if margin is None else margin, rng, key)
        options = PickOptions(threshold=threshold, mode=mode, rng=rng, key=key, exclude=exclude, fallback=fallback,
                              margin=margin, allow_looser=allow_looser)
        return self.pick_faces([QueryFace(embedding, space, age, gender)], options)[0]

    def _fast_query(self, embedding, space) -> dict | None:
        """The query of a plain `pick_target` call: an ndarray for `space` (or the only space), or a
        dict of the build's spaces -> ndarray; None for anything else (the general path decides)."""
        if type(embedding) is np.ndarray:
            if space is None:
                space = self.spaces[0] if len(self.spaces) == 1 else None
            return {space: embedding} if type(space) is str and space in self.thresholds else None
        if type(embedding) is dict and space is None and embedding \
                and all(type(s) is str and s in self.thresholds and type(v) is np.ndarray for s, v in embedding.items()):
            return embedding
        return None

    def _pick_one(self, query: dict, age, gender, mode: str, fallback: str, margin: float, rng, key) -> Target:
        """One face's checked Target: the work of `pick_faces` for one face, without its per-call set-up
        (the thresholds of a space set and the group plan are cached per session)."""
        self._recheck()
        names = tuple(query)
        thresholds = self._thr_of.get(names)
        if thresholds is None:
            thresholds = self._thr_of[names] = {s: self.thresholds[s] for s in names}
        plan = self._group_plan(age, gender, fallback)
        gen = self.picker.generator(rng, key)
        queries = [query]
        res, step = self._pick_in_plan(0, plan, queries, None, thresholds, mode, gen, set(), margin)
        return self._target(res, thresholds, plan[0].label, _fallback_used(res, plan, step), mode, queries, margin)

    def pick_targets(self, embeddings: Embeddings, *, space: str | None = None, ages: Sequence | None = None,
                     genders: Sequence | None = None, threshold: Threshold = None, mode: str = "random",
                     rng: np.random.Generator | None = None, keys: Sequence | None = None,
                     exclude: Iterable[str] = (), fallback: str = "error", margin: float | None = None,
                     allow_looser: bool = False) -> TargetBatch:
        """One target per query (independent picks; targets may repeat across queries), as a
        TargetBatch: a sequence of Targets made when read, and its columns (rows, ids, ...).

        `embeddings` is (B, d) for one space, or a dict space -> (B, d). Without ages/genders and
        margins the whole batch goes to `Picker.pick_batch` at once and is re-checked against the
        bank as arrays (BankGuard.check_batch); with them, one pick per query.
        """
        options = PickOptions(threshold=threshold, mode=mode, rng=rng, exclude=exclude, fallback=fallback,
                              margin=margin, allow_looser=allow_looser)
        return self.pick_rows(embeddings, options, space=space, ages=ages, genders=genders, keys=keys)

    def pick_for_photo(self, faces: Sequence[Mapping], *, threshold: Threshold = None, mode: str = "random",
                       rng: np.random.Generator | None = None, key: bytes | str | None = None,
                       exclude: Iterable[str] = (), fallback: str = "error", margin: float | None = None,
                       allow_looser: bool = False) -> list[Target]:
        """Distinct targets for all real faces of one photo, each dissimilar to every one of them.

        Each face is a QueryFace, or a mapping with `embedding` (array or dict space -> array) and
        optional `space`, `age` and `gender` (any other key is an error).
        """
        options = PickOptions(threshold=threshold, mode=mode, rng=rng, key=key, exclude=exclude, fallback=fallback,
                              margin=margin, allow_looser=allow_looser)
        return self.pick_faces(faces, options)

    def pick_rows(self, embeddings: Embeddings, options: PickOptions, *, space: str | None = None, ages: Sequence | None = None,
                  genders: Sequence | None = None, keys: Sequence | None = None) -> TargetBatch:
        """`pick_targets` with its options as one object (`options.key` is unused: give `keys`)."""
        self._recheck()
        query = _as_query(embeddings, space, self.spaces)
        thresholds = self._thresholds(query, options.threshold, options.allow_looser)
        margin = self._margin(options)
        sizes = {np.shape(v)[0] if np.ndim(v) == 2 else -1 for v in query.values()}
        if len(sizes) != 1 or -1 in sizes:
            raise InputError("batch embeddings must be (B, d) arrays with the same B in every space")
        b = sizes.pop()
        for name, values in (("ages", ages), ("genders", genders), ("keys", keys)):
            if values is not None and (isinstance(values, (str, bytes)) or not hasattr(values, "__len__")
                                       or len(values) != b):
                raise InputError(f"{name} must give one value per embedding ({b}), "
                                 f"got {len(values) if hasattr(values, '__len__') else type(values).__name__}")
        if ages is None and genders is None and margin == 1.0:  # one plan ("any"): the fallback cannot apply
            res = self.picker.pick_batch(query, thresholds=thresholds, mode=options.mode, rng=options.rng, keys=keys,
                                         exclude=self._index_rows(options.exclude), as_arrays=True)
            bank_rows = self.rows[res.rows]
            ages, genders = self._guard_of.check_batch(res.rows, bank_rows, query, thresholds)
            return self._batch_targets(res, bank_rows, ages, genders, thresholds, options.mode)
        out = []
        for i in range(b):
            face = QueryFace({s: np.asarray(v)[i] for s, v in query.items()}, None,
                             None if ages is None else ages[i], None if genders is None else genders[i])
            out += self.pick_faces([face], replace(options, key=None if keys is None else keys[i]))
        return TargetBatch.of(out)

    def pick_faces(self, faces: Sequence[Mapping], options: PickOptions) -> list[Target]:
        """`pick_for_photo` (and `pick_target`, one face) with its options as one object."""
        self._recheck()
        mode = options.mode
        if isinstance(faces, (Mapping, QueryFace)) or not isinstance(faces, Sequence) or not faces:
            raise InputError(f"faces must be a non-empty list of faces, got {type(faces).__name__}")
        faces = [QueryFace.of(f, i) for i, f in enumerate(faces)]
        queries = [_as_query(f.embedding, f.space, self.spaces) for f in faces]
        spaces = set(queries[0])
        if any(set(q) != spaces for q in queries):
            raise InputError("every face of a photo must give the same spaces")
        thresholds = self._thresholds(queries[0], options.threshold, options.allow_looser)
        margin = self._margin(options)
        plans = [self._group_plan(f.age, f.gender, options.fallback) for f in faces]
        taken = self._index_rows(options.exclude)
        gen = self.picker.generator(options.rng, options.key)  # one generator for the whole photo: keyed picks reproduce
        # Every face is checked against every face of the photo, not only its own. One face: the
        # picker validates the query itself (its fast path); invalid input raises before any pick.
        qry = self.picker.prepare(queries, thresholds) if len(queries) > 1 or mode == "furthest" else None
        out = []
        for i, plan in enumerate(plans):
            res, step = self._pick_in_plan(i, plan, queries, qry, thresholds, mode, gen, taken, margin)
            taken.add(res.row)
            out.append(self._target(res, thresholds, plan[0].label, _fallback_used(res, plan, step), mode, queries,
                                    margin))
        return out

    def _margin(self, options: PickOptions) -> float:
        """The pick's margin: the option, else the build's default (1.0 for builds made before margins)."""
        return self.default_margin if options.margin is None else options.margin

    def _pick_in_plan(self, i: int, plan: tuple[G.PlanStep, ...], queries: list[dict], qry, thresholds: dict, mode: str, gen,
                      taken: set[int], margin: float = 1.0) -> tuple[PickResult, int]:
        """Face i's pick from the first group of its plan that has an eligible target: (result, step)."""
        last: NoEligibleTarget | None = None
        for step, (codes, _label) in enumerate(plan):
            try:
                res = self._proposed_furthest(queries, thresholds, codes, taken, margin) if mode == "furthest" else None
                if res is None and len(queries) == 1:  # one face: the picker's fast path applies
                    res = self.picker.pick(queries[0], thresholds=thresholds, groups=codes, mode=mode, rng=gen,
                                           exclude=taken, margin=margin)
                elif res is None:
                    res = self.picker.pick_query(qry, codes, mode, gen, taken, prefix=f"face {i}: ", margin=margin)
            except NoEligibleTarget as exc:
                last = exc
                continue
            return res, step
        if len(plan) == 1:
            raise last
        tried = ", ".join(step.label for step in plan)
        raise NoEligibleTarget(f"no eligible target in any of {tried}; last: {last}",
                               group_size=last.group_size, too_similar=last.too_similar, group=plan[0].label)

    def _proposed_furthest(self, queries: list[dict], thresholds: dict, codes, taken: set[int], margin: float = 1.0):
        """Furthest pick among an approximate index's proposals, or None (then the exact scan decides)."""
        spaces = [s for s in queries[0] if s in self._approx]
        if not spaces:
            return None
        from facebank._io.deps import require

        faiss = require("faiss")
        cand = []
        for s in spaces:
            if s not in self._faiss:
                verify_files(self.build_dir, self.manifest, [f"index.{s}.faiss"])
                self._faiss[s] = faiss.read_index(str(self.build_dir / f"index.{s}.faiss"))
            q = np.stack([np.asarray(f[s], dtype=np.float32) for f in queries])
            q = -q / np.linalg.norm(q, axis=1, keepdims=True)  # most similar to -q = least similar to q
            _, rows = self._faiss[s].search(np.ascontiguousarray(q), self.furthest_candidates)
            cand.append(rows.ravel())
        return self.picker.furthest_among(queries, np.concatenate(cand), thresholds=thresholds, groups=codes,
                                          exclude=taken, margin=margin)

    # -- photos: the models load once per session (prepare once, get many) --
    def analyser(self, models: Mapping[str, str | os.PathLike] | None = None) -> FaceAnalyser:
        """The session's FaceAnalyser for its spaces and `models` (the model path of each non-dlib
        space), created on first use and reused, so later photos cost inference only."""
        key = tuple(sorted((s, str(p)) for s, p in (models or {}).items() if s in self.spaces))
        analyser = self._analysers.get(key)
        if analyser is None:
            sha = {s: m.model_sha256 for s, m in self.manifest.spaces.items()}
            analyser = self._analysers[key] = FaceAnalyser(self.spaces, models=dict(key), expected_sha256=sha)
        return analyser

    def analyse(self, image: ImageInput, *, models: Mapping[str, str | os.PathLike] | None = None) -> list[PhotoFace]:
        """Every face of `image` (RGB array, path or bytes): box, landmarks, age, gender and an
        embedding in each of the build's spaces (facebank.pick.analyse.PhotoFace)."""
        return self.analyser(models).get(image)

    def pick_for_image(self, image: ImageInput, *, models: Mapping[str, str | os.PathLike] | None = None,
                       threshold: Threshold = None, mode: str = "random",
                       rng: np.random.Generator | None = None, key: bytes | str | None = None,
                       exclude: Iterable[str] = (), fallback: str = "error", margin: float | None = None,
                       allow_looser: bool = False) -> list[ImagePick]:
        """One distinct target per face of `image` (an RGB uint8 array, a path or encoded bytes).

        Detects every face, estimates age and gender, embeds it in the build's spaces and picks
        as `pick_for_photo` does (each target dissimilar to every face of the photo). Returns
        `ImagePick(face, target)`s, [] when the photo has no face. Models load on the first call.
        """
        from facebank.pick.photo import pick_for_image

        return pick_for_image(self, image, models=models, threshold=threshold, mode=mode, rng=rng, key=key,
                              exclude=exclude, fallback=fallback, margin=margin, allow_looser=allow_looser)

    def anonymize_image(self, image: ImageInput, *, key: str | None = None, **options):
        """Anonymise `image` (an array in `color=` order, RGB by default; a path or bytes): every face
        swapped with a picked target and the result checked (facebank.anonymize.anonymize_image)."""
        from facebank.anonymize import anonymize_image  # the stage above pick: imported on use

        return anonymize_image(self, image, key=key, **options)

    def close(self) -> None:
        self._closed = True
        self.bank.close()
        if self._on_close is not None:
            self._on_close(self)

    def __enter__(self) -> FaceBank:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
