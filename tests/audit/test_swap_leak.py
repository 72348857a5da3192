"""The swap audit (Source vs Result) on real labelled photos and a real bank build."""

from __future__ import annotations

import csv
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from facebank.audit import swap_leak as S
from facebank.audit.labelled import LabelledSet
from facebank.cli import app
from facebank.errors import InputError

SWAPPERS = ("classical:geometry=similarity", "classical:geometry=warp")
N_PHOTOS = 12  # deepface_faces' first 12 rows: two people (8 + 4 photos), 68 genuine pairs


@pytest.fixture(scope="module")
def labelled(assets, tmp_path_factory):
    """The first N_PHOTOS labelled photos, in their own folder (the assets are not written to)."""
    src = assets / "deepface_faces"
    with open(src / "identities.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:N_PHOTOS]
    folder = tmp_path_factory.mktemp("labelled")
    for r in rows:
        shutil.copy(src / r["file"], folder / r["file"])
    with open(folder / "identities.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["file", "identity_id"])
        w.writeheader()
        w.writerows({"file": r["file"], "identity_id": r["identity_id"]} for r in rows)
    return folder


@pytest.fixture(scope="module")
def run(small_build, labelled):
    from facebank.audit.api import load_embedders
    from facebank.pick.session import FaceBank

    with FaceBank(small_build[2]) as fb:
        swappers = dict(S.parse_swapper(s) for s in SWAPPERS)
        yield S.run_swaps(fb, LabelledSet(labelled), swappers, load_embedders(["dlib"]), modes=("random",))


def test_every_face_is_swapped_found_again_and_scored(run):
    assert len(run.files) == N_PHOTOS and len(set(run.labels)) == 2
    for key in run.result:
        assert run.target[key]["dlib"].shape == (N_PHOTOS, 128)
        assert np.isfinite(run.target[key]["dlib"]).all(), "a face got no target"
    quality = {r["swapper"]: r for r in S.quality_rows(run)}
    assert all(q["swapped"] == N_PHOTOS and q["detected"] >= 0.9 for q in quality.values()), quality


def test_the_result_leaks_more_than_the_target_and_warp_more_than_similarity(run):
    thr, rows = S.leak_rows(run)
    assert {t["far"] for t in thr} == set(S.SWAP_FARS)
    at = {(r["swapper"], r["compared"]): r for r in rows if r["far"] == 1e-2}
    pairs = at[("-", "source (no swap)")]["pairs"]
    assert pairs == 8 * 7 + 4 * 3
    assert at[("-", "source (no swap)")]["rate"] > 0.9  # real photos of one person match each other
    warp, sim = "classical:geometry=warp", "classical:geometry=similarity"
    assert at[(warp, "target")]["rate"] < 0.1
    assert at[(warp, "result")]["rate"] > at[(warp, "target")]["rate"]
    assert at[(warp, "result")]["rate"] > at[(sim, "result")]["rate"]
    for r in rows:
        assert r["ci95_low"] <= r["rate"] <= r["ci95_high"] and r["matched"] == round(r["rate"] * r["pairs"])
    side = S._side_by_side(rows)
    assert {(r["swapper"], r["mode"]) for r in side} == {(s, "random") for s in SWAPPERS}
    assert all({"source@0.01", "target@0.01", "result@0.001"} <= set(r) for r in side)


def test_grid_shows_source_target_and_each_result(run, tmp_path):
    path = S.write_grid(tmp_path / "grid.png", run, "random")
    image = cv2.imread(str(path))
    assert image.shape[1] == 112 * (2 + len(SWAPPERS))
    assert image.shape[0] == 22 + 112 * min(S.GRID_ROWS, N_PHOTOS)
    row = image[22:134]
    src, tgt, res = row[:, :112], row[:, 112:224], row[:, 224:336]
    assert np.abs(res.astype(int) - src).mean() > 5 and np.abs(res.astype(int) - tgt).mean() > 5


def test_swapper_specs():
    label, swapper = S.parse_swapper("classical:geometry=warp,blend=alpha")
    assert label == "classical:geometry=warp,blend=alpha" and swapper.geometry == "warp" and swapper.blend == "alpha"
    with pytest.raises(InputError, match="key=value"):
        S.parse_swapper("classical:warp")
    with pytest.raises(InputError, match="unknown swapper"):
        S.parse_swapper("morph")


def test_audit_command_anonymize_needs_a_build(small_bank, labelled, tmp_path):
    res = CliRunner().invoke(app, ["audit", "--bank", str(small_bank), "--labelled", str(labelled), "--out",
                                   str(tmp_path / "r"), "--anonymize", "classical"])
    assert res.exit_code == 2, res.output
    assert "--anonymize" in res.output and "--build" in res.output and "Traceback" not in res.output


def test_run_audit_writes_the_section(small_build, labelled, tmp_path):
    from facebank.audit.run import run_audit

    bank, _, build = small_build
    report = run_audit(bank=bank, build=build, labelled=labelled, out=tmp_path / "r", anonymize=SWAPPERS[:1],
                       anonymize_max_photos=N_PHOTOS)
    text = report.read_text()
    assert "## Source vs Result" in text and "result@0.01" in text
    assert (tmp_path / "r" / "images" / "swap_grid_random.png").is_file()
    assert (tmp_path / "r" / "tables" / "raw_swap_audit_rates.csv").is_file()
