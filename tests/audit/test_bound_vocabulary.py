"""One vocabulary of bounds (privacy | far | none) across manifest, CLI and audit, and the audit's
default equals the shipped defaults' choice: before, `facebank audit` calibrated at the point
estimate and `--conservative` meant the bound opposite to the manifest's `"conservative": true`."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import typer.main
from typer.testing import CliRunner

from facebank.audit.run import AuditConfig
from facebank.cli import app
from facebank.index.build import default_thresholds


def _audit_param(name: str):
    cmd = typer.main.get_command(app).commands["audit"]
    return next(p for p in cmd.params if p.name == name)


def test_the_audit_default_is_the_shipped_bound():
    shipped = default_thresholds()["bound"]
    assert shipped == "privacy"
    assert AuditConfig(bank="b.h5", out="r").bound == shipped
    assert getattr(_audit_param("bound").default, "value", _audit_param("bound").default) == shipped
    help_text = " ".join(CliRunner().invoke(app, ["audit", "--help"], env={"COLUMNS": "200"}).stdout.split())
    assert "privacy|far|none" in help_text and "[default: privacy]" in help_text


@pytest.fixture(scope="module")
def labelled(assets, tmp_path_factory):
    """60 aligned crops of labelled_aligned112 (its first identities), with their identities.csv."""
    src = assets / "labelled_aligned112"
    dst = tmp_path_factory.mktemp("lab")
    with open(next(src.glob("*.csv")), newline="") as f:
        rows = list(csv.reader(f))[1:61]
    for name, _ in rows:
        shutil.copy(src / name, dst / name)
    with open(dst / "identities.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "identity_id"], *rows])
    return dst


def _calibrate(bank, labelled, out, *extra):
    r = CliRunner().invoke(app, ["audit", "--bank", str(bank), "--labelled", str(labelled), "--aligned",
                                 "--out", str(out), *extra])
    assert r.exit_code == 0, r.output
    return json.loads((out / "calibration.json").read_text()), r


def test_audit_calibrates_on_the_privacy_side_by_default(small_bank, labelled, tmp_path):
    cal, _ = _calibrate(small_bank, labelled, tmp_path / "a")
    assert cal["bound"] == "privacy"
    far, r = _calibrate(small_bank, labelled, tmp_path / "b", "--bound", "far")
    assert far["bound"] == "far"
    none, _ = _calibrate(small_bank, labelled, tmp_path / "c", "--bound", "none")
    assert none["bound"] == "none"

    def thr(doc):
        return next(t["threshold"] for t in doc["spaces"]["dlib"]["thresholds"] if t["far"] == 0.01)

    # The privacy side lets the fewest pairs through: its threshold is the lowest of the three.
    assert thr(cal) <= thr(none) <= thr(far)
