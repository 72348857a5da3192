"""A build is verifiable as a whole: forged groups or thresholds are caught even with every checksum
recomputed, its content id can be pinned, and two builds in one second never collide."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facebank._io.checksum import file_digests
from facebank.bank import BankWriter, FaceRecord
from facebank.errors import IndexBuildError, InputError
from facebank.index.build import build_index, default_thresholds, verify_build
from facebank.index.manifest import content_id, read_manifest
from facebank.index.verify import check_build_id

DLIB = default_thresholds()["spaces"]["dlib"]
INFO = {"model": DLIB["model"], "sha256": DLIB["sha256"], "dim": 128}


def _record(i: int) -> FaceRecord:
    rng = np.random.default_rng(i)
    v = rng.standard_normal(128).astype(np.float32)
    return FaceRecord(
        source="folder", source_id=f"f{i}.png", image=i.to_bytes(4, "little") + rng.bytes(64), image_format="png",
        width=64, height=64, box=np.array([1, 2, 30, 40], np.float32), landmarks=rng.random((5, 2), dtype=np.float32),
        detector="test", crop=rng.integers(0, 255, (112, 112, 3), dtype=np.uint8), age=float(10 + 2 * i),
        gender=i % 2, embeddings={"dlib": v / np.linalg.norm(v)},
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    bank = root / "bank.h5"
    with BankWriter(bank) as w:
        w.register_space("dlib", INFO)
        for i in range(40):
            w.add_face(_record(i))
    return bank, build_index(bank, out=root / "builds", make_current=False)


def _forge(build: Path, change) -> None:
    """Edit the manifest, recompute every checksum and the content id: a forger who knows the format."""
    m = json.loads((build / "manifest.json").read_text())
    change(m)
    for where in [m, *m["spaces"].values()]:
        for name in where["files"]:
            where["files"][name], where["xxh3_128"][name] = file_digests(build / name)
    m["content_id"] = content_id(m)
    (build / "manifest.json").write_text(json.dumps(m))


def _copy(built, tmp_path) -> Path:
    return Path(shutil.copytree(built[1], tmp_path / "forged"))


def test_an_honest_build_verifies_and_reports_its_content_id(built):
    result = verify_build(built[1], bank_path=str(built[0]))
    m = read_manifest(built[1])
    assert result["content_id"] == m.content_id == content_id(m)
    assert result["calibrated_thresholds"] == {"dlib": pytest.approx(m.spaces["dlib"].threshold)}
    assert result["checked_groups"] == 40
    assert check_build_id(built[1], m.content_id).build_id == m.build_id


def test_groups_rewritten_with_recomputed_checksums_are_caught(built, tmp_path):
    b = _copy(built, tmp_path)
    codes = np.load(b / "groups.npy")
    np.save(b / "groups.npy", (codes ^ 1).astype(np.int16))  # every face's gender flipped
    _forge(b, lambda m: None)
    with pytest.raises(IndexBuildError, match="groups.npy does not match the bank's own ages and genders"):
        verify_build(b, bank_path=str(built[0]))


def test_a_threshold_raised_above_the_calibrated_one_is_caught(built, tmp_path):
    b = _copy(built, tmp_path)
    _forge(b, lambda m: m["spaces"]["dlib"].update(threshold=0.9999))
    with pytest.raises(IndexBuildError, match=r"threshold 0\.999900 is above the calibrated 0\.92"):
        verify_build(b, bank_path=str(built[0]))


def test_a_looser_threshold_the_operator_chose_is_recorded_and_verifies(built, tmp_path):
    b = build_index(built[0], out=tmp_path / "builds", thresholds={"dlib": 0.95}, make_current=False)
    assert read_manifest(b).spaces["dlib"].threshold_allowed_looser is True
    assert verify_build(b, bank_path=str(built[0]))["ok"]
    stricter = build_index(built[0], out=tmp_path / "builds", thresholds={"dlib": 0.5}, make_current=False)
    assert "threshold_allowed_looser" not in read_manifest(stricter).spaces["dlib"].to_dict()


def test_an_edited_manifest_fails_its_content_id_and_a_pin_catches_a_full_forgery(built, tmp_path):
    pinned = read_manifest(built[1]).content_id
    b = _copy(built, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    m["spaces"]["dlib"]["threshold"] = 0.9  # stricter, checksums untouched: only the content id tells
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexBuildError, match="does not match its content_id"):
        verify_build(b, bank_path=str(built[0]))
    with pytest.raises(IndexBuildError, match="does not match its content_id"):
        check_build_id(b, pinned)
    _forge(b, lambda m: m["spaces"]["dlib"].update(threshold_allowed_looser=True, threshold=0.99))
    assert verify_build(b, bank_path=str(built[0]))["ok"]  # a forger who records the allowance ...
    with pytest.raises(IndexBuildError, match="pipeline pinned"):
        check_build_id(b, pinned)  # ... is caught by the pinned id


def test_two_builds_in_one_second_get_distinct_ids(built, tmp_path):
    a = build_index(built[0], out=tmp_path / "b", make_current=False)
    b = build_index(built[0], out=tmp_path / "b", make_current=False)
    assert a != b and a.is_dir() and b.is_dir()
    assert read_manifest(a).build_id != read_manifest(b).build_id


@pytest.mark.parametrize("value", [5, None, b"bank.h5", "bad\ud800name", "nul\0byte"])
def test_entry_points_refuse_wrong_types_with_facebank_errors(value):
    from facebank import FaceBank
    from facebank.bank import open_bank

    with pytest.raises(InputError):
        open_bank(value)
    if value is not None:  # FaceBank(None) means the current build
        with pytest.raises(InputError):
            FaceBank(value)
