"""Calibration numbers against hand-computed small cases, properties, and real labelled photos."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facebank.audit.calibration import calibrate, eer, pair_scores, roc_det, threshold_at_far
from facebank.audit.calibration_report import CalibrationReport, thresholds_from_report
from facebank.errors import InputError

S60 = math.sqrt(3) / 2  # cos 30 deg = sin 60 deg

# Four unit vectors at 0, 60, 90 and 180 degrees; A = {0, 1}, B = {2, 3}.
#   pair  cosine    kind
#   0-1    0.5      genuine
#   0-2    0        impostor
#   0-3   -1        impostor
#   1-2    0.866    impostor
#   1-3   -0.5      impostor
#   2-3    0        genuine
EMB = np.array([[1, 0], [0.5, S60], [0, 1], [-1, 0]], dtype=np.float32)
IDS = np.array(["A", "A", "B", "B"])
GEN = [0.5, 0.0]
IMP = [0.0, -1.0, S60, -0.5]

# float32 inputs: cosines are exact to ~1e-7.
TOL = 1e-6


def test_pair_scores_hand_computed():
    gen, imp = pair_scores(EMB, IDS)
    np.testing.assert_allclose(gen, GEN, atol=TOL)
    np.testing.assert_allclose(imp, IMP, atol=TOL)
    assert gen.dtype == np.float64


def test_pair_scores_normalises_a_copy():
    x = EMB * 3.0
    before = x.copy()
    gen, _ = pair_scores(x, IDS)
    np.testing.assert_allclose(gen, GEN, atol=TOL)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize(
    "emb, ids",
    [
        (np.zeros((3, 2)), [0, 0, 1]),  # zero norm
        (np.array([[1, 0], [np.nan, 1]]), [0, 1]),
        (np.ones((3,)), [0, 1, 2]),  # 1-d
        (EMB, ["A", "B"]),  # label count
    ],
)
def test_pair_scores_rejects_bad_input(emb, ids):
    with pytest.raises(InputError):
        pair_scores(emb, ids)


def test_roc_points_hand_computed():
    c = roc_det(GEN, IMP)
    # thresholds: just below -1, then -1, -0.5, 0, 0.5, 0.866.
    np.testing.assert_allclose(c.thresholds[1:], [-1, -0.5, 0, 0.5, S60], atol=TOL)
    assert c.thresholds[0] < -1
    np.testing.assert_allclose(c.far, [1, 0.75, 0.5, 0.25, 0.25, 0])
    np.testing.assert_allclose(c.frr, [0, 0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(c.tpr, 1 - c.frr)
    assert (c.n_genuine, c.n_impostor) == (2, 4)


def test_eer_hand_computed():
    # |FAR - FRR| = 1, .75, .5, .25, .75, 1: smallest at t = 0 with FAR .25, FRR .5.
    e, t = eer(GEN, IMP)
    assert e == pytest.approx(0.375)
    assert t == pytest.approx(0.0, abs=TOL)


def test_eer_perfect_separation_is_zero():
    e, t = eer([0.8, 0.9], [0.1, 0.2, 0.3])
    assert e == 0.0
    assert 0.3 <= t < 0.8


# Ten impostor scores with a three-way tie at 0.3; descending: .9 .5 .3 .3 .3 .2 .1 0 -.1 -.2
TIED = [0.1, 0.3, 0.3, 0.3, 0.5, 0.9, 0.2, 0.0, -0.1, -0.2]


@pytest.mark.parametrize(
    "far, threshold, achieved",
    [
        (0.05, 0.9, 0.0),  # k = 0: the top score
        (0.1, 0.5, 0.1),  # k = 1
        (0.2, 0.3, 0.2),  # k = 2
        (0.25, 0.3, 0.2),  # k = 2 (2.5 rounded down)
        (0.3, 0.3, 0.2),  # k = 3 lands inside the tie: still 2 accepted above 0.3
        (0.5, 0.2, 0.5),  # k = 5: s[5] = 0.2, above it .9 .5 .3 .3 .3
    ],
)
def test_threshold_at_far_with_ties(far, threshold, achieved):
    r = threshold_at_far(TIED, far)
    assert r.threshold == pytest.approx(threshold)
    assert r.achieved_far == pytest.approx(achieved)
    assert r.n_above == round(achieved * 10)
    # 10 pairs: never 30 above, and even k = 0 has an upper bound of 0.31 > far.
    assert r.supported is False and "not supported" in r.note
    assert r.n_impostor_pairs == 10 and not r.conservative


def test_threshold_at_far_float_rounding():
    # 0.29 * 100 = 28.999999999999996 in floating point; 29 of 100 is still allowed.
    imp = np.arange(100, dtype=np.float64)
    r = threshold_at_far(imp, 0.29)
    assert r.achieved_far == pytest.approx(0.29)
    assert r.threshold == 70.0


def test_unsupported_note_says_why():
    r = threshold_at_far(np.linspace(-1, 1, 1690), 1e-4)
    assert not r.supported
    assert "0 of 1690" in r.note and "needs 30" in r.note and "37,000" in r.note


def test_fixed_count_rule_for_support():
    # 1690 distinct scores at FAR 1e-3: k = 1 above, upper bound 0.0033 > 1e-3: not supported
    # (the old rule, n >= 1/FAR, called this supported). 30 above at FAR 1e-2 of 3000: supported.
    assert not threshold_at_far(np.linspace(-1, 1, 1690), 1e-3).supported
    r = threshold_at_far(np.linspace(-1, 1, 3000), 1e-2)
    assert r.n_above == 30 and r.supported and r.ci_high > 1e-2


@pytest.mark.parametrize("far", [0.0, 1.0, -0.1, 2.0])
def test_threshold_at_far_rejects_bad_far(far):
    with pytest.raises(InputError):
        threshold_at_far(TIED, far)


scores = st.lists(
    st.floats(min_value=-1, max_value=1, allow_nan=False).map(lambda v: round(v, 2)),  # rounding: many ties
    min_size=1,
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(imp=scores, far=st.floats(min_value=1e-4, max_value=0.999))
def test_threshold_at_far_properties(imp, far):
    r = threshold_at_far(imp, far)
    arr = np.asarray(imp)
    assert r.achieved_far == np.count_nonzero(arr > r.threshold) / arr.size
    assert r.achieved_far <= far  # whether supported or not
    assert r.n_above == np.count_nonzero(arr > r.threshold)
    assert r.supported == (r.n_above >= 30 or r.ci_high <= far)
    assert r.ci_low <= r.achieved_far <= r.ci_high
    # Minimal: the threshold is a score, and any lower threshold also accepts it, exceeding far.
    assert r.threshold in arr
    if r.threshold > arr.min():
        assert np.count_nonzero(arr >= r.threshold) / arr.size > far


@settings(max_examples=100, deadline=None)
@given(gen=scores, imp=scores)
def test_det_monotonic_and_exact(gen, imp):
    c = roc_det(gen, imp)
    assert np.all(np.diff(c.thresholds) > 0)
    assert np.all(np.diff(c.far) <= 0) and np.all(np.diff(c.frr) >= 0)
    assert (c.far[0], c.frr[0], c.far[-1], c.frr[-1]) == (1, 0, 0, 1)
    g, i = np.asarray(gen), np.asarray(imp)
    k = len(c.thresholds) // 2
    t = c.thresholds[k]
    assert c.far[k] == np.mean(i > t) and c.frr[k] == np.mean(g <= t)


def test_report_round_trip_and_thresholds_from_report(tmp_path):
    x = np.concatenate([EMB, -EMB])
    ids = np.concatenate([IDS, ["C", "C", "D", "D"]])
    rep = calibrate({"toy": x, "toy2": x[:, ::-1]}, ids, fars=(0.1, 1e-3), source="toy")
    assert rep.n_faces == 8 and rep.n_identities == 4
    s = rep.spaces["toy"]
    assert s.n_genuine == 4 and s.n_impostor == 24 and s.dim == 2
    doc = json.loads(rep.to_json())
    assert doc["format_version"] == 2 and doc["kind"] == "facebank.calibration"
    back = CalibrationReport.from_json(rep.to_json())
    assert back.spaces == rep.spaces and back.fars == rep.fars and back.source == "toy"
    assert len(rep.rows()) == 4
    with pytest.raises(InputError, match="not supported"):
        thresholds_from_report(rep.save(tmp_path / "toy.json"), 0.1)  # 24 pairs

    # 400 random faces of 200 people: 79,600 impostor pairs; FAR 1e-2 is supported, 1e-5 is not.
    rng = np.random.default_rng(1)
    big = rng.standard_normal((400, 16))
    labels = np.repeat(np.arange(200), 2)
    rep = calibrate({"r": big}, labels, fars=(1e-2, 1e-5), conservative=True)
    path = rep.save(tmp_path / "cal.json")
    assert thresholds_from_report(path, 1e-2) == {"r": rep.spaces["r"].at_far(1e-2).threshold}
    assert CalibrationReport.load(path).conservative
    with pytest.raises(InputError, match="not supported"):
        thresholds_from_report(path, 1e-5)
    with pytest.raises(InputError, match="no threshold at FAR"):
        thresholds_from_report(path, 1e-3)


def test_from_json_refuses_other_versions(tmp_path):
    rep = calibrate({"toy": EMB}, IDS, fars=(0.5,))
    doc = json.loads(rep.to_json())
    doc["format_version"] = 1
    with pytest.raises(InputError, match="format_version"):
        CalibrationReport.from_json(json.dumps(doc))
    with pytest.raises(InputError):
        CalibrationReport.from_json("{not json")
    with pytest.raises(InputError):
        thresholds_from_report(tmp_path / "missing.json", 0.5)


def test_calibrate_needs_both_kinds_of_pair():
    with pytest.raises(InputError, match="genuine and impostor"):
        calibrate({"s": EMB}, ["A", "B", "C", "D"])


@pytest.mark.slow
def test_calibrate_on_real_labelled_photos(assets):
    """61 real photos of 13 people through the real MobileFaceNet ONNX model.

    The crops are plain centre crops, not 5-point aligned (the aligner is written elsewhere),
    so the embeddings are poor; the test checks counts and structure, and only that genuine
    pairs score higher than impostor pairs on average.
    """
    ort = pytest.importorskip("onnxruntime")
    from PIL import Image

    folder = assets / "deepface_faces"
    rows = list(csv.DictReader(io.StringIO((folder / "identities.csv").read_text())))
    session = ort.InferenceSession(str(assets / "onnx_embedders" / "mobilefacenet_128d.onnx"),
                                   providers=["CPUExecutionProvider"])
    embs = []
    for row in rows:
        im = Image.open(folder / row["file"]).convert("RGB")  # img47.jpg is WebP: Pillow sniffs it
        w, h = im.size
        side = int(min(w, h) * 0.8)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
        crop = np.asarray(im.crop(box).resize((112, 112), Image.BILINEAR), dtype=np.float32)
        x = ((crop - 127.5) / 128.0).transpose(2, 0, 1)[None]  # the model's declared contract
        embs.append(session.run(None, {"input": x})[0][0])
    ids = [r["identity_id"] for r in rows]
    rep = calibrate({"mobilefacenet": np.array(embs)}, ids, source=str(folder))
    s = rep.spaces["mobilefacenet"]
    _, counts = np.unique(ids, return_counts=True)
    n_gen = int(sum(c * (c - 1) // 2 for c in counts))
    assert (rep.n_faces, rep.n_identities) == (61, 13)
    assert s.n_genuine == n_gen and s.n_genuine + s.n_impostor == 61 * 60 // 2
    # ~1.7k pairs: FAR 1e-2 has ~17 pairs above, 1e-3 one or two: neither is supported.
    assert [t.n_above for t in s.thresholds] == [int(t.achieved_far * s.n_impostor) for t in s.thresholds]
    assert [t.supported for t in s.thresholds] == [False, False, False]
    assert "not supported" in s.thresholds[2].note
    assert all(t.achieved_far <= t.far for t in s.thresholds)
    assert s.genuine.mean > s.impostor.mean
    assert 0 <= s.eer < 0.5
    assert CalibrationReport.from_json(rep.to_json()).spaces == rep.spaces
