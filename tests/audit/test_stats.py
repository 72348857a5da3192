"""Clopper-Pearson intervals, the conservative threshold and the EER's resolution, against
hand-computed values; ROC/DET/EER against scikit-learn on random scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from facebank.audit.calibration import calibrate, eer, eer_point, roc_det, threshold_at_far
from facebank.audit.stats import clopper_pearson, conservative_count, largest_count_at_most, privacy_count
from facebank.errors import InputError

TIED = [0.1, 0.3, 0.3, 0.3, 0.5, 0.9, 0.2, 0.0, -0.1, -0.2]  # descending: .9 .5 .3 .3 .3 .2 .1 0 -.1 -.2


def test_clopper_pearson_closed_forms():
    # k = 0: upper solves (1 - p)^n = 0.025; k = n: lower solves p^n = 0.025.
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10)))
    assert clopper_pearson(0, 10)[1] == pytest.approx(0.30850, abs=1e-5)
    lo, hi = clopper_pearson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10))


def test_clopper_pearson_textbook_value():
    # 5 of 20: the exact 95% interval is 0.0866 .. 0.4910 (e.g. Agresti & Coull 1998, table 1).
    lo, hi = clopper_pearson(5, 20)
    assert lo == pytest.approx(0.0866, abs=1e-4) and hi == pytest.approx(0.4910, abs=1e-4)


@pytest.mark.parametrize("k, n", [(1, 50), (25, 377_514), (339, 377_514), (7, 9)])
def test_clopper_pearson_defining_tails(k, n):
    # The bounds are the rates at which seeing k or more (lower), k or fewer (upper) has 2.5%.
    lo, hi = clopper_pearson(k, n)
    assert binom.sf(k - 1, n, lo) == pytest.approx(0.025, rel=1e-6)
    assert binom.cdf(k, n, hi) == pytest.approx(0.025, rel=1e-6)


def test_clopper_pearson_rejects_bad_counts():
    for k, n in ((-1, 5), (6, 5), (0, 0)):
        with pytest.raises(InputError):
            clopper_pearson(k, n)


def test_conservative_count_is_the_largest_bounded_count():
    # n = 10: upper(0) = 0.3085, upper(1) = 0.4450, upper(2) = 0.5561.
    assert conservative_count(10, 0.3) is None
    assert conservative_count(10, 0.31) == 0
    assert conservative_count(10, 0.5) == 1
    assert conservative_count(10, 0.56) == 2
    for n, far in ((377_514, 1e-4), (377_514, 1e-3), (1000, 0.05)):
        k = conservative_count(n, far)
        assert clopper_pearson(k, n)[1] <= far < clopper_pearson(k + 1, n)[1]
        assert k <= largest_count_at_most(n, far)


def test_conservative_threshold_hand_computed():
    r = threshold_at_far(TIED, 0.5, conservative=True)
    assert (r.threshold, r.n_above, r.conservative) == (0.5, 1, True)  # k = 1, t = s[1]
    assert r.ci_high == pytest.approx(0.4450, abs=1e-4) and r.supported  # upper bound <= 0.5
    r = threshold_at_far(TIED, 0.3, conservative=True)  # even k = 0 is bounded above 0.3
    assert (r.threshold, r.n_above, r.supported) == (0.9, 0, False)
    plain = threshold_at_far(TIED, 0.5)
    assert (plain.threshold, plain.n_above) == (0.2, 5) and plain.ci_high > 0.5


def test_privacy_count_is_the_smallest_count_bounded_below():
    # n = 10: lower(3) = 0.0667, lower(4) = 0.1216 (Beta(0.025; k, n - k + 1)).
    assert clopper_pearson(3, 10)[0] == pytest.approx(0.0667, abs=1e-4)
    assert clopper_pearson(4, 10)[0] == pytest.approx(0.1216, abs=1e-4)
    assert privacy_count(10, 0.1) == 4
    assert privacy_count(10, 0.69) == 10 and privacy_count(10, 0.7) is None  # lower(10) = 0.6915
    for n, far in ((377_514, 1e-4), (377_514, 1e-3), (1000, 0.05), (10, 0.1)):
        k = privacy_count(n, far)
        assert clopper_pearson(k - 1, n)[0] < far <= clopper_pearson(k, n)[0]
        assert k >= largest_count_at_most(n, far)  # the other side of the point estimate


def test_privacy_threshold_hand_computed_with_ties():
    # far 0.1, n 10: k = 4, s[4] = 0.3 but only 2 pairs lie above 0.3 (three tie at it), so the
    # threshold moves below the ties to 0.2: 5 pairs above, lower bound 0.187 >= 0.1.
    r = threshold_at_far(TIED, 0.1, conservative="privacy")
    assert (r.threshold, r.n_above, r.bound, r.conservative) == (0.2, 5, "privacy", True)
    assert r.ci_low >= 0.1 and r.supported
    far_side = threshold_at_far(TIED, 0.5, conservative="far")
    privacy_side = threshold_at_far(TIED, 0.5, conservative="privacy")
    plain = threshold_at_far(TIED, 0.5)
    assert privacy_side.threshold <= plain.threshold <= far_side.threshold


def test_eer_resolution_is_flagged():
    # 2 genuine pairs above every impostor: EER 0, below 1/2; the rule gives FAR 0, FRR 0.
    cal = calibrate({"s": np.array([[1, 0], [1, 0.01], [0, 1], [0.01, 1], [-1, 0.2]], dtype=np.float32)},
                    ["A", "A", "B", "B", "C"]).spaces["s"]
    assert cal.n_genuine == 2 and cal.eer_resolution == (0.5, 1 / 8)
    assert cal.eer == 0.0 and not cal.eer_resolved and "not resolved" in cal.eer_text
    gen, imp = [0.5, 0.0], [0.0, -1.0, math.sqrt(3) / 2, -0.5]
    e, t, far, frr = eer_point(roc_det(gen, imp))
    assert (e, far, frr) == (0.375, 0.25, 0.5) and t == pytest.approx(0.0)


def _sk(gen, imp):
    sklearn = pytest.importorskip("sklearn.metrics")
    y = np.r_[np.ones(len(gen)), np.zeros(len(imp))]
    return sklearn, y, np.r_[gen, imp]


@pytest.mark.parametrize("seed", range(5))
def test_roc_det_eer_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    gen = np.round(rng.normal(0.6, 0.15, 300), 3)  # rounded: ties between and within classes
    imp = np.round(rng.normal(0.1, 0.15, 5000), 3)
    sk, y, s = _sk(gen, imp)
    ours = roc_det(gen, imp)
    # sklearn accepts score >= u, we accept score > t: the same operating points, as sets.
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    assert set(zip(np.round(fpr, 12), np.round(1 - tpr, 12))) == set(zip(np.round(ours.far, 12), np.round(ours.frr, 12)))
    # det_curve trims the runs where one rate is already 0; every point it keeps is one of ours.
    dfpr, dfnr, _ = sk.det_curve(y, s)
    assert set(zip(np.round(dfpr, 12), np.round(dfnr, 12))) <= set(zip(np.round(ours.far, 12), np.round(ours.frr, 12)))
    # EER by the same rule (smallest |FAR - FRR|, mean of the two) on sklearn's points.
    gap = np.abs(fpr - (1 - tpr))
    k = np.flatnonzero(gap == gap.min())
    assert eer(gen, imp)[0] == pytest.approx(float(np.mean((fpr[k] + 1 - tpr[k]) / 2)))
    # sklearn's threshold u for FAR = #(imp >= u)/n: ours at FAR 1e-2 is the next score below it.
    r = threshold_at_far(imp, 1e-2)
    assert r.achieved_far == pytest.approx(fpr[fpr <= 1e-2].max())
