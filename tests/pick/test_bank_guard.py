"""The per-target re-check against the bank (facebank.pick.guard): a build forged together with its
checksums cannot serve a target of the wrong group, above the threshold, or at a threshold looser
than the calibrated one; the batch path checks the same (issue 22, issue 24)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from facebank._io.checksum import xxh3_file
from facebank._io.download import sha256_file
from facebank.bank import BankWriter, FaceRecord
from facebank.errors import IndexBuildError, NoEligibleTarget
from facebank.index.build import build_index
from facebank.pick.session import FaceBank

DIM = 8


def _record(i: int) -> FaceRecord:
    rng = np.random.default_rng(i)
    v = rng.standard_normal(DIM).astype(np.float32)
    return FaceRecord(source="folder", source_id=f"f{i}.png", image=b"img%d" % i, image_format="png", width=64,
                      height=64, box=np.zeros(4, np.float32), landmarks=np.zeros((5, 2), np.float32), detector="t",
                      crop=np.full((112, 112, 3), i % 251, np.uint8), age=float(3 + (i * 11) % 73), gender=i % 2,
                      embeddings={"s": v / np.linalg.norm(v)})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A bank of 240 faces in several commits (several fragments) and a flat build at 0.2."""
    root = tmp_path_factory.mktemp("guard")
    bank = root / "bank.h5"
    with BankWriter(bank, batch_size=32, commit_every=64) as w:
        w.register_space("s", {"model": "t", "sha256": "ab" * 32, "dim": DIM})
        for i in range(240):
            w.add_face(_record(i))
    return bank, build_index(bank, out=root / "builds", thresholds={"s": 0.2}, build_id="g1")


def _forged(built, tmp_path, change) -> Path:
    """A copy of the build with `change(build)` applied and every checksum rewritten to match."""
    b = Path(shutil.copytree(built[1], tmp_path / "build"))
    change(b)
    m = json.loads((b / "manifest.json").read_text())
    for where in [m, *m["spaces"].values()]:
        where["files"] = {k: sha256_file(b / k) for k in where["files"]}
        where["xxh3_128"] = {k: xxh3_file(b / k) for k in where["xxh3_128"]}
    (b / "manifest.json").write_text(json.dumps(m))
    return b


def _flip_genders(b: Path) -> None:
    codes = np.load(b / "groups.npy")
    np.save(b / "groups.npy", (codes ^ 1).astype(np.int16))  # every face in the other gender's group


def test_forged_groups_never_serve_the_wrong_gender(built, tmp_path):
    b = _forged(built, tmp_path, _flip_genders)
    rng = np.random.default_rng(0)
    with FaceBank(b, bank=built[0]) as fb:  # the checksums match: the open passes
        for gender in ("f", "m"):
            for _ in range(10):
                q = rng.standard_normal(DIM).astype(np.float32)
                with pytest.raises(IndexBuildError, match=r"groups\.npy puts face .* the bank says"):
                    fb.pick_target(q, age=30, gender=gender, threshold=0.9, rng=rng, fallback="widen_age", allow_looser=True)
        with pytest.raises(IndexBuildError, match=r"groups\.npy"):
            fb.pick_targets(rng.standard_normal((5, DIM)).astype(np.float32), threshold=0.9, rng=rng, allow_looser=True)


def test_untouched_groups_agree_with_the_bank(built):
    rng = np.random.default_rng(1)
    with FaceBank(built[1], bank=built[0]) as fb:
        for gender, name in (("f", "female"), ("m", "male")):
            t = fb.pick_target(rng.standard_normal(DIM).astype(np.float32), age=33, gender=gender, threshold=0.9,
                               rng=rng, allow_looser=True)
            face = fb.bank.face(t.row)
            assert t.gender == face.gender == name and t.age == pytest.approx(face.age)
            assert t.group == f"30-39/{name}"
        for t in fb.pick_targets(rng.standard_normal((20, DIM)).astype(np.float32), threshold=0.9, rng=rng,
                                 allow_looser=True):
            assert (t.age, t.gender) == (pytest.approx(fb.bank.face(t.row).age), fb.bank.face(t.row).gender)


def _raise_threshold(b: Path) -> None:
    m = json.loads((b / "manifest.json").read_text())
    m["spaces"]["s"]["threshold_calibration"] = {"threshold": 0.2}  # what a calibrated build records
    m["spaces"]["s"]["threshold"] = 0.9999  # ... and the threshold raised by hand
    (b / "manifest.json").write_text(json.dumps(m))


def test_a_threshold_raised_above_its_calibration_is_refused_unless_explicit(built, tmp_path):
    b = _forged(built, tmp_path, _raise_threshold)
    rng = np.random.default_rng(2)
    q = rng.standard_normal(DIM).astype(np.float32)
    with FaceBank(b, bank=built[0]) as fb:
        with pytest.raises(IndexBuildError, match=r"looser than the 0\.2 it was calibrated at"):
            fb.pick_target(q, rng=rng)
        with pytest.raises(IndexBuildError, match="calibrated"):
            fb.pick_targets(np.stack([q, q]), rng=rng)
        t = fb.pick_target(q, threshold=0.5, rng=rng)  # given explicitly, at the forged (not looser) threshold
        assert t.similarities["s"] <= 0.5
        assert fb.pick_target(q, threshold=0.1, rng=rng).thresholds == {"s": 0.1}  # stricter: always fine


def test_batch_targets_are_checked_against_the_bank(built, tmp_path):
    """pick_targets through the vectorised re-check: rows swapped in a forged build are refused;
    an untouched build gives targets whose bank vectors meet the threshold."""
    rng = np.random.default_rng(3)
    q = rng.standard_normal((40, DIM)).astype(np.float32)
    with FaceBank(built[1], bank=built[0]) as fb:
        truth = fb.bank.vectors("s").astype(np.float64)
        for t, x in zip(fb.pick_targets(q, threshold=0.3, rng=rng, allow_looser=True), q):
            u = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64))
            assert truth[t.row] @ u <= 0.3 + 1e-7 and t.id == fb.bank.ids[t.row]
    b = _forged(built, tmp_path, lambda b: np.save(b / "vectors.s.npy", np.load(b / "vectors.s.npy")[::-1].copy()))
    with FaceBank(b, bank=built[0]) as fb:
        try:
            fb.pick_targets(q, threshold=0.9, rng=rng, allow_looser=True)
        except NoEligibleTarget:
            pytest.fail("a forged build must be refused, not reported as empty")
        except Exception as exc:  # noqa: BLE001 - the type is asserted next
            assert "differs from the bank's vector" in str(exc)
        else:
            pytest.fail("swapped rows were not refused")
