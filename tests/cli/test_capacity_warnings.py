"""Capacity said where operators look: `info` and `index build` count faces and distinct identities
per group and warn about empty and thin groups; a pick for an empty group says it is empty."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from facebank.bank import open_bank
from facebank.cli import app
from facebank.cli.common import read_envelope
from facebank.errors import NoEligibleTarget
from facebank.index.capacity import THIN_DISTINCT, greedy_distinct_multi


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_info_json_lists_capacity_per_group_at_the_build_threshold(small_build):
    bank, _, build = small_build
    r = invoke("info", "--bank", bank, "--build", build, "--json")
    assert r.exit_code == 0, r.output
    cap = read_envelope(r.stdout, "info")["capacity"]
    groups = {g["group"]: g for g in cap["groups"]}
    assert len(groups) == 14  # every age/gender group, the empty ones too
    assert groups["60+/female"] == {"group": "60+/female", "faces": 0, "distinct": 0,
                                    "distinct_by_space": {"dlib": 0}, "sampled": False, "status": "empty"}
    with open_bank(bank) as b:
        assert sum(g["faces"] for g in groups.values()) == len(b) == cap["total"]["faces"]
    assert 1 <= cap["total"]["distinct"] <= cap["total"]["faces"]
    for g in groups.values():
        assert g["status"] == ("empty" if g["faces"] == 0 else "thin" if g["distinct"] < THIN_DISTINCT else "ok")
    assert cap["threshold_source"].startswith("build ") and cap["thresholds"]["dlib"] == pytest.approx(0.9239, abs=1e-4)
    assert any("empty groups:" in w and "60+/male" in w for w in cap["warnings"])


def test_info_prints_distinct_identities_and_warnings(small_build):
    bank, _, build = small_build
    r = invoke("info", "--bank", bank, "--build", build)
    assert r.exit_code == 0, r.output
    assert "distinct identities" in r.stdout
    assert "warning: empty groups: " in r.stdout and "60+/female" in r.stdout


def test_info_without_a_build_counts_at_the_shipped_defaults(small_bank, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no index_builds/current here
    r = invoke("info", "--bank", small_bank, "--json")
    assert r.exit_code == 0, r.output
    cap = read_envelope(r.stdout, "info")["capacity"]
    assert cap["threshold_source"] == "shipped defaults" and set(cap["thresholds"]) == {"dlib"}


def test_greedy_count_is_a_maximal_set_of_mutually_distinct_faces(small_bank):
    with open_bank(small_bank) as b:
        x = np.asarray(b.vectors("dlib"), dtype=np.float64)
    thr = 0.9239
    kept = greedy_distinct_multi({"dlib": x}, {"dlib": thr}, np.random.default_rng(3))
    sims = x @ x.T
    inside = sims[np.ix_(kept, kept)]
    np.fill_diagonal(inside, -1)
    assert (inside <= thr).all()  # mutually distinct
    others = np.setdiff1d(np.arange(len(x)), kept)
    assert (sims[np.ix_(others, kept)].max(axis=1) > thr).all()  # and no other face could join
    # Two spaces at once: a face kept in both must be distinct in each.
    both = greedy_distinct_multi({"a": x, "b": x}, {"a": thr, "b": 0.5}, np.random.default_rng(3))
    assert both.size <= kept.size


def test_index_build_warns_about_empty_and_thin_groups(small_bank, tmp_path):
    from facebank.bank import copy_bank

    bank = tmp_path / "bank.h5"
    copy_bank(small_bank, bank)
    r = invoke("index", "build", "--bank", bank, "--builds", tmp_path / "builds", "--json")
    assert r.exit_code == 0, r.output
    assert "warning: empty groups: " in r.stderr and "60+/female" in r.stderr
    cap = read_envelope(r.stdout, "index build")["capacity"]
    assert cap["total"]["faces"] == len(np.load(next((tmp_path / "builds").glob("2*")) / "rows.npy"))


def test_a_pick_for_an_empty_group_says_the_group_is_empty(small_build):
    import facebank

    bank, _, build = small_build
    with open_bank(bank) as b:
        q = np.asarray(b.vectors("dlib")[0], dtype=np.float32)
    with facebank.FaceBank(build) as fb:
        with pytest.raises(NoEligibleTarget) as info:
            fb.pick_target(q, space="dlib", age=75, gender="f")
    msg = str(info.value)
    assert "empty" in msg and "too similar" not in msg and info.value.group_size == 0
