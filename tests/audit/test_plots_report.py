"""Plots are valid PNGs of sensible size; the report folder holds every number as files."""

from __future__ import annotations

import base64
import csv
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from facebank.audit.calibration import eer, roc_det
from facebank.audit.plots import plot_det, plot_nn_histogram, plot_pick_grid, plot_score_histogram
from facebank.audit.report import Section, write_report
from facebank.errors import InputError


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(0)
    return rng.normal(0.6, 0.1, 200), rng.normal(0.05, 0.1, 3000)


def _check_png(path, min_side=200):
    assert path.exists()
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(path) as im:
        assert min(im.size) >= min_side and max(im.size) <= 4000


def test_plots_are_pngs(tmp_path, scores):
    gen, imp = scores
    curve = roc_det(gen, imp)
    paths = [
        plot_score_histogram(tmp_path / "hist.png", genuine=gen, impostor=imp, bank=imp[:500],
                             thresholds={"FAR 1e-2": 0.3, "FAR 1e-3": 0.35}),
        plot_det(tmp_path / "det.png", curve, eer=eer(gen, imp)),
        plot_det(tmp_path / "det_probit.png", curve, eer=eer(gen, imp), normal_axes=True),
        plot_nn_histogram(tmp_path / "nn.png", imp[:300], near_duplicate_above=0.3),
    ]
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, size=(6, 112, 112, 3), dtype=np.uint8)
    paths.append(plot_pick_grid(tmp_path / "grid.png", crops, crops[::-1], captions=[f"{v:.2f}" for v in range(6)]))
    for p in paths:
        _check_png(p)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths)  # no temp files left


def test_plot_errors(tmp_path):
    with pytest.raises(InputError):
        plot_score_histogram(tmp_path / "x.png")
    crops = np.zeros((2, 112, 112, 3), dtype=np.uint8)
    with pytest.raises(InputError):
        plot_pick_grid(tmp_path / "g.png", crops, crops[:1])


def test_write_report(tmp_path, scores):
    img = plot_nn_histogram(tmp_path / "elsewhere" / "nn.png", scores[1])
    rows = [{"space": "arcface", "far": 1e-3, "threshold": 0.31, "n_impostor_pairs": 1690, "note": "a|b"},
            {"space": "dlib", "far": 1e-3, "threshold": float("nan"), "n_impostor_pairs": 1690}]
    out = tmp_path / "report"
    md = write_report(out, [Section("Calibration", "Thresholds per space.", {"Thresholds at FAR": rows}, [img]),
                            Section("Empty", tables={"Thresholds at FAR": []})])
    assert md == out / "report.md"
    text = md.read_text()
    assert "## Calibration" in text and "![nn](images/nn.png)" in text
    assert "(tables/thresholds_at_far.csv)" in text and "a\\|b" in text
    _check_png(out / "images" / "nn.png")
    read = list(csv.DictReader(io.StringIO((out / "tables" / "thresholds_at_far.csv").read_text())))
    assert read[0]["threshold"] == "0.31" and read[1]["note"] == ""
    assert json.loads((out / "tables" / "thresholds_at_far.json").read_text())[1]["threshold"] == "nan"
    assert (out / "tables" / "thresholds_at_far_1.csv").exists()  # second table of the same name
    doc = json.loads((out / "report.json").read_text())
    assert [s["title"] for s in doc["sections"]] == ["Calibration", "Empty"]
    assert not [p for p in out.rglob("*.tmp")]
    # report.html: self-contained (the PNG inline as a data URI), cells escaped.
    page = (out / "report.html").read_text()
    png = base64.b64encode((out / "images" / "nn.png").read_bytes()).decode()
    assert f"src='data:image/png;base64,{png}'" in page and "<h2>Calibration</h2>" in page
    assert "<td>a|b</td>" in page and "<td>arcface</td>" in page and "images/nn.png" not in page
    write_report(tmp_path / "r2", [Section("<script>", "a <b> c")])
    assert "<script>" not in (tmp_path / "r2" / "report.html").read_text().split("</style>")[1]


def test_report_refuses_missing_image(tmp_path):
    with pytest.raises(InputError):
        write_report(tmp_path, [Section("x", images=[tmp_path / "nope.png"])])
