"""`facebank index verify`: a build checked as a whole against its bank and the calibrated thresholds.

Checksums alone prove only that the files match the manifest; whoever rewrites a file can rewrite
its checksum too. So verification also recomputes what the build derives from the bank (the
rows that may enter it, their face ids and group codes from the bank's own ages and genders, a
sample of vectors) and checks each space's threshold against the one calibrated for its model:
a threshold above it (looser) is accepted only when the manifest records that the operator chose
it (`threshold_allowed_looser`, written by `index build`). The manifest's `content_id` (a sha256
of everything else in it: file checksums, thresholds, the bank's content hash) names the build as
a whole; a pipeline records it once and pins it with `check_build_id`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facebank.bank import open_bank
from facebank.errors import IndexBuildError, InputError, StaleIndex
from facebank.index import groups as G
from facebank.index.build import recorded_norms
from facebank.index.build_files import verify_all
from facebank.index.exact import norm_range
from facebank.index.manifest import BuildManifest, check_content_id, read_manifest

__all__ = ["check_build_id", "check_thresholds", "verify_build"]

_SLACK = 1e-9  # thresholds are stored as JSON floats: equal values may differ in the last digit


def check_build_id(build_dir: str | os.PathLike, expected: str) -> BuildManifest:
    """The build's manifest, if its `content_id` is `expected` (the id a pipeline pinned); else
    IndexBuildError (also when the manifest does not match its own content_id).

    A pipeline records `verify_build(...)["content_id"]` once, then before each run:
    `check_build_id(build, pinned)` and `FaceBank(build)`."""
    if not isinstance(expected, str) or not expected:
        raise IndexBuildError(f"expected build id must be a non-empty string, got {expected!r}")
    m = read_manifest(build_dir)
    got = check_content_id(m, build_dir)
    if got != expected:
        raise IndexBuildError(f"{build_dir}: build content id is {got}, the pipeline pinned {expected}: "
                              f"another or a modified build")
    return m


def check_thresholds(m: BuildManifest, where) -> dict[str, float | None]:
    """space -> the calibrated threshold its manifest threshold was checked against (None: no shipped
    calibration for that model). IndexBuildError for a looser threshold the operator did not allow."""
    from facebank.index.build import calibrated_threshold

    out = {}
    for s, meta in m.spaces.items():
        ref = calibrated_threshold(s, meta.model_sha256, meta.calibration_far)
        out[s] = ref
        if ref is not None and meta.threshold > ref + _SLACK and meta.threshold_allowed_looser is not True:
            raise IndexBuildError(
                f"{where}: space {s!r} threshold {meta.threshold:.6f} is above the calibrated {ref:.6f} for its "
                f"model, and the manifest does not record that the operator allowed a looser threshold "
                f"(forged or edited manifest): rebuild the index")
    return out


def _check_norms(build_dir, s: str, vec: np.ndarray, recorded: tuple[float, float] | None) -> None:
    """The recorded row norms (the screen's error bound rests on them) cover the rows' own."""
    if recorded is None:
        return
    lo, hi = norm_range(s, vec)
    if recorded[0] > lo * (1 + 1e-12) or recorded[1] < hi * (1 - 1e-12):
        raise IndexBuildError(f"{build_dir}: space {s!r} records row norms {recorded}, its rows have "
                              f"({lo!r}, {hi!r}): forged or damaged, rebuild the index")


def verify_build(build_dir: str | os.PathLike, *, bank_path: str | None = None, sample: int = 256) -> dict:
    """Check a build against its bank: content hash, file checksums, rows, ids and groups recomputed
    from the bank, thresholds against the calibrated ones, a sample of vectors.

    Raises StaleIndex (bank changed or another bank) or IndexBuildError (build damaged or forged).
    """
    build_dir = Path(build_dir)
    m = read_manifest(build_dir)
    verify_all(build_dir, m)  # first: a damaged file is named
    check_content_id(m, build_dir)
    calibrated = check_thresholds(m, build_dir)
    bank_path = bank_path or m.bank.path
    with open_bank(bank_path) as bank:
        if bank.content_hash != m.bank.content_hash:
            raise StaleIndex(
                f"build {m.build_id} was made from bank content {m.bank.content_hash[:16]}, "
                f"but {bank_path} now has {bank.content_hash[:16]}: rebuild the index"
            )
        rows = np.load(build_dir / "rows.npy", allow_pickle=False)
        ids = np.load(build_dir / "ids.npy", allow_pickle=False)
        codes = np.load(build_dir / "groups.npy", allow_pickle=False)
        if len(rows) != m.rows or len(ids) != len(rows) or len(codes) != len(rows):
            raise IndexBuildError(f"{build_dir}: rows.npy, ids.npy and groups.npy do not have the manifest's {m.rows} rows")
        from facebank.index.build import usable_rows

        try:
            want_rows, want_codes, _ = usable_rows(bank, bank_path, sorted(m.spaces))
        except InputError:  # no usable face at all
            want_rows, want_codes = np.zeros(0, np.int64), np.zeros(0, np.int16)
        if not np.array_equal(rows, want_rows):
            raise IndexBuildError(f"{build_dir}: rows.npy is not the bank's usable faces (annotated, with age, "
                                  f"gender and a vector in every space)")
        if any(bank.ids[r] != i.decode() for r, i in zip(rows, ids)):
            raise StaleIndex(f"{build_dir}: face ids do not match the bank")
        if not np.array_equal(codes, want_codes):
            bad = int(np.flatnonzero(codes != want_codes)[0])
            raise IndexBuildError(f"{build_dir}: groups.npy does not match the bank's own ages and genders (row "
                                  f"{int(rows[bad])}: {G.group_label(int(codes[bad]))}, the bank says "
                                  f"{G.group_label(int(want_codes[bad]))}): forged or damaged, rebuild the index")
        rng = np.random.default_rng(0)
        pick = np.sort(rng.choice(len(rows), size=min(sample, len(rows)), replace=False))
        for s in m.spaces:
            vec = np.load(build_dir / f"vectors.{s}.npy", mmap_mode="r", allow_pickle=False)
            if vec.shape != (m.rows, m.spaces[s].dim):
                raise IndexBuildError(f"{build_dir}: vectors.{s}.npy has shape {vec.shape}")
            stored = bank.vectors(s)[rows[pick]]
            if not np.array_equal(stored, np.asarray(vec[pick])):
                raise StaleIndex(f"{build_dir}: vectors of space {s!r} differ from the bank's")
            _check_norms(build_dir, s, vec, recorded_norms(m).get(s))
    return {"build": m.build_id, "content_id": m.content_id, "ok": True, "rows": m.rows,
            "spaces": sorted(m.spaces), "checked_vectors": int(len(pick)), "checked_groups": int(len(rows)),
            "calibrated_thresholds": calibrated, "bank": str(bank_path)}
