"""Capacity, eligible shares and repeat rates against hand-computed values; the new plots."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facebank.audit import capacity as C
from facebank.audit import plots
from facebank.audit.calibration import roc_det

S60 = np.sqrt(3) / 2
# Angles 0, 30, 90, 180 degrees: cosines 0-1 .866, 0-2 0, 0-3 -1, 1-2 .5, 1-3 -.866, 2-3 0.
X = np.array([[1, 0], [S60, 0.5], [0, 1], [-1, 0]])
GROUPS = np.array(["a", "a", "b", "b"])


def test_capacity_hand_computed():
    rows = {r["group"]: r for r in C.capacity_rows("s", X, GROUPS, threshold=0.6)}
    # all: nearest neighbours 1, 0, 1, 2 with cos .866 .866 .5 0 -> two of four above 0.6.
    assert rows["all"]["nn_above_share"] == 0.5
    assert rows["all"]["pairs_above_share"] == pytest.approx(1 / 6)  # only 0-1 of six pairs
    assert rows["all"]["distinct_identities"] == 3  # 0 and 1 cannot both stay; 2 and 3 can
    assert rows["a"]["nn_above_share"] == 1.0 and rows["a"]["distinct_identities"] == 1
    assert rows["b"]["pairs_above_share"] == 0.0 and rows["b"]["distinct_identities"] == 2


def test_greedy_distinct_is_pairwise_below():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n = C.greedy_distinct(x, 0.5, np.random.default_rng(1))
    assert 1 <= n < 200
    assert C.greedy_distinct(x, 1.0, np.random.default_rng(1)) == 200  # nothing is above 1


def test_eligible_shares_hand_computed():
    sweep = [{"far": 1e-2, "threshold": 0.1, "supported": True}, {"far": 1e-3, "threshold": 0.9, "supported": True}]
    q = np.array([[1.0, 0.0]])
    rows = {(r["group"], r["far"]): r for r in C.eligible_share_rows("s", X, GROUPS, q, sweep)}
    # group a: cos 1 and .866: none <= .1, one <= .9. Group b: 0 and -1: both eligible.
    assert rows[("a", 1e-2)]["mean_eligible_share"] == 0.0 and rows[("a", 1e-3)]["mean_eligible_share"] == 0.5
    assert rows[("b", 1e-2)]["mean_eligible_share"] == 1.0


def test_repeat_rates():
    r = C.repeat_rows({("dlib", "furthest"): ["x", "x", "x", "y", None], ("dlib", "random"): ["a", "b", "c"]})
    fur, ran = r
    assert (fur["picked"], fur["distinct_targets"], fur["repeat_rate"], fur["top_target_share"]) == (4, 2, 0.75, 0.75)
    assert ran["repeat_rate"] == 0.0


def test_det_plot_and_eligible_plot(tmp_path):
    rng = np.random.default_rng(0)
    curve = roc_det(rng.normal(0.6, 0.1, 200), rng.normal(0.0, 0.1, 5000))
    p = plots.plot_det(tmp_path / "det.png", curve, eer=(0.01, 0.3), operating_points={"build": 0.35})
    with Image.open(p) as im:
        assert im.format == "PNG"
    rows = C.eligible_share_rows("s", X, GROUPS, np.array([[1.0, 0.0]]),
                                 [{"far": f, "threshold": t, "supported": f > 1e-4} for f, t in ((1e-2, 0.1), (1e-5, 0.95))])
    with Image.open(plots.plot_eligible_shares(tmp_path / "e.png", rows, build_threshold=0.5)) as im:
        assert im.size[0] >= 600
