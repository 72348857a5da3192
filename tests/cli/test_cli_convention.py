"""The one CLI convention: enum choices checked before any work, old spellings kept with a note,
--version, examples in every help, pick --json with what a swapper needs, pick --save files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facebank.bank import copy_bank, open_bank
from facebank.cli import app
from facebank.cli.common import read_envelope


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _commands():
    from facebank.cli import command_paths

    return command_paths()


def test_version_and_completion():
    from facebank import __version__

    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"facebank {__version__}"
    r = invoke("--help")
    assert "--install-completion" in r.stdout and "--version" in r.stdout


@pytest.mark.parametrize("path", _commands(), ids=" ".join)
def test_every_command_has_examples_in_its_help(path):
    r = invoke(*path, "--help")
    assert r.exit_code == 0, r.output
    assert "Examples:" in r.stdout and f"$ facebank {' '.join(path)}" in r.stdout


@pytest.mark.parametrize("args", [
    ("index", "build", "--kind", "bogus"), ("pick", "--mode", "bogus"), ("pick", "--fallback", "sometimes"),
    ("ingest", "folder", "DIR", "--detector", "haar"), ("annotate", "--attributes", "guess"),
    ("generate", "--network", "n.pkl", "--noise-mode", "loud"),
])
def test_a_bad_choice_is_refused_before_any_work(args, tmp_path):
    bank = tmp_path / "made" / "bank.h5"
    args = [a if a != "DIR" else tmp_path for a in args]
    r = invoke(*args, "--bank", bank, *(["--builds", tmp_path / "builds"] if args[0] == "index" else []))
    assert r.exit_code == 2 and "Invalid value" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even an empty folder


@pytest.fixture(scope="module")
def built(small_bank, tmp_path_factory):
    root = tmp_path_factory.mktemp("conv")
    bank = root / "bank.h5"
    copy_bank(small_bank, bank)
    r = invoke("index", "build", "--bank", bank, "--builds", root / "builds", "--space", "dlib", "--json")
    assert r.exit_code == 0, r.output
    return bank, root / "builds", read_envelope(r.stdout)["build"]


def test_old_spellings_are_gone(built, tmp_path):
    """0.1.0 keeps no old spellings: each is a usage error, not a silent alias."""
    bank, builds, build = built
    r = invoke("index", "build", "--bank", bank, "--out", tmp_path / "b", "--spaces", "dlib", "--no-use")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert invoke("index", "info", build, "--json").exit_code == 2  # positional BUILD
    r = invoke("index", "info", "--build", build, "--json")
    assert r.exit_code == 0 and r.stderr == "" and read_envelope(r.stdout)["rows"] == 40
    r = invoke("index", "use", "--build", build, "--json")
    assert r.exit_code == 0 and read_envelope(r.stdout)["build"] == build


def test_threshold_takes_space_eq_cos_or_one_bare_cos(built, tmp_path):
    bank, builds, _ = built
    q = tmp_path / "q.npy"
    np.save(q, open_bank(bank).vector("dlib", 3))
    for form in ("dlib=0.9", "0.9"):
        r = invoke("pick", "--embedding", q, "--build", builds, "--threshold", form, "--json", "--seed", 0)
        assert r.exit_code == 0, r.output
        assert read_envelope(r.stdout)["picks"][0]["target"]["thresholds"] == {"dlib": 0.9}
    r = invoke("pick", "--embedding", q, "--build", builds, "--threshold", "dlib=high")
    assert r.exit_code == 2 and "not a float" in r.output


@pytest.mark.slow
def test_pick_json_and_save_give_a_swapper_everything(built, tmp_path, assets):
    bank, builds, _ = built
    out = tmp_path / "out"
    r = invoke("pick", "--image", assets / "deepface_faces" / "img1.jpg", "--build", builds, "--json", "--seed", 2,
               "--save", out, "--fallback", "widen_age", "--aligned", 128)
    assert r.exit_code == 0, r.output
    picks = read_envelope(r.stdout)["picks"]
    b = open_bank(bank)
    for p in picks:
        assert len(p["face"]["box"]) == 4 and np.asarray(p["face"]["landmarks"]).shape == (5, 2)
        t = p["target"]
        assert t["source_id"] == b.face(t["id"]).source_id
        with Image.open(p["files"]["image"]) as im:
            assert im.size == (b.face(t["id"]).image().shape[1], b.face(t["id"]).image().shape[0])
        with Image.open(p["files"]["crop"]) as im:
            assert im.size == (112, 112)
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), b.crop(t["row"]))
        with Image.open(p["files"]["aligned128"]) as im:
            assert im.size == (128, 128)
        side = json.loads(open(p["files"]["json"]).read())
        assert side["format"] == "facebank.face/1" and side["bank_face"]["source_id"] == t["source_id"]
        assert side["target_image"] == side["files"]["image"] and side["target_crop"] == side["files"]["crop"]
        assert side["target"]["id"] == t["id"] and side["face"]["landmarks"] == p["face"]["landmarks"]
        assert np.asarray(side["target_landmarks"]).shape == (5, 2)
    # a second run goes into its own folder beside the first
    r = invoke("pick", "--image", assets / "deepface_faces" / "img1.jpg", "--build", builds, "--save",
               tmp_path / "o2", "--seed", 2, "--fallback", "widen_age")
    assert r.exit_code == 0 and len(list((tmp_path / "o2").rglob("*.crop.png"))) == len(picks)  # in the run folder


def test_embed_model_takes_space_eq_path_only(built, tmp_path):
    bank, _, _ = built
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not onnx")
    r = invoke("embed", "--bank", bank, "--model", f"mobilefacenet_128d={bad}")
    assert r.exit_code == 1 and "ModelError" in r.stderr
    r = invoke("embed", "--bank", bank, "--space", "mobilefacenet_128d", "--model", bad)  # the old bare PATH
    assert r.exit_code == 2 and "--model takes SPACE=PATH" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = invoke("embed", "--bank", bank, "--space", "arcface", "--model", f"mobilefacenet_128d={bad}")
    assert r.exit_code == 2 and "different spaces" in r.stderr
