"""The operator's sharp edges (issue 23), each failing on the code before it: defaults for --bank and
--build, index list/prune, show by prefix or source id, dedupe that asks, counts true after it,
ingest into a new folder, saved pick runs that never mix, typed errors, help text Rich kept."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from facebank.bank import copy_bank, open_bank
from facebank.cli import app
from facebank.cli.common import read_envelope
from facebank.errors import InputError
from facebank.index.build import build_index


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


@pytest.fixture
def bank(small_bank, tmp_path):
    path = tmp_path / "bank.h5"
    copy_bank(small_bank, path)
    return path


def test_bank_comes_from_the_environment_or_the_user_config(bank, tmp_path):
    r = invoke("info", "--json", env={"FACEBANK_BANK": str(bank), "FACEBANK_CONFIG": str(tmp_path / "none.toml")})
    assert r.exit_code == 0, r.output
    assert read_envelope(r.stdout, "info")["bank"] == str(bank)
    cfg = tmp_path / "conf" / "config.toml"
    cfg.parent.mkdir()
    cfg.write_text(f'bank = "../{bank.name}"\n')  # relative to the file
    r = invoke("info", "--json", env={"FACEBANK_CONFIG": str(cfg), "FACEBANK_BANK": ""})
    assert r.exit_code == 0, r.output
    assert read_envelope(r.stdout, "info")["faces"] == 40
    r = invoke("info", env={"FACEBANK_CONFIG": str(tmp_path / "none.toml"), "FACEBANK_BANK": ""})
    assert r.exit_code == 2 and "no bank given" in r.stderr and "FACEBANK_BANK" in r.stderr
    cfg.write_text('bank = "x"\nbnak = "y"\n')
    r = invoke("info", env={"FACEBANK_CONFIG": str(cfg), "FACEBANK_BANK": ""})
    assert r.exit_code != 0 and "unknown key 'bnak'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_pick_finds_its_build_from_facebank_build_anywhere(small_build, tmp_path, monkeypatch):
    bank, builds, _ = small_build
    with open_bank(bank) as b:
        np.save(tmp_path / "q.npy", np.asarray(b.vectors("dlib")[0]))
    monkeypatch.chdir(tmp_path)  # no index_builds here
    assert invoke("pick", "--embedding", tmp_path / "q.npy", env={"FACEBANK_BUILD": ""}).exit_code != 0
    r = invoke("pick", "--embedding", tmp_path / "q.npy", "--json", env={"FACEBANK_BUILD": str(builds)})
    assert r.exit_code == 0, r.output
    assert read_envelope(r.stdout, "pick")["build"].startswith(str(builds.resolve()))


def test_index_list_and_prune_keep_the_newest_and_the_current(bank, tmp_path):
    builds = tmp_path / "builds"
    made = [build_index(bank, out=builds, build_id=f"b{k}", make_current=(k == 0)) for k in range(3)]
    r = invoke("index", "list", "--builds", builds, "--json")
    assert r.exit_code == 0, r.output
    entries = read_envelope(r.stdout, "index list")["entries"]
    assert [e["build_id"] for e in entries] == ["b0", "b1", "b2"] and [e["current"] for e in entries] == [True, False, False]
    r = invoke("index", "prune", "--keep", 1, "--builds", builds, "--dry-run", "--json")
    assert [e["build_id"] for e in read_envelope(r.stdout, "index prune")["removed"]] == ["b1"]
    assert all(p.exists() for p in made)
    r = invoke("index", "prune", "--keep", 1, "--builds", builds)
    assert r.exit_code == 0, r.output
    assert [p.exists() for p in made] == [True, False, True]  # b0 is current, b2 the newest
    assert not [p for p in builds.iterdir() if p.name.startswith(".pruned")]
    assert invoke("index", "prune", "--keep", 0, "--builds", builds).exit_code == 2


def test_show_takes_a_unique_id_prefix_or_a_source_id(bank):
    with open_bank(bank) as b:
        ids, sources = [str(i) for i in b.ids], [str(s) for s in b.column("source_id")]
    fid = ids[5]
    prefix = next(fid[:k] for k in range(1, 17) if sum(i.startswith(fid[:k]) for i in ids) == 1)
    for key in (prefix, fid):
        r = invoke("show", key, "--bank", bank, "--json")
        assert r.exit_code == 0, r.output
        assert read_envelope(r.stdout, "show")["face"]["id"] == fid
    shared = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1)
    r = invoke("show", shared, "--bank", bank)
    assert r.exit_code == 2 and "give more of the id" in r.stderr
    twice = next((s for s in sources if sources.count(s) > 1), None)
    if twice:  # two export folders can hold the same file name
        assert "matches 2 faces" in invoke("show", twice, "--bank", bank).stderr
    assert invoke("show", "zzzz", "--bank", bank).exit_code == 2


def test_dedupe_asks_and_counts_stay_true_after_it(bank, tmp_path):
    r = invoke("dedupe", "--bank", bank, "--space", "dlib", "--above", 0.97)
    assert r.exit_code == 2 and "re-run with --yes" in r.stderr and "--dry-run" in r.stderr
    with open_bank(bank) as b:
        assert (b.column("status") == 1).all()  # nothing removed without --yes
    r = invoke("dedupe", "--bank", bank, "--space", "dlib", "--above", 0.97, "--yes", "--json")
    assert r.exit_code == 0, r.output
    gone = len(read_envelope(r.stdout, "dedupe")["removed"])
    assert gone > 0
    info = read_envelope(invoke("info", "--bank", bank, "--json").stdout, "info")
    assert sum(info["groups"].values()) == 40 - gone and info["status"]["removed"] == gone
    m = json.loads((build_index(bank, out=tmp_path / "builds") / "manifest.json").read_text())
    assert m["excluded"]["removed"] == gone and m["excluded"]["not_annotated"] == 0 and m["rows"] == 40 - gone


def test_ingest_creates_a_new_bank_in_a_new_folder_and_says_what_it_embedded(assets, tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    for name in ("1_512.jpg", "2_512.jpg"):
        shutil.copy(assets / "generated_photos" / "age_adult" / name, faces / name)
    new = tmp_path / "new" / "deeper" / "bank.h5"
    r = invoke("ingest", "folder", faces, "--bank", new, "--space", "dlib", "--workers", 1)
    assert r.exit_code == 0, r.output
    assert "embedded 0" not in r.stdout and "embedded in dlib (2 faces of the bank have one)" in r.stdout
    with open_bank(new) as b:
        assert len(b) == 2 and b.present("dlib").all()
        fid = str(b.ids[b.column("source_id").tolist().index("2_512.jpg")])
    r = invoke("show", "2_512.jpg", "--bank", new, "--json")  # by its source id
    assert r.exit_code == 0, r.output
    assert read_envelope(r.stdout, "show")["face"]["id"] == fid


def test_pick_save_writes_each_run_into_its_own_folder_with_what_made_it(small_build, tmp_path, assets):
    bank, builds, build = small_build
    photo = assets / "deepface_faces" / "img1.jpg"
    out = tmp_path / "out"
    runs = []
    for seed in (1, None):
        args = ["pick", "--image", photo, "--build", builds, "--save", out, "--fallback", "widen_age", "--json"]
        r = invoke(*args, *(["--seed", seed] if seed is not None else []))
        assert r.exit_code == 0, r.output
        runs.append(read_envelope(r.stdout, "pick"))
    folders = sorted(p for p in out.iterdir())
    assert len(folders) == 2 and {str(f) for f in folders} == {r["saved"] for r in runs}
    import hashlib

    for f in folders:
        run = json.loads((f / "run.json").read_text())
        assert run["build"]["build_id"] == build.name and run["build"]["path"] == str(build.resolve())
        with open_bank(bank) as b:
            assert run["bank"]["content_hash"] == b.content_hash
        assert run["photo"]["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()
        assert isinstance(run["seed"], int)  # drawn and recorded when not given
        side = json.loads(next(f.glob("00_*.json")).read_text())
        assert side["run"] == run
    assert 1 in {json.loads((f / "run.json").read_text())["seed"] for f in folders}


def test_a_row_of_the_wrong_type_is_a_typed_error(small_bank):
    with open_bank(small_bank) as b:
        for bad in ("0", 1.5, None, [0]):
            with pytest.raises(InputError):
                b.image_bytes(bad)
            with pytest.raises(InputError):
                b.crop(bad)
        assert b.image_bytes(np.int64(0)) == b.image_bytes(0)


def test_engine_help_keeps_the_extra_in_brackets():
    r = invoke("embed", "--help", env={"COLUMNS": "250"})
    assert "pip install 'facebank[ray]'" in r.stdout
