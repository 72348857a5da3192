"""The typed build manifest: read -> BuildManifest -> to_dict gives back the JSON read (also keys this
version does not know, and older builds' shapes), and a wrong-typed field is refused naming it."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import numpy as np
import pytest

from facebank.errors import IndexBuildError
from facebank.index.manifest import BuildManifest, content_id, read_manifest


@pytest.fixture(scope="module")
def raw(small_build) -> dict:
    return json.loads((small_build[2] / "manifest.json").read_text())


def _write(tmp_path, data: dict):
    folder = tmp_path / "b"
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder


def _set(data: dict, path: list, value) -> dict:
    data = copy.deepcopy(data)
    where = data
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    return data


def test_a_real_build_round_trips(small_build, raw):
    m = read_manifest(small_build[2])
    assert isinstance(m, BuildManifest)
    # the same JSON, key order included, so the content id recomputed from it is the recorded one
    assert json.dumps(m.to_dict()) == json.dumps(raw)
    assert content_id(m) == m.content_id == raw["content_id"]
    s = m.spaces["dlib"]
    assert (m.rows, m.build_id, m.bank.content_hash) == (raw["rows"], raw["build_id"], raw["bank"]["content_hash"])
    assert (s.dim, s.threshold, s.index.type) == (raw["spaces"]["dlib"]["dim"], raw["spaces"]["dlib"]["threshold"], "flat")
    assert m.default_margin == raw["margin"]["default"] and m.thresholds == {"dlib": raw["spaces"]["dlib"]["threshold"]}


def test_it_is_frozen_all_the_way_down(small_build):
    m = read_manifest(small_build[2])
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.rows = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.spaces["dlib"].threshold = 1.0
    with pytest.raises(TypeError):
        m.spaces["dlib"] = m.spaces["dlib"]
    with pytest.raises(TypeError):
        m.spaces["dlib"].threshold_calibration["threshold"] = 1.0


def test_unknown_fields_are_kept_and_round_trip(tmp_path, raw):
    """A newer writer's optional fields (a space's max norm, say) survive: to_dict and content_id see them."""
    data = _set(_set(raw, ["spaces", "dlib", "max_norm"], 1.25), ["future"], {"a": [1, 2.5, None]})
    data["content_id"] = content_id(data)
    m = read_manifest(_write(tmp_path, data))
    assert m.spaces["dlib"].extra["max_norm"] == 1.25 and m.extra["future"]["a"] == (1, 2.5, None)
    assert json.dumps(m.to_dict()) == json.dumps(data)
    assert content_id(m) == data["content_id"]


def test_an_older_build_round_trips(tmp_path, raw):
    """Version 1 (sha256 only), no margin, no content id: read as such, written back unchanged."""
    data = copy.deepcopy(raw)
    data["format_version"] = 1
    for where in [data, *data["spaces"].values()]:
        del where["xxh3_128"]
    del data["margin"], data["content_id"]
    m = read_manifest(_write(tmp_path, data))
    assert m.xxh3_128 is None and m.margin is None and m.content_id is None and not m.fast
    assert m.default_margin == 1.0
    assert json.dumps(m.to_dict()) == json.dumps(data)


def test_null_and_absent_stay_apart(tmp_path, raw):
    data = _set(raw, ["spaces", "dlib", "threshold_calibration"], None)
    m = read_manifest(_write(tmp_path, data))
    assert m.spaces["dlib"].threshold_calibration is None and m.spaces["dlib"].calibrated_threshold is None
    assert m.to_dict()["spaces"]["dlib"]["threshold_calibration"] is None
    del data["spaces"]["dlib"]["threshold_calibration"]
    assert "threshold_calibration" not in read_manifest(_write(tmp_path, data)).to_dict()["spaces"]["dlib"]


WRONG = {  # field path, wrong value, the refusal
    "build_id": (["build_id"], 5, "field build_id must be a str, got int"),
    "bank.content_hash": (["bank", "content_hash"], None, "field bank.content_hash must be a str, got NoneType"),
    "rows": (["rows"], True, "field rows must be a int, got bool"),
    "dim": (["spaces", "dlib", "dim"], 1.5, "field spaces.dlib.dim must be a int, got float"),
    "threshold": (["spaces", "dlib", "threshold"], "0.5", "field spaces.dlib.threshold must be a int/float, got str"),
    "index.type": (["spaces", "dlib", "index", "type"], 3, "field spaces.dlib.index.type must be a str, got int"),
    "model_sha256": (["spaces", "dlib", "model_sha256"], 7, "field spaces.dlib.model_sha256 must be a str, got int"),
    "looser": (["spaces", "dlib", "threshold_allowed_looser"], "yes",
               "field spaces.dlib.threshold_allowed_looser must be a bool, got str"),
    "calibration": (["spaces", "dlib", "threshold_calibration"], [0.5],
                    "field spaces.dlib.threshold_calibration must be a dict, got list"),
    "margin.default": (["margin", "default"], "0.5", "field margin.default must be a int/float, got str"),
    "margin.sample": (["margin", "sample"], 1.5, "field margin.sample must be a int, got float"),
    "groups": (["groups", "30-39/female"], "many", "field groups must map names to counts"),
    "age_groups": (["age_groups"], [1, 2], "field age_groups must be a list of labels"),
    "created": (["created"], 5, "field created must be a str, got int"),
    "content_id": (["content_id"], None, "field content_id must be a str, got NoneType"),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_a_wrong_typed_field_is_refused_naming_it(tmp_path, raw, case):
    path, value, message = WRONG[case]
    folder = _write(tmp_path, _set(raw, path, value))
    with pytest.raises(IndexBuildError, match=message.replace(".", r"\.")):
        read_manifest(folder)


def test_a_session_refuses_it_too(small_build, tmp_path, raw):
    from facebank.pick.session import FaceBank

    build = tmp_path / "build"
    shutil.copytree(small_build[2], build)
    (build / "manifest.json").write_text(json.dumps(_set(raw, ["spaces", "dlib", "model_sha256"], ["x"])))
    with pytest.raises(IndexBuildError, match=r"field spaces\.dlib\.model_sha256 must be a str, got list"):
        FaceBank(build, bank=small_build[0])
    (build / "manifest.json").write_text(json.dumps(raw))  # the untouched manifest opens and picks
    with FaceBank(build, bank=small_build[0]) as fb:
        t = fb.pick_target(np.ones(128, np.float32), rng=np.random.default_rng(0))
        assert t.similarities["dlib"] <= t.thresholds["dlib"]
