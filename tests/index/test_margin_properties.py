"""The privacy margin against brute force: exact thresholds always, targets only from the furthest
fraction (exactly when the group fits the sample, within the stated error when it is sampled),
uniform over that fraction, and margin 1 identical to a pick without one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from facebank.errors import InputError, NoEligibleTarget
from facebank.index.margin import MIN_CUT_ROWS, SAMPLE_ROWS, check_margin
from facebank.index.cosine import unit_queries
from facebank.index.picker import Picker
from tests.index.exact_oracle import brute_cosines


def unit_rows(rng, n, d):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True).astype(np.float32)


def exact_sims(v, q, name):
    """The documented similarity of every row to q, exactly (tests/index/exact_oracle.py): `le(t)`."""
    return brute_cosines(v, q)


def furthest_set(sims: dict[str, np.ndarray], members: np.ndarray, margin: float) -> set[int]:
    """Brute force of the documented score: max over spaces of the row's rank among the members;
    the furthest ceil(margin * m) rows (at least MIN_CUT_ROWS) by that score."""
    m = members.size
    k = max(max(1, math.ceil(margin * m - 1e-9)), min(m, MIN_CUT_ROWS))
    ranks = np.zeros(m, np.int64)
    for a in sims.values():
        r = np.empty(m, np.int64)
        r[np.argsort(a[members], kind="stable")] = np.arange(m)
        ranks = np.maximum(ranks, r)
    cutoff = np.partition(ranks, k - 1)[k - 1]
    return set(members[ranks <= cutoff].tolist())


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 200), spaces=st.integers(1, 3),
       margin=st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0]), thr=st.floats(-0.3, 0.9),
       grouped=st.booleans(), faces=st.integers(1, 3), mode=st.sampled_from(["random", "furthest"]))
def test_margin_targets_pass_the_thresholds_exactly_and_lie_in_the_cut(seed, n, spaces, margin, thr, grouped, faces,
                                                                         mode):
    rng = np.random.default_rng(seed)
    names = [f"s{i}" for i in range(spaces)]
    vecs = {s: unit_rows(rng, n, 8 + 4 * i) for i, s in enumerate(names)}
    groups = rng.integers(0, 3, n)
    picker = Picker(vecs, groups)
    queries = [{s: rng.standard_normal(v.shape[1]).astype(np.float32) for s, v in vecs.items()} for _ in range(faces)]
    codes = [0, 1] if grouped else None
    members = np.flatnonzero(np.isin(groups, codes)) if grouped else np.arange(n)
    per_face = {s: [exact_sims(vecs[s], q[s], s) for q in queries] for s in names}
    sims = {s: np.max(np.stack(per_face[s]), axis=0) for s in names}
    thresholds = {s: thr for s in names}
    try:
        res = picker.pick_distinct(queries, thresholds=thresholds, groups=codes, mode=mode, rng=rng, margin=margin)
    except NoEligibleTarget:
        return
    cut = furthest_set(sims, members, margin) if members.size else set()
    taken = set()
    for r in res:
        for s in names:  # the guarantee: exact, against the build's threshold, every face
            assert all(f.le(thr)[r.row] for f in per_face[s])
            assert r.similarities[s] <= thr
        assert r.row in set(members.tolist()) and r.row not in taken
        taken.add(r.row)
        if margin < 1.0:
            assert r.cut is not None and r.cut.exact  # the whole group fits the sample: the cut is exact
            # the first face's cut is the brute-force one (later faces exclude the earlier targets)
        else:
            assert r.cut is None
    if margin < 1.0 and members.size:
        assert res[0].row in cut


def test_margin_one_is_the_pick_without_a_margin():
    rng = np.random.default_rng(7)
    vecs = {"a": unit_rows(rng, 3000, 32)}
    picker = Picker(vecs, rng.integers(0, 4, 3000), secret=b"s")
    for i in range(50):
        q = {"a": rng.standard_normal(32).astype(np.float32)}
        a = picker.pick(q, thresholds={"a": 0.1}, rng=np.random.default_rng(i), groups=[1, 2])
        b = picker.pick(q, thresholds={"a": 0.1}, rng=np.random.default_rng(i), groups=[1, 2], margin=1.0)
        assert (a.row, a.similarities, a.tries) == (b.row, b.similarities, b.tries)


def test_margin_picks_are_uniform_over_the_cut():
    """Chi-square: every face of the cut is drawn equally often, none outside it."""
    rng = np.random.default_rng(3)
    vecs = {"a": unit_rows(rng, 120, 16), "b": unit_rows(rng, 120, 12)}
    picker = Picker(vecs, np.zeros(120, np.int64))
    q = {"a": rng.standard_normal(16).astype(np.float32), "b": rng.standard_normal(12).astype(np.float32)}
    thr = {"a": 0.5, "b": 0.5}
    sims = {s: exact_sims(vecs[s], q[s], s) for s in vecs}
    eligible = {r for r in furthest_set(sims, np.arange(120), 0.25) if all(sims[s].le(thr[s])[r] for s in sims)}
    draws = 200 * len(eligible)
    g = np.random.default_rng(11)
    counts: dict[int, int] = {}
    for _ in range(draws):
        r = picker.pick(q, thresholds=thr, rng=g, margin=0.25).row
        counts[r] = counts.get(r, 0) + 1
    assert set(counts) == eligible
    assert chisquare([counts[r] for r in sorted(eligible)]).pvalue > 1e-3


def test_sampled_cut_keeps_the_stated_share_within_its_error():
    """A group larger than the sample: the share of the group under the cut has the Beta order
    statistic's spread, sqrt(m (1 - m) / (n + 2)); over many queries it stays within 4 of them."""
    rng = np.random.default_rng(5)
    n = 6000
    vecs = {"a": unit_rows(rng, n, 24), "b": unit_rows(rng, n, 24)}
    picker = Picker(vecs, np.zeros(n, np.int64))
    sd = math.sqrt(0.5 * 0.5 / (SAMPLE_ROWS + 2))
    shares = []
    for _ in range(40):
        q = {s: rng.standard_normal(24).astype(np.float32) for s in vecs}
        res = picker.pick(q, thresholds={"a": 1.0, "b": 1.0}, rng=rng, margin=0.5)
        assert not res.cut.exact and res.cut.sample == SAMPLE_ROWS
        sims = {s: vecs[s] @ unit_queries(q[s], space=s, dim=24)[0] for s in vecs}
        inside = np.ones(n, bool)
        for s in vecs:
            inside &= sims[s] <= res.cut.tau[s]
        shares.append(inside.mean())
        for s in vecs:  # the target lies under the cut in every space
            assert sims[s][res.row] <= res.cut.tau[s] + 1e-6
    shares = np.array(shares)
    assert np.all(np.abs(shares - 0.5) < 4 * sd), shares
    assert abs(shares.mean() - 0.5) < 2 * sd


def test_keyed_margin_picks_reproduce_and_excluded_rows_never_return():
    rng = np.random.default_rng(9)
    vecs = {"a": unit_rows(rng, 2000, 16)}
    picker = Picker(vecs, rng.integers(0, 3, 2000), secret=b"k")
    q = {"a": rng.standard_normal(16).astype(np.float32)}
    a = picker.pick(q, thresholds={"a": 0.3}, key="photo-1/face-0", margin=0.25, groups=[0])
    b = picker.pick(q, thresholds={"a": 0.3}, key="photo-1/face-0", margin=0.25, groups=[0])
    assert a.row == b.row and a.cut == b.cut
    c = picker.pick(q, thresholds={"a": 0.3}, key="photo-1/face-0", margin=0.25, groups=[0], exclude=[a.row])
    assert c.row != a.row


def test_batch_margin_picks_equal_single_picks():
    rng = np.random.default_rng(2)
    vecs = {"a": unit_rows(rng, 1500, 16)}
    picker = Picker(vecs, np.zeros(1500, np.int64))
    qs = rng.standard_normal((6, 16)).astype(np.float32)
    batch = picker.pick_batch({"a": qs}, thresholds={"a": 0.2}, rng=np.random.default_rng(1), margin=0.3)
    g = np.random.default_rng(1)
    single = [picker.pick({"a": q}, thresholds={"a": 0.2}, rng=g, margin=0.3) for q in qs]
    assert [r.row for r in batch] == [r.row for r in single]


def test_thin_group_relaxes_the_cut_to_a_minimum_of_rows():
    rng = np.random.default_rng(4)
    vecs = {"a": unit_rows(rng, 20, 8)}
    picker = Picker(vecs, np.zeros(20, np.int64))
    res = picker.pick({"a": rng.standard_normal(8).astype(np.float32)}, thresholds={"a": 1.0}, rng=rng, margin=0.1)
    assert res.cut.relaxed and res.cut.share == pytest.approx(MIN_CUT_ROWS / 20)


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan"), "half", True, None])
def test_bad_margins_are_one_line_errors(bad):
    with pytest.raises(InputError, match="margin"):
        check_margin(bad)
