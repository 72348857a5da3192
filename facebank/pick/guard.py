"""The last check before a target leaves a session: the bank's own data agrees with the build.

The picker decides on the build's files (vectors.<space>.npy, groups.npy, the manifest's
thresholds). Their checksums sit in the same folder, so whoever can rewrite a build can forge
them too. `BankGuard` makes every returned target rest on the BANK instead:

- the bank's stored vector of the face, in every space of the query, is byte for byte the
  build's row, and is within the threshold of every face of the query (decided exactly, by the
  picker's own check: facebank.index.cosine);
- the threshold of each space is not looser than the one the build was calibrated at (its
  manifest's calibration record), unless the caller gave that threshold explicitly;
- the target's group (groups.npy) is the group of the bank's own age and gender of that face.

The bank's columns are read from its fragments' memory maps (facebank.bank.rows), mapped once
per session, so the check costs about a microsecond per space, not a system call and an HDF5
look-up. Measured in docs/api-performance.md.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence

import numpy as np

from facebank import labels
from facebank.errors import IndexBuildError, StaleIndex
from facebank.index import groups as G
from facebank.index import cosine
from facebank.index.manifest import BuildManifest

__all__ = ["BankGuard", "calibrated_thresholds"]

_AGE_EDGES = list(labels.AGE_EDGES)


def calibrated_thresholds(manifest: BuildManifest) -> dict[str, float]:
    """space -> the loosest threshold a pick may use unless the caller gives one explicitly: the
    threshold of the build's calibration record (`threshold_calibration.threshold`) when it has
    one, else the build's own threshold (one given at build time: nothing to hold it against)."""
    out = {}
    for s, m in manifest.spaces.items():
        t = m.calibrated_threshold
        out[s] = float(m.threshold) if t is None else min(float(m.threshold), t)
    return out


class BankGuard:
    """The per-target re-check of one session against its bank (see the module docstring).

    Args:
        bank: the session's open Bank (its fragments are mapped on first use).
        build_vectors: space -> the build's (n, d) float32 rows, in build-row order.
        codes: the build's (n,) group codes.
        thresholds: the build's thresholds (the manifest's); calibrated: `calibrated_thresholds`.
        where: the build folder, named in errors.
    """

    def __init__(self, bank, build_vectors: Mapping[str, np.ndarray], codes: np.ndarray,
                 thresholds: Mapping[str, float], calibrated: Mapping[str, float], where):
        self.bank, self.where = bank, where
        self.build_vectors, self.codes = build_vectors, codes
        self.thresholds, self.calibrated = dict(thresholds), dict(calibrated)
        self._vec = {s: bank.vector_rows(s) for s in build_vectors}
        self._age, self._gender = bank.mapped("age"), bank.mapped("gender")
        self._attrs: tuple[np.ndarray, np.ndarray] | None = None  # every age and gender, read on the first check

    # -- what a pick promises, one clear function each --
    def check_threshold_used(self, space: str, used: float, explicit: bool | None = None) -> None:
        """A pick in `space` at `used` is allowed: the caller gave it explicitly, or it is not
        looser than the build's calibrated threshold. `explicit` None: a threshold other than the
        build's own can only have come from the caller."""
        if explicit is None:
            explicit = used != self.thresholds[space]
        if not explicit and used > self.calibrated[space]:
            raise IndexBuildError(
                f"{self.where}: the build's threshold {used} for {space!r} is looser than the {self.calibrated[space]} "
                "it was calibrated at (manifest edited?); rebuild the index, or pass the threshold explicitly")

    def attributes(self, bank_row: int) -> tuple[float, int]:
        """(age, gender code) the bank holds for a row."""
        if self._attrs is None:  # 5 MB at 1M faces, from the maps: cheaper than two look-ups per pick
            n = len(self.bank)
            self._attrs = (self._age.read_all(n), self._gender.read_all(n))
        return float(self._attrs[0][bank_row]), int(self._attrs[1][bank_row])

    def check_group(self, index_row: int, bank_row: int) -> tuple[float, int]:
        """The build's group of the row is the group of the bank's own age and gender; returns them."""
        age, gender = self.attributes(bank_row)
        code = int(self.codes[index_row])
        if not (math.isfinite(age) and age >= 0 and gender in (0, 1)) \
                or bisect.bisect_right(_AGE_EDGES, age) * len(G.GENDERS) + gender != code:
            raise IndexBuildError(f"{self.where}: groups.npy puts face {self.bank.face_id(bank_row)} in "
                                  f"{G.group_label(code) if 0 <= code < G.N_GROUPS else code}, the bank says age "
                                  f"{age:g}, gender {labels.GENDERS[gender] if gender in (0, 1) else gender}; refused")
        return age, gender

    def stored(self, space: str, bank_row: int) -> np.ndarray:
        return self._vec[space][bank_row]

    # -- one target --
    def check(self, index_row: int, bank_row: int, queries: Sequence[Mapping], thresholds: Mapping) -> tuple[float, int]:
        """Every promise for one target; returns the bank's (age, gender code) of it."""
        for s, t in thresholds.items():
            if t > self.calibrated[s]:
                self.check_threshold_used(s, t)
            stored = self.stored(s, bank_row)
            if stored.tobytes() != self.build_vectors[s][index_row].tobytes():
                raise StaleIndex(f"{self.where}: vectors.{s}.npy row {index_row} differs from the bank's vector "
                                 f"of face {self.bank.face_id(bank_row)}; rebuild the index")
            for q in queries:
                sim = cosine.decide_pair(np.asarray(q[s]), stored, t)
                if not sim <= t:
                    raise IndexBuildError(f"{self.where}: the pick of face {self.bank.face_id(bank_row)} has "
                                          f"{s} similarity {sim:.6f} > {t} against the bank's vector; refused")
        return self.check_group(index_row, bank_row)

    # -- a batch: one target per query row --
    def check_batch(self, index_rows: np.ndarray, bank_rows: np.ndarray, query: Mapping[str, np.ndarray],
                    thresholds: Mapping) -> tuple[np.ndarray, np.ndarray]:
        """`check` for B targets, target b against query row b; returns the bank's (ages, genders)."""
        for s, t in thresholds.items():
            if t > self.calibrated[s]:
                self.check_threshold_used(s, t)
            q = np.asarray(query[s])
            for a in range(0, len(index_rows), 2048):  # chunks: bounded float64 temporaries
                ir, br = index_rows[a:a + 2048], bank_rows[a:a + 2048]
                stored = self._vec[s].take(br)
                build = self.build_vectors[s][ir]
                if not np.array_equal(stored.view(np.uint32).ravel(), build.view(np.uint32).ravel()):
                    same = (stored.view(np.uint32) == build.view(np.uint32)).all(axis=1)
                    j = int(np.flatnonzero(~same)[0])
                    raise StaleIndex(f"{self.where}: vectors.{s}.npy row {int(ir[j])} differs from the bank's vector "
                                     f"of face {self.bank.face_id(int(br[j]))}; rebuild the index")
                sim = cosine.decide(cosine.Given(q[a:a + 2048]), stored.astype(np.float64), t, per_row=True)
                bad = np.flatnonzero(~(sim <= t))
                if bad.size:
                    j = int(bad[0])
                    raise IndexBuildError(f"{self.where}: the pick of face {self.bank.face_id(int(br[j]))} has "
                                          f"{s} similarity {sim[j]:.6f} > {t} against the bank's vector; refused")
        ages = self._age.take(bank_rows).astype(np.float64)
        genders = self._gender.take(bank_rows).astype(np.int64)
        codes = self.codes[index_rows].astype(np.int64)
        with np.errstate(invalid="ignore"):
            good = np.isfinite(ages) & (ages >= 0) & np.isin(genders, (0, 1))
        want = np.searchsorted(np.asarray(_AGE_EDGES), np.where(good, ages, 0), side="right") * len(G.GENDERS) + genders
        bad = np.flatnonzero(~good | (want != codes))
        if bad.size:
            self.check_group(int(index_rows[bad[0]]), int(bank_rows[bad[0]]))  # raises, naming the face
        return ages, genders
