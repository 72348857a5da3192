"""The privacy margin and the no-silent-weakening rules through FaceBank, on a bank of real faces."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from facebank import FaceBank, InputError, build_index
from facebank.cli import app
from facebank.config import IndexConfig
from facebank.index.margin import DEFAULT_MARGIN
from facebank.index.manifest import read_manifest


@pytest.fixture(scope="module")
def built(small_bank, tmp_path_factory):
    return build_index(small_bank, out=tmp_path_factory.mktemp("builds"))


@pytest.fixture(scope="module")
def session(built):
    with FaceBank(built) as s:
        yield s


def test_the_build_records_the_default_margin_and_picks_use_it(built, session):
    assert IndexConfig().margin == DEFAULT_MARGIN  # config (a leaf) and index agree on the default
    assert read_manifest(built).margin.default == DEFAULT_MARGIN
    q = session.bank.vector("dlib", 0)
    t = session.pick_target(q, space="dlib", rng=np.random.default_rng(0))
    assert t.margin == DEFAULT_MARGIN and t.cut["exact"]  # 40 faces: the sample is the whole bank
    vecs = session.bank.vectors("dlib")[session.rows].astype(np.float64)
    sims = vecs @ (q / np.linalg.norm(q))
    assert sims[np.flatnonzero(session.rows == t.row)[0]] <= t.cut["tau"]["dlib"] + 1e-6
    assert np.mean(sims <= t.cut["tau"]["dlib"]) == pytest.approx(t.cut["share"], abs=1 / 40)
    full = session.pick_target(q, space="dlib", rng=np.random.default_rng(0), margin=1.0)
    assert full.margin == 1.0 and full.cut is None
    json.dumps(t.to_dict())


def test_margin_restricts_targets_to_the_furthest_faces(session):
    q = session.bank.vector("dlib", 3)
    rows = {session.pick_target(q, space="dlib", margin=0.25, rng=np.random.default_rng(i)).row for i in range(60)}
    vecs = session.bank.vectors("dlib")[session.rows].astype(np.float64)
    sims = dict(zip(session.rows.tolist(), (vecs @ (q / np.linalg.norm(q))).tolist()))
    ranked = sorted(sims, key=sims.get)
    assert rows <= set(ranked[:10])  # ceil(0.25 * 40) furthest faces, no others


def test_looser_thresholds_need_allow_looser_and_are_recorded(session):
    q = session.bank.vector("dlib", 0)
    built_thr = session.thresholds["dlib"]
    with pytest.raises(InputError, match="looser than the build's calibrated"):
        session.pick_target(q, space="dlib", threshold=min(1.0, built_thr + 0.05))
    t = session.pick_target(q, space="dlib", threshold=min(1.0, built_thr + 0.05), allow_looser=True)
    assert t.looser
    assert not session.pick_target(q, space="dlib", threshold=built_thr - 0.05).looser  # stricter: fine


@pytest.mark.parametrize("key", ["sex", "gendre", "embeddings"])
def test_unknown_query_keys_are_errors_not_dropped_constraints(session, key):
    q = session.bank.vector("dlib", 0)
    with pytest.raises(InputError, match="unknown key"):
        session.pick_for_photo([{"embedding": {"dlib": q}, key: "f"}])


def test_cli_pick_margin_and_allow_looser(built, tmp_path, session):
    q = tmp_path / "q.npy"
    np.save(q, session.bank.vector("dlib", 0))
    runner = CliRunner()
    r = runner.invoke(app, ["pick", "--embedding", str(q), "--build", str(built), "--margin", "0.25", "--json"])
    assert r.exit_code == 0, r.output
    target = json.loads(r.stdout)["result"]["picks"][0]["target"]
    assert target["margin"] == 0.25 and target["cut"]["share"] >= 0.25
    r = runner.invoke(app, ["pick", "--embedding", str(q), "--build", str(built), "--margin", "2"])
    assert r.exit_code != 0 and "margin" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["pick", "--embedding", str(q), "--build", str(built), "--threshold", "0.99"])
    assert r.exit_code != 0 and "--allow-looser" in r.output
    r = runner.invoke(app, ["pick", "--embedding", str(q), "--build", str(built), "--threshold", "0.99",
                            "--allow-looser", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["result"]["picks"][0]["target"]["looser"] is True
