"""The guarantee to the last bit (issue 24): a row is eligible iff the exact cosine of the query as
given and the row as stored is <= the threshold (docs/guarantee.md, "What exact means").

Rows whose exact cosine lies a few 1e-8 (or ulps) above or below the threshold, float32, float64
and float16 queries, stored rows off unit length, float32 and float16 storage, through every pick
path: pick (fast and generic), pick_batch, margin picks, furthest, pick_distinct, furthest_among,
the bank guard; and a build manifest whose recorded row norms are forged.
The oracle (tests/index/exact_oracle.py) decides with integers and fractions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facebank.errors import IndexBuildError, NoEligibleTarget
from facebank.index import cosine
from facebank.index.exact import WrongNorms
from facebank.index.picker import Picker
from tests.index.exact_oracle import brute_cosines, exact_cos, exact_le

D = 64


def _unit64(rng, d):
    x = rng.standard_normal(d)
    return x / np.linalg.norm(x)


def _orthonormal(rng, a):
    """A float64 unit vector orthogonal to the float64 unit vector a."""
    w = rng.standard_normal(a.size)
    w -= (w @ a) * a
    return w / np.linalg.norm(w)


def _bank_around(q, cos0: float, scale: float, rng, n=40):
    """float32 rows: row 0 at cosine ~cos0 to q, scaled by `scale` (off unit length); rows 1..n-1
    at cosine ~0.9 (too similar at any threshold used here)."""
    qh = np.asarray(q, np.float64) / np.linalg.norm(np.asarray(q, np.float64))
    rows = []
    for c in [cos0] + [0.9] * (n - 1):
        r = c * qh + math.sqrt(1 - c * c) * _orthonormal(rng, qh)
        rows.append(r)
    v = np.array(rows).astype(np.float32)
    v[0] = (v[0].astype(np.float64) * scale).astype(np.float32)
    return v


def _picks(picker: Picker, q, thr: float, n: int):
    """Every pick path at threshold thr: the rows they return, or "none" for NoEligibleTarget."""
    s = {"s": thr}
    calls = {
        "random": lambda: picker.pick({"s": q}, thresholds=s, rng=np.random.default_rng(0)).row,
        "random scan": lambda: Picker({"s": picker._spaces["s"].src}, np.zeros(n, np.int16), max_draws=0)
        .pick({"s": q}, thresholds=s, rng=np.random.default_rng(1)).row,
        "furthest": lambda: picker.pick({"s": q}, thresholds=s, mode="furthest").row,
        "margin": lambda: picker.pick({"s": q}, thresholds=s, rng=np.random.default_rng(2), margin=0.5).row,
        "distinct": lambda: picker.pick_distinct([{"s": q}], thresholds=s, rng=np.random.default_rng(3))[0].row,
        "batch": lambda: int(picker.pick_batch({"s": np.stack([q, q])}, thresholds=s, rng=np.random.default_rng(4),
                                               as_arrays=True).rows[1]),
        "among": lambda: getattr(picker.furthest_among([{"s": q}], np.arange(n), thresholds=s), "row", "none"),
    }
    out = {}
    for name, call in calls.items():
        try:
            out[name] = call()
        except NoEligibleTarget:
            out[name] = "none"
    return out


def test_the_issue_probe_is_refused():
    """The outside probe: exact cosine 0.5 + 2.4e-8 at threshold 0.5 was returned (reported as
    0.49999999: the float32 unit query against a stored row just short of unit length). Now
    refused by every path; the same row at 0.5 - 2.4e-8 is returned by every path."""
    rng = np.random.default_rng(24)
    q = rng.standard_normal(512)  # float64, as a caller's embedding often is
    for delta, want in ((2.4e-8, "none"), (-2.4e-8, 0)):
        v = _bank_around(q, 0.5 + delta, 1 - 1e-7, np.random.default_rng(5))
        c = exact_cos(q, v[0])
        assert abs(c - (0.5 + delta)) < 3e-9 and exact_le(q, v[0], 0.5) == (delta < 0)
        if delta > 0:  # what the old definition computed: the float32 unit query against the row
            u = cosine.unit_queries(q, space="s", dim=512)[0].astype(np.float64)
            assert math.fsum((u * v[0].astype(np.float64)).tolist()) <= 0.5
        for dtype in ("float32", "float16"):
            got = _picks(Picker({"s": v}, np.zeros(len(v), np.int16), dtype=dtype), q, 0.5, len(v))
            assert set(got.values()) == {want}, (delta, dtype, got)


@pytest.mark.parametrize("qdtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("scale", [1 - 1e-6, 1 - 1e-7, 1.0, 1 + 1e-7, 1 + 1e-6])
@pytest.mark.parametrize("delta", [3e-8, 1e-8, -1e-8, -3e-8])
def test_just_above_is_refused_and_just_below_returned(qdtype, scale, delta):
    """The threshold a few 1e-8 from the row's exact cosine, rows scaled off unit length,
    float32 / float64 / float16 queries, float32 and float16 storage: every path agrees with the
    oracle."""
    rng = np.random.default_rng(int(1e9 * abs(delta)) + int(scale * 1e7) % 1000)
    q = rng.standard_normal(D).astype(qdtype)
    v = _bank_around(q.astype(np.float64), 0.3, scale, rng)
    thr = exact_cos(q, v[0]) - delta  # the row's exact cosine is thr + delta (within an ulp)
    assert exact_le(q, v[0], thr) == (delta < 0)
    want = 0 if delta < 0 else "none"
    for dtype in ("float32", "float16"):
        got = _picks(Picker({"s": v}, np.zeros(len(v), np.int16), dtype=dtype), q, thr, len(v))
        assert set(got.values()) == {want}, (dtype, got)


@pytest.mark.parametrize("ulps", [-3, -1, 0, 1, 3])
def test_a_few_ulps_from_the_threshold(ulps):
    """Thresholds a few doubles from the row's exact cosine (`ExactSims.ceil`: the smallest double
    at or above it): the row is kept from the ceiling up, dropped below it."""
    rng = np.random.default_rng(100 + ulps)
    q = rng.standard_normal(D)
    v = _bank_around(q, 0.2, 1 - 3e-7, rng)
    t = brute_cosines(v, q).ceil(0)
    for _ in range(abs(ulps)):
        t = math.nextafter(t, math.inf if ulps > 0 else -math.inf)
    want = 0 if ulps >= 0 else "none"
    got = _picks(Picker({"s": v}, np.zeros(len(v), np.int16)), q, t, len(v))
    assert set(got.values()) == {want}, got


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), d=st.sampled_from([2, 3, 8, 64, 512]),
       qdtype=st.sampled_from(["float16", "float32", "float64", "int32"]),
       off=st.sampled_from([0.0, 1e-8, 1e-7, 1e-6, 1e-3]), ulps=st.integers(-4, 4),
       shift=st.sampled_from([0.0, 1e-9, 1e-8, 3e-8, -1e-9, -1e-8, -3e-8]))
def test_the_exact_check_agrees_with_the_oracle(seed, d, qdtype, off, ulps, shift):
    """The exact check of a row (cosine.decide_one, its vectorised and its pair forms) against the
    oracle, at thresholds within ulps and 1e-8 of the exact cosine, for rows off unit length and
    queries of every dtype."""
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal(d) * (1000 if qdtype == "int32" else 1)).astype(qdtype)
    if not np.any(q):
        q[0] = 1
    v = rng.standard_normal(d)
    v = (v / np.linalg.norm(v) * (1 + off * rng.uniform(-1, 1))).astype(np.float32)
    t = exact_cos(q, v) + shift
    for _ in range(abs(ulps)):
        t = math.nextafter(t, math.inf if ulps > 0 else -math.inf)
    want = exact_le(q, v, t)
    for got in (cosine.decide_one(cosine.Given(q.reshape(1, -1)), 0, v.astype(np.float64), t),
                cosine.decide_pair(q, v, t),  # the bank guard's form
                float(cosine.decide(cosine.Given(q.reshape(1, -1)), v.astype(np.float64)[None, :], t)[0])):
        assert (got <= t) == want
        assert abs(got - exact_cos(q, v)) <= 1e-12


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), d=st.sampled_from([3, 16, 64]),
       off=st.sampled_from([0.0, 1e-7, 1e-6, 1e-4]), qdtype=st.sampled_from(["float32", "float64"]),
       dtype=st.sampled_from(["float32", "float16"]), mode=st.sampled_from(["random", "furthest"]),
       margin=st.sampled_from([1.0, 0.5]), shift=st.sampled_from([0.0, 1e-8, -1e-8, 2.4e-8, -2.4e-8]))
def test_picks_agree_with_the_oracle_on_rows_off_unit_length(seed, n, d, off, qdtype, dtype, mode, margin, shift):
    """Whole banks of rows off unit length, the threshold on a row's exact cosine shifted by
    1e-8: every returned row is eligible by the oracle, and NoEligibleTarget only when none is."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, d))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True) * (1 + off * rng.uniform(-1, 1, (n, 1)))).astype(np.float32)
    q = (v[rng.integers(n)] + rng.standard_normal(d) * 0.5).astype(qdtype)
    sims = brute_cosines(v, q)
    thr = float(sims[rng.integers(n)]) + shift
    elig = sims.le(thr)
    picker = Picker({"s": v}, np.zeros(n, np.int16), dtype=dtype)
    try:
        r = picker.pick({"s": q}, thresholds={"s": thr}, mode=mode, rng=rng, margin=margin)
    except NoEligibleTarget:
        assert not elig.any()
        return
    assert elig[r.row] and r.similarities["s"] <= thr
    if mode == "furthest" and margin == 1.0:
        assert abs(sims[r.row] - sims[elig].min()) <= 1e-12
    b = picker.pick_batch({"s": np.stack([q] * 3)}, thresholds={"s": thr}, rng=rng, as_arrays=True)
    assert elig[b.rows].all() and (b.similarities["s"] <= thr).all()


def test_a_forged_smaller_norm_cannot_return_a_row_above_the_threshold():
    """Rows 1e-3 short of unit length, recorded norms forged to (1, 1): the screen's band is then
    too narrow and lets a row through whose exact cosine is above the threshold. It is never
    returned: the exact similarity every returned row gets refuses it (WrongNorms, an
    IndexBuildError). The true norms (computed when none are recorded) refuse it as too similar."""
    rng = np.random.default_rng(9)
    d = 3
    q = rng.standard_normal(d)
    v = _bank_around(q, 0.5 + 1e-4, 1 - 1e-3, rng, n=1)
    assert not exact_le(q, v[0], 0.5)
    qf = q.astype(np.float32)
    honest = Picker({"s": v}, np.zeros(1, np.int16))
    forged = Picker({"s": v}, np.zeros(1, np.int16), norms={"s": (1.0, 1.0)})
    assert forged._spaces["s"].margin < 1e-3 < honest._spaces["s"].margin
    for query in (q, qf):
        assert set(_picks(honest, query, 0.5, 1).values()) == {"none"}
        for call in (lambda: forged.pick({"s": query}, thresholds={"s": 0.5}, rng=np.random.default_rng(0)),
                     lambda: forged.pick({"s": query}, thresholds={"s": 0.5}, mode="furthest"),
                     lambda: forged.pick_batch({"s": np.stack([query])}, thresholds={"s": 0.5},
                                               rng=np.random.default_rng(0))):
            with pytest.raises(IndexBuildError) as err:
                call()
            assert isinstance(err.value, WrongNorms) and "norms" in str(err.value)
    # a forged LARGER norm only widens the band: more rows decided exactly, the same picks
    wide = Picker({"s": v}, np.zeros(1, np.int16), norms={"s": (0.5, 2.0)})
    assert set(_picks(wide, q, 0.5, 1).values()) == {"none"}
    assert set(_picks(wide, q, 0.5 + 2e-4, 1).values()) == {0}


# -- the build's recorded row norms ---------------------------------------------------------------

def _short_bank(root, n=60, dim=8, scale=1 - 1e-3):
    """A bank whose stored vectors are `scale` short of unit length (a model that does not
    normalise exactly), and its flat build at threshold 0.2."""
    from facebank.bank import BankWriter, FaceRecord
    from facebank.index.build import build_index

    bank = root / "bank.h5"
    with BankWriter(bank) as w:
        w.register_space("s", {"model": "t", "sha256": "ab" * 32, "dim": dim})
        for i in range(n):
            v = np.random.default_rng(i).standard_normal(dim)
            w.add_face(FaceRecord(source="folder", source_id=f"f{i}.png", image=b"img%d" % i, image_format="png",
                                  width=64, height=64, box=np.zeros(4, np.float32),
                                  landmarks=np.zeros((5, 2), np.float32), detector="t",
                                  crop=np.full((112, 112, 3), i % 251, np.uint8), age=30.0, gender=i % 2,
                                  embeddings={"s": (v / np.linalg.norm(v) * scale).astype(np.float32)}))
    return bank, build_index(bank, out=root / "builds", thresholds={"s": 0.2}, build_id="n1")


def _rewrite_norms(build, norms) -> None:
    import json

    from facebank.index.manifest import content_id

    path = build / "manifest.json"
    m = json.loads(path.read_text())
    m["spaces"]["s"]["norms"] = norms
    m["content_id"] = content_id(m)
    path.write_text(json.dumps(m))


def test_a_build_records_its_row_norms_and_a_session_uses_them(tmp_path):
    import json

    from facebank.index.exact import norm_range
    from facebank.pick.session import FaceBank

    bank, build = _short_bank(tmp_path)
    m = json.loads((build / "manifest.json").read_text())
    vec = np.load(build / "vectors.s.npy")
    lo, hi = norm_range("s", vec)
    assert m["spaces"]["s"]["norms"] == {"min": lo, "max": hi} and hi < 1 - 9e-4
    with FaceBank(build, bank=bank) as fb:
        assert fb.picker.space("s").norms == (lo, hi)


def test_a_forged_manifest_norm_is_caught_by_verify_and_cannot_return_a_face_above_the_threshold(tmp_path):
    """Recorded norms forged to (1, 1) on rows 1e-3 short: `index verify` refuses the build, and a
    session's picks are each at or below the threshold by the oracle, or refused (WrongNorms or
    the bank guard), never above it."""
    import shutil

    from facebank.errors import FacebankError
    from facebank.index.verify import verify_build
    from facebank.pick.session import FaceBank

    bank, build = _short_bank(tmp_path)
    verify_build(build)  # the honest build verifies
    forged = shutil.copytree(build, tmp_path / "forged")
    _rewrite_norms(forged, {"min": 1.0, "max": 1.0})
    with pytest.raises(IndexBuildError, match="row norms"):
        verify_build(forged, bank_path=str(bank))
    rng = np.random.default_rng(0)
    with FaceBank(forged, bank=bank) as fb:
        assert fb.picker.space("s").norms == (1.0, 1.0)
        vecs = fb.bank.vectors("s")
        for i in range(200):
            q = rng.standard_normal(8)
            try:
                t = fb.pick_target(q, threshold=0.2, rng=rng, allow_looser=True)
            except FacebankError:
                continue
            assert exact_le(q, vecs[t.row], 0.2)
    _rewrite_norms(forged, {"min": 0.5, "max": 2.0})  # a wider bound: verified, picks unchanged
    verify_build(forged, bank_path=str(bank))
