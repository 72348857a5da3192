"""Index builds, their manifest and verification, and picking through FaceBank on real faces."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facebank import FaceBank, build_index, use_build, verify_build
from facebank.bank import copy_bank, open_bank
from facebank.errors import (ConfigError, IndexBuildError, InputError, InvalidEmbedding, NoEligibleTarget, StaleIndex,
                             UnknownSpace)
from facebank.index import groups as G
from facebank.index.build import resolve_build, resolve_thresholds
from facebank.index.manifest import FORMAT_VERSION, read_manifest
from facebank.pick.analyse import analyse_photo
from facebank.vision.image_io import decode_image


@pytest.fixture(scope="module")
def built(small_bank, tmp_path_factory):
    out = tmp_path_factory.mktemp("builds")
    return build_index(small_bank, out=out)


@pytest.fixture(scope="module")
def session(built):
    with FaceBank(built, secret=b"test-secret") as s:
        yield s


@pytest.fixture(scope="module")
def real_faces(assets):
    image = decode_image((assets / "deepface_faces" / "img1.jpg").read_bytes())
    return analyse_photo(image, spaces=["dlib"])


def test_manifest(built, small_bank):
    m = read_manifest(built)
    assert m.format_version == FORMAT_VERSION and m.kind == "facebank.index_build"
    with open_bank(small_bank) as bank:
        assert m.bank.content_hash == bank.content_hash and m.rows == len(bank)
    s = m.spaces["dlib"]
    assert s.dim == 128 and s.index.faiss_class == "IndexFlatIP"
    # The shipped calibration says what it rests on: counts, interval, data with checksums.
    assert "of 379,204 impostor pairs above" in s.threshold_source and "95% CI" in s.threshold_source
    cal = s.threshold_calibration
    # Privacy side: the 95% lower bound on the FAR is >= 1e-3, so the threshold lies at or below a
    # recogniser's own threshold at FAR 1e-3; more pairs above it than the point estimate lets through.
    assert cal["far"] == 1e-3 and cal["bound"] == "privacy" and cal["ci95"][0] >= 1e-3 and cal["supported"]
    assert s.threshold == cal["threshold"] and cal["n_above"] > cal["plain_n_above"] > cal["far_bound_n_above"]
    assert cal["threshold"] < cal["plain_threshold"] < cal["far_bound_threshold"]
    assert {d["folder"]: d["files"] for d in cal["data"]} == {"deepface_faces": 61, "labelled_aligned112": 871}
    assert all(len(d["sha256"]) == 64 for d in cal["data"])
    assert set(m.versions) >= {"facebank", "faiss", "numpy", "h5py", "python"}
    assert sum(m.groups.values()) == m.rows
    assert resolve_build(None, out=built.parent) == built  # made current
    assert verify_build(built)["ok"]


@pytest.mark.slow
def test_verify_catches_damage_and_staleness(built, small_bank, tmp_path, assets):
    copy = tmp_path / built.name
    shutil.copytree(built, copy)
    vec = np.load(copy / "vectors.dlib.npy")
    vec[0, 0] += 1e-3
    np.save(copy / "vectors.dlib.npy", vec)
    with pytest.raises(IndexBuildError, match="checksum"):
        verify_build(copy)
    bank = tmp_path / "bank.h5"
    copy_bank(small_bank, bank)  # a bank is its file and its fragments folder
    fresh = build_index(bank, out=tmp_path / "b2")
    from facebank.ingest import ingest
    from facebank.sources.generated_photos import iter_generated_photos

    extra = next(i for i in iter_generated_photos(assets / "generated_photos" / "age_infant") if i.data)
    assert ingest(str(bank), [extra]).added == 1
    with pytest.raises(StaleIndex):
        verify_build(fresh)
    with pytest.raises(StaleIndex):
        FaceBank(fresh)


def test_current_switch_is_atomic_symlink(small_bank, tmp_path):
    build_index(small_bank, out=tmp_path, build_id="a")
    b = build_index(small_bank, out=tmp_path, build_id="b", make_current=False)
    assert os.readlink(tmp_path / "current") == "a"
    use_build(b)
    assert os.readlink(tmp_path / "current") == "b"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]
    with pytest.raises(InputError):
        build_index(small_bank, out=tmp_path, build_id="a")
    assert resolve_build(tmp_path) == b.resolve()


def test_thresholds_must_come_from_somewhere(small_bank, tmp_path):
    with pytest.raises(ConfigError, match="--threshold"):
        resolve_thresholds(["mobilefacenet"], models={"mobilefacenet": "abc"})  # no default for it
    with pytest.raises(ConfigError, match="--threshold"):
        resolve_thresholds(["dlib"], models={"dlib": "another model's checksum"})  # defaults are per model
    with pytest.raises(ConfigError, match="cosine"):
        build_index(small_bank, out=tmp_path, thresholds={"dlib": 3.0})
    with pytest.raises(UnknownSpace):
        build_index(small_bank, out=tmp_path, spaces=["arcface"])
    b = build_index(small_bank, out=tmp_path, thresholds={"dlib": 0.9}, build_id="given")
    assert read_manifest(b).spaces["dlib"].threshold_source == "given"


def test_default_threshold_at_far_1e4(small_bank, tmp_path):
    # The shipped file holds FAR 1e-3 and 1e-4; a build's FAR picks its entry (a higher cosine).
    b3 = read_manifest(build_index(small_bank, out=tmp_path / "a", make_current=False)).spaces["dlib"]
    b4 = read_manifest(build_index(small_bank, out=tmp_path / "b", far=1e-4, make_current=False)).spaces["dlib"]
    assert b4.threshold > b3.threshold and b4.calibration_far == 1e-4
    assert b4.threshold_calibration["ci95"][0] >= 1e-4 and "FAR 0.0001" in b4.threshold_source


def test_threshold_from_calibration_report(small_bank, tmp_path):
    from facebank.audit.calibration import calibrate

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((10, 128))
    x = np.repeat(centres, 20, axis=0) + 0.3 * rng.standard_normal((200, 128))
    report = calibrate({"dlib": (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)},
                       np.repeat(np.arange(10), 20), fars=(1e-3,), conservative=True)
    # 18,000 impostor pairs: a plain FAR 1e-3 threshold has 18 above (not supported); the
    # conservative one has fewer above and its 95% upper bound <= 1e-3, which is supported.
    t = report.spaces["dlib"].thresholds[0]
    assert t.supported and t.ci_high <= 1e-3 and t.n_above < 18
    path = tmp_path / "calibration.json"
    report.save(path)
    b = build_index(small_bank, out=tmp_path / "b", threshold_from=str(path), far=1e-3)
    s = read_manifest(b).spaces["dlib"]
    assert s.threshold == pytest.approx(t.threshold)
    assert "calibration report" in s.threshold_source
    cal = s.threshold_calibration
    assert (cal["n_above"], cal["n_impostor_pairs"], cal["conservative"]) == (t.n_above, 18000, True)
    assert cal["ci95"] == (t.ci_low, t.ci_high)


def test_pick_for_real_photo(session, real_faces):
    assert len(real_faces) == 1
    face = real_faces[0]
    t = session.pick_target(face.embeddings, age=face.age, gender=face.gender, fallback="widen_age")
    sim = float(face.embeddings["dlib"].astype(np.float64) @ session.bank.vector("dlib", t.row).astype(np.float64))
    assert sim == pytest.approx(t.similarities["dlib"], abs=1e-6) and sim <= t.thresholds["dlib"]
    assert t.gender == face.gender
    assert t.crop().shape == (112, 112, 3) and t.face().id == t.id
    # the build's memory-mapped rows go to the compiled rejection loop as they are, no copy
    assert session.picker._spaces["dlib"].screen


def test_furthest_is_the_true_minimum(session, real_faces):
    q = real_faces[0].embeddings["dlib"]
    t = session.pick_target(q, space="dlib", mode="furthest")
    vecs = session.bank.vectors("dlib").astype(np.float64)
    sims = vecs @ (q / np.linalg.norm(q)).astype(np.float64)
    assert t.row == int(np.argmin(sims))


def test_groups_fallback_and_errors(session, real_faces):
    q = real_faces[0].embeddings["dlib"]
    with pytest.raises(NoEligibleTarget) as exc:
        session.pick_target(q, space="dlib", age=70, gender="female")  # no elderly faces in this bank
    assert exc.value.group_size == 0
    t = session.pick_target(q, space="dlib", age=70, gender="female", fallback="widen_age")
    assert t.fallback and t.fallback.startswith("widen_age:") and t.gender == "female"
    with pytest.raises(NoEligibleTarget) as exc:
        session.pick_target(q, space="dlib", threshold=-1.0)
    assert exc.value.too_similar == exc.value.group_size == 40
    with pytest.raises(InvalidEmbedding):
        session.pick_target(np.zeros(128), space="dlib")
    with pytest.raises(InvalidEmbedding):
        session.pick_target(np.full(128, np.nan), space="dlib")
    with pytest.raises(InvalidEmbedding):
        session.pick_target(np.ones(64), space="dlib")
    with pytest.raises(UnknownSpace):
        session.pick_target(q, space="arcface")


def test_keys_exclusions_and_photo_rules(session, real_faces):
    q = real_faces[0].embeddings["dlib"]
    a = session.pick_target(q, space="dlib", key="photo-1/face-0")
    b = session.pick_target(q, space="dlib", key="photo-1/face-0")
    assert a.id == b.id
    keyed = {session.pick_target(q, space="dlib", key=f"photo-{i}/face-0").id for i in range(30)}
    assert len(keyed) > 5  # different photos get different, unlinkable targets
    c = session.pick_target(q, space="dlib", exclude=[a.id], key="photo-1/face-0")
    assert c.id != a.id
    vecs = session.bank.vectors("dlib")
    faces = [{"embedding": {"dlib": vecs[i]}} for i in (0, 1, 2)]
    targets = session.pick_for_photo(faces, threshold={"dlib": 0.93}, allow_looser=True)
    assert len({t.id for t in targets}) == 3
    for t in targets:
        for f in faces:  # each target is dissimilar to every real face of the photo
            assert float(f["embedding"]["dlib"] @ vecs[t.row]) <= 0.93


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(threshold=st.floats(0.7, 1.0), seed=st.integers(0, 2**32 - 1), row=st.integers(0, 39),
       age=st.sampled_from([None, 5.0, 25.0, 35.0]), gender=st.sampled_from([None, "f", "m"]))
def test_property_no_pick_breaks_the_threshold(session, threshold, seed, row, age, gender):
    q = session.bank.vector("dlib", row)
    try:
        t = session.pick_target(q, space="dlib", threshold=threshold, age=age, gender=gender,
                                rng=np.random.default_rng(seed), allow_looser=True)
    except NoEligibleTarget:
        vecs = session.bank.vectors("dlib").astype(np.float64)
        codes = session.codes
        wanted = np.ones(len(codes), bool)
        if age is not None:
            ag = G.age_group(age)
            wanted &= np.isin(codes, [G.group_code(ag, g) for g in G.GENDERS])
        if gender is not None:
            wanted &= np.isin(codes, [G.group_code(a, gender) for a in G.AGE_GROUPS])
        sims = vecs[session.rows] @ (q / np.linalg.norm(q)).astype(np.float64)
        assert not (wanted & (sims <= threshold - 1e-6)).any()
        return
    sim = float(q.astype(np.float64) @ session.bank.vector("dlib", t.row).astype(np.float64))
    assert sim <= threshold
    if gender is not None:
        assert t.gender == G.gender_name(gender)
    if age is not None:
        assert t.group.split("/")[0] == G.age_group(age)


def test_fp16_session_keeps_the_guarantee(built, real_faces):
    with FaceBank(built, dtype="float16") as s16:
        q = real_faces[0].embeddings["dlib"]
        for seed in range(20):
            t = s16.pick_target(q, space="dlib", rng=np.random.default_rng(seed))
            exact = float(q.astype(np.float64) @ s16.bank.vector("dlib", t.row).astype(np.float64))
            assert exact <= t.thresholds["dlib"]


def test_manifest_doc_lists_fields(built):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "facebank" / "index" / "MANIFEST.md").read_text()
    for key in read_manifest(built).to_dict():
        assert f"`{key}`" in doc, key
    json.dumps(read_manifest(built).to_dict())


def test_removing_a_face_makes_the_build_stale(small_bank, tmp_path):
    from facebank.bank import BankWriter
    from facebank.bank.schema import STATUS_REMOVED

    bank = tmp_path / "bank.h5"
    copy_bank(small_bank, bank)  # a bank is its file and its fragments folder
    b = build_index(bank, out=tmp_path / "builds")
    with BankWriter(bank) as w:
        w.set_attributes([open_bank(bank).ids[0]], {"status": np.array([STATUS_REMOVED])})
    with pytest.raises(StaleIndex):
        verify_build(b)
    assert read_manifest(build_index(bank, out=tmp_path / "builds2")).rows == 39


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_faiss_index_kinds(small_bank, tmp_path, kind):
    import faiss

    b = build_index(small_bank, out=tmp_path, kind=kind, build_id=kind)
    m = read_manifest(b)
    assert m.spaces["dlib"].index.type == kind
    index = faiss.read_index(str(b / "index.dlib.faiss"))
    vecs = np.load(b / "vectors.dlib.npy")
    assert index.ntotal == len(vecs) == m.rows
    _, nearest = index.search(vecs[:5], 1)
    assert (nearest[:, 0] == np.arange(5)).all()  # every vector finds itself
    assert verify_build(b)["ok"]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_proposes_exact_decides(small_bank, built, tmp_path, kind, real_faces):
    b = build_index(small_bank, out=tmp_path, kind=kind, build_id=kind)
    q = real_faces[0].embeddings["dlib"]
    with FaceBank(b) as approx, FaceBank(built) as exact:
        t = approx.pick_target(q, space="dlib", mode="furthest")
        assert t.method == "index_furthest"
        # 40 faces < 256 proposals: every face is a candidate, so this is the true minimum too.
        assert t.id == exact.pick_target(q, space="dlib", mode="furthest").id
        approx.furthest_candidates = 3
        few = approx.pick_target(q, space="dlib", mode="furthest", gender="m")
        assert few.gender == "male" and few.similarities["dlib"] <= few.thresholds["dlib"]
        with pytest.raises(NoEligibleTarget):
            approx.pick_target(q, space="dlib", mode="furthest", threshold=-1.0)


def test_keyed_picks_repeat_across_sessions(built, real_faces):
    q = real_faces[0].embeddings["dlib"]
    with FaceBank(built) as a, FaceBank(built) as b:
        assert [a.pick_target(q, space="dlib", key=f"p{i}").id for i in range(10)] == \
               [b.pick_target(q, space="dlib", key=f"p{i}").id for i in range(10)]
    assert (built / "secret.key").stat().st_mode & 0o777 == 0o600


def test_builds_in_the_same_second_get_distinct_ids(small_bank, tmp_path):
    a = build_index(small_bank, out=tmp_path)
    b = build_index(small_bank, out=tmp_path, kind="hnsw")
    assert a != b and a.is_dir() and b.is_dir()
    assert resolve_build(tmp_path) == b.resolve()


def test_build_config_beside_manifest(small_bank, tmp_path):
    b = build_index(small_bank, out=tmp_path, thresholds={"dlib": 0.9}, build_id="cfg")
    cfg = json.loads((b / "build_config.json").read_text())
    m = read_manifest(b)
    assert cfg["bank"] == m.bank.path and cfg["spaces"] == ["dlib"] and cfg["kind"] == "flat"
    assert cfg["thresholds"] == {"dlib": {"value": 0.9, "source": "given"}}
    assert cfg["index_params"] == {"dlib": m.spaces["dlib"].index.to_dict()["params"]}
    assert cfg["build_id"] == "cfg" and cfg["pipeline"] is None
