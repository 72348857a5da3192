"""The CLI: every command through Typer's CliRunner, real data, exit codes and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from facebank.bank import copy_bank
from facebank.bank import open_bank
from facebank.cli import app
from facebank.cli.common import read_envelope

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error: ")
    for n in needles:
        assert n in text, text


@pytest.fixture()
def bank(small_bank, tmp_path):
    path = tmp_path / "bank.h5"
    copy_bank(small_bank, path)  # a bank is its file and its fragments folder
    return path


@pytest.mark.slow
def test_ingest_folder_embed_info(tmp_path, assets):
    src = tmp_path / "faces"
    src.mkdir()
    for p in sorted((assets / "generated_photos" / "age_infant").glob("*_512.jpg"))[:4]:
        shutil.copy(p, src / p.name)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    bank = tmp_path / "b.h5"
    r = invoke("ingest", "folder", src, "--bank", bank, "--workers", 1, "--json")
    assert r.exit_code == 0, r.output
    out = read_envelope(r.stdout)
    assert out["added"] == 4 and out["rejected"] == {"unreadable": 1}
    r = invoke("embed", "--bank", bank, "--space", "dlib", "--workers", 1)
    assert r.exit_code == 0, r.output
    r = invoke("info", "--bank", bank, "--json")
    info = read_envelope(r.stdout)
    assert info["faces"] == 4 and info["sources"] == {"folder": 4}
    assert info["spaces"]["dlib"]["faces"] == 4 and info["spaces"]["dlib"]["dim"] == 128
    assert info["rejections"] == {"unreadable": 1}
    assert sum(info["groups"].values()) == 4 and all(k.startswith("0-12/") for k in info["groups"])


@pytest.mark.slow
def test_index_build_verify_pick(bank, tmp_path, assets):
    builds = tmp_path / "builds"
    r = invoke("index", "build", "--bank", bank, "--builds", builds, "--json")
    assert r.exit_code == 0, r.output
    manifest = read_envelope(r.stdout)["manifest"]
    assert manifest["rows"] == 40 and manifest["spaces"]["dlib"]["threshold"] > 0.5
    assert invoke("index", "verify", "--builds", builds).exit_code == 0
    assert invoke("index", "info", "--builds", builds, "--json").exit_code == 0
    q = tmp_path / "q.npy"
    np.save(q, open_bank(bank).vector("dlib", 3))
    r = invoke("pick", "--embedding", q, "--build", builds, "--seed", 1, "--json")
    assert r.exit_code == 0, r.output
    (pick,) = read_envelope(r.stdout)["picks"]
    t = pick["target"]
    assert t["similarities"]["dlib"] <= t["thresholds"]["dlib"]
    r = invoke("pick", "--image", assets / "deepface_faces" / "img1.jpg", "--build", builds, "--json",
               "--fallback", "widen_age")
    assert r.exit_code == 0, r.output
    picks = read_envelope(r.stdout)["picks"]
    assert len(picks) >= 1
    for p in picks:
        assert p["target"]["similarities"]["dlib"] <= p["target"]["thresholds"]["dlib"]
    # The bank changes after the build: verify fails, picking refuses (even the cached session).
    from facebank.ingest import ingest
    from facebank.sources.generated_photos import iter_generated_photos

    item = next(i for i in iter_generated_photos(assets / "generated_photos" / "age_infant") if i.data)
    assert ingest(str(bank), [item]).added == 1
    _one_line_error(invoke("index", "verify", "--builds", builds), 1, "StaleIndex")
    _one_line_error(invoke("pick", "--embedding", q, "--build", builds), 1, "StaleIndex")


def _junk(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"nope")
    return junk


def _future_schema(bank):
    with h5py.File(bank, "r+") as f:
        f.attrs["schema_version"] = 7
    return bank


def _not_onnx(tmp_path):
    wrong = tmp_path / "model.onnx"
    wrong.write_bytes(b"not an onnx file")
    return wrong


# (arguments from (tmp_path, a fresh copy of the small bank), exit code, words the one line must hold)
BAD_INPUT = {
    "ingest folder: no such folder": (lambda t, b: ("ingest", "folder", t / "nope", "--bank", t / "b.h5"), 2,
                                      ("does not exist",)),
    "ingest generated-photos: no such export": (
        lambda t, b: ("ingest", "generated-photos", t / "nope", "--bank", t / "b.h5"), 2, ()),
    "info: no such bank": (lambda t, b: ("info", "--bank", t / "missing.h5"), 2, ("does not exist",)),
    "info: not a bank": (lambda t, b: ("info", "--bank", _junk(t)), 1, ("BankError",)),
    "info: future schema": (lambda t, b: ("info", "--bank", _future_schema(b())), 1,
                            ("SchemaVersionError", "version 7")),
    "embed: future schema": (lambda t, b: ("embed", "--bank", _future_schema(b()), "--space", "dlib"), 1,
                             ("SchemaVersionError",)),
    "embed: not an ONNX model": (
        lambda t, b: ("embed", "--bank", b(), "--model", f"mobilefacenet_128d={_not_onnx(t)}"), 1,
        ("ModelError",)),
    "index build: no such bank": (lambda t, b: ("index", "build", "--bank", t / "none.h5", "--builds", t), 2, ()),
    "generate: no such network": (
        lambda t, b: ("generate", "--network", t / "none.pkl", "--bank", t / "g.h5", "--seeds", "0-1"), 2,
        ("not found",)),
    "generate: not a network": (
        lambda t, b: ("generate", "--network", _not_onnx(t), "--bank", t / "g.h5", "--seeds", "0-1"), 1,
        ("ModelError",)),
    "build: no such config": (lambda t, b: ("build", "--config", t / "none.toml"), 2, ("ConfigError",)),
    # A location nobody may write to (sysfs refuses new files even to root).
    "ingest: unwritable bank location": (
        lambda t, b: ("ingest", "folder", t, "--bank", "/sys/facebank-test.h5"), 2, ()),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line(case, tmp_path, request):
    args, code, needles = BAD_INPUT[case]
    _one_line_error(invoke(*args(tmp_path, lambda: request.getfixturevalue("bank"))), code, *needles)


@pytest.mark.slow
def test_generate_tiny_network_resumable(tmp_path, stylegan_fixtures):
    bank = tmp_path / "g.h5"
    net = stylegan_fixtures / "tiny64.pkl"
    r = invoke("generate", "--network", net, "--seeds", "0-9", "--bank", bank, "--no-annotate", "--json")
    assert r.exit_code == 0, r.output
    assert read_envelope(r.stdout)["generated"] == 10
    r = invoke("generate", "--network", net, "--seeds", "0-14", "--bank", bank, "--json")
    out = read_envelope(r.stdout)
    assert out["generated"] == 5 and out["already_in_bank"] == 10
    info = read_envelope(invoke("info", "--bank", bank, "--json").stdout)
    assert info["sources"] == {"stylegan": 15} and info["stylegan_seeds"] == "0-14"
    # Random 64-px networks make no faces: every one is kept for its seed and rejected with a reason.
    assert info["status"] == {"rejected": 15} and sum(info["rejections"].values()) == 15


@pytest.mark.slow
def test_build_from_config_with_source_override(tmp_path, assets):
    src = tmp_path / "export"
    src.mkdir()
    for p in sorted((assets / "generated_photos" / "age_adult").glob("*_512.jpg"))[:12]:
        shutil.copy(p, src / p.name)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'bank = "{tmp_path / "b.h5"}"\nsample_picks = 3\nworkers = 1\n'
                   f'[index]\nout = "{tmp_path / "builds"}"\n[[spaces]]\nspace = "dlib"\n')
    r = invoke("build", "--config", cfg, "--json")
    _one_line_error(r, 2, "no face source")
    r = invoke("build", "--config", cfg, "--source", src, "--json")
    assert r.exit_code == 0, r.output
    out = read_envelope(r.stdout)
    assert out["sources"][0]["kind"] == "folder" and out["sources"][0]["added"] == 12
    assert len(out["sample_picks"]) == 3
    for p in out["sample_picks"]:
        assert p["similarities"]["dlib"] <= p["thresholds"]["dlib"] and p["query"] != p["target"]
    lines = out["text"].splitlines()  # the CLI's rendering of the run (facebank.cli.build_cmd.render)
    assert lines[:2] == [f"bank {tmp_path / 'b.h5'}: 12 faces",
                         f"  source folder {src}: added=12, already=0, duplicates=0, rejected={{}}"]
    assert lines[2] == f"index build {out['build']} (spaces dlib)"
    assert [x.split()[2] for x in lines[3:6]] == [p["query"] for p in out["sample_picks"]]
    made_with = json.loads((tmp_path / "builds" / Path(out["build"]).name / "build_config.json").read_text())
    assert made_with["pipeline"]["bank"] == str(tmp_path / "b.h5")
    assert made_with["pipeline"]["sources"] == [{**made_with["pipeline"]["sources"][0], "kind": "folder", "path": str(src)}]
    again = read_envelope(invoke("build", "--config", cfg, "--source", src, "--json").stdout)
    assert again["sources"][0]["added"] == 0 and again["build"] == out["build"]  # nothing new: same build


def test_default_config_offline_says_what_to_do(tmp_path, monkeypatch):
    import facebank.sources.stylegan.download as dl
    from facebank.errors import SourceError

    def offline(url, target):
        raise SourceError(f"cannot download {url} (offline)")

    monkeypatch.setattr(dl, "_download", offline)
    monkeypatch.setenv("FACEBANK_CACHE", str(tmp_path / "cache"))
    from pathlib import Path

    r = invoke("build", "--bank", tmp_path / "b.h5")  # the default config, shipped in the package
    _one_line_error(r, 2, "SOURCE=", "--source PATH")
