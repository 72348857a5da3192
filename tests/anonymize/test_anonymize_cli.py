"""`facebank anonymize` as a user runs it: outputs and sidecars where promised, counts that add up,
kill -9 mid-folder then a re-run that completes with no duplicates, --fallback none exits non-zero,
and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from typer.testing import CliRunner

from facebank.cli import app
from facebank.cli.common import read_envelope
from facebank.vision.image_io import decode_image, image_format

pytestmark = pytest.mark.slow

OUTCOMES = ("passed_first_try", "passed_after_retries", "fallen_back", "kept", "missed", "failed")


def _cli(*args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facebank.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def album(tmp_path_factory, faces_dir):
    """Five real photos in a folder tree (one WebP named .jpg), and the list of their relative paths."""
    root = tmp_path_factory.mktemp("album")
    rels = ["a/img1.jpg", "a/img26.jpg", "b/c/img8.jpg", "img47.jpg", "img11.jpg"]
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((faces_dir / Path(rel).name).read_bytes())
    return root, rels


def _files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def test_folder_run_writes_every_photo_and_sidecar_and_the_counts_add_up(anon_build, album, tmp_path):
    root, rels = album
    out = tmp_path / "out"
    r = _cli("anonymize", root, "--out", out, "--build", anon_build, "--swapper", "pixelate", "--json")
    assert r.returncode == 0, r.stderr
    res = read_envelope(r.stdout, "anonymize")
    assert _files(out) == sorted(rels + [str(Path(p).with_suffix(".json").as_posix()) for p in rels])
    c = res["counts"]
    assert c["photos"] == len(rels) and c["photos_failed"] == c["photos_skipped"] == 0 and res["ok"]
    assert c["faces_found"] == sum(c[k] for k in OUTCOMES) >= len(rels)
    per_photo = {k: 0 for k in ("faces_found", *OUTCOMES)}
    for rel in rels:
        src, dst = root / rel, out / rel
        side = json.loads(dst.with_suffix(".json").read_text())
        assert side["format"] == "facebank.anonymize/1" and side["status"] == "ok" and side["input"] == rel
        assert side["key"] == rel and side["swapper"] == "pixelate" and side["build_id"] == anon_build.name
        assert len(side["bank_content_hash"]) == 64
        assert image_format(dst.read_bytes()) == image_format(src.read_bytes())  # img47: WebP stays WebP
        assert decode_image(dst.read_bytes()).shape == decode_image(src.read_bytes()).shape
        assert (side["width"], side["height"]) == decode_image(src.read_bytes()).shape[1::-1]
        for k in per_photo:
            per_photo[k] += side["counts"][k]
        assert side["counts"]["faces_found"] == len(side["faces"])
        for f in side["faces"]:
            assert f["action"] in ("swapped", "fallback") and {"box", "score", "age", "gender"} <= set(f)
            assert f["attempts"] and all(a["target"]["id"] and a["check"]["thresholds"] for a in f["attempts"])
    assert per_photo == {k: c[k] for k in per_photo}
    assert "faces found" in _cli("anonymize", root, "--out", out, "--build", anon_build, "--swapper",
                                 "pixelate").stdout  # the human summary; everything skipped
    again = read_envelope(_cli("anonymize", root, "--out", out, "--build", anon_build, "--swapper", "pixelate",
                               "--json").stdout, "anonymize")
    assert again["counts"]["photos_skipped"] == len(rels) and again["counts"]["photos"] == 0


def test_kill_9_mid_folder_then_a_rerun_completes_with_no_duplicates(anon_build, album, tmp_path):
    root, rels = album
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "facebank.cli", "anonymize", str(root), "--out", str(out), "--build",
           str(anon_build), "--swapper", "blur", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list(out.rglob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()
            and not p.name.startswith(".")}
    sidecars = [k for k in done if k.endswith(".json")]
    assert 1 <= len(sidecars) < len(rels), "the kill must land mid-folder"
    stamps = {k: (out / k).stat().st_mtime_ns for k in sidecars}
    r = _cli("anonymize", root, "--out", out, "--build", anon_build, "--swapper", "blur", "--json")
    assert r.returncode == 0, r.stderr
    c = read_envelope(r.stdout, "anonymize")["counts"]
    assert c["photos_skipped"] == len(sidecars) and c["photos"] == len(rels) - len(sidecars)
    assert _files(out) == sorted(rels + [str(Path(p).with_suffix(".json").as_posix()) for p in rels])  # no strays
    image_of = {Path(r).with_suffix(".json").as_posix(): r for r in rels}
    for k in sidecars:  # the photos done before the kill were not redone
        image = image_of[k]
        assert (out / k).read_bytes() == done[k] and (out / k).stat().st_mtime_ns == stamps[k]
        assert (out / image).read_bytes() == done[image]
    # A run from scratch, in two worker processes, gives the same bytes as the interrupted and resumed one.
    fresh = tmp_path / "fresh"
    r = _cli("anonymize", root, "--out", fresh, "--build", anon_build, "--swapper", "blur", "--workers", "2")
    assert r.returncode == 0, r.stderr
    for rel in rels:
        assert (fresh / rel).read_bytes() == (out / rel).read_bytes()


def test_fallback_none_fails_the_photo_with_a_non_zero_exit(anon_build, faces_dir, tmp_path):
    # blur as the swapper leaves no face to re-detect: every try fails, and none leaves the face.
    out = tmp_path / "out"
    r = _cli("anonymize", faces_dir / "img1.jpg", "--out", out, "--build", anon_build, "--swapper", "blur",
             "--fallback", "none", "--tries", "2", "--json")
    assert r.returncode == 1
    res = read_envelope(r.stdout, "anonymize")
    assert not res["ok"] and res["counts"]["photos_failed"] == 1 and res["counts"]["failed"] >= 1
    assert "img1.jpg" in res["failures"]
    side = json.loads((out / "img1.json").read_text())
    assert side["status"] == "failed" and side["faces"][0]["action"] == "failed" and len(side["faces"][0]["attempts"]) == 2
    assert (out / "img1.jpg").read_bytes() == (faces_dir / "img1.jpg").read_bytes()  # left as it was, and said so
    again = _cli("anonymize", faces_dir / "img1.jpg", "--out", out, "--build", anon_build, "--swapper", "blur",
                 "--fallback", "none", "--tries", "2")
    assert again.returncode == 1 and "FAILED img1.jpg" in again.stdout  # a failed photo is not "done"


def test_errors_are_one_line(anon_build, faces_dir, tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    cases = [
        (("anonymize", faces_dir / "img1.jpg", "--out", tmp_path / "o", "--build", tmp_path / "nope"), "index build"),
        (("anonymize", faces_dir / "img1.jpg", "--out", a_file, "--build", anon_build), "not a folder"),
        (("anonymize", faces_dir / "img1.jpg", "--out", tmp_path / "o", "--build", anon_build, "--swapper", "nope"),
         "unknown swapper"),
        (("anonymize", tmp_path / "missing.jpg", "--out", tmp_path / "o", "--build", anon_build), "does not exist"),
        (("anonymize", faces_dir / "img1.jpg", "--out", tmp_path / "o", "--build", anon_build, "--detector", "scrfd"),
         "model file"),
    ]
    for args, what in cases:
        r = _cli(*args, timeout=300)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith("error:") and what in lines[0], r.stderr
    assert not (tmp_path / "o").exists()  # nothing made before the error


def test_cli_runner_anonymizes_one_photo_list(anon_build, faces_dir, tmp_path):
    listing = tmp_path / "photos.txt"
    listing.write_text(f"# one photo\n{faces_dir / 'img8.jpg'}\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["anonymize", str(listing), "--out", str(out), "--build", str(anon_build),
                                 "--swapper", "pixelate", "--key", "album", "--json"])
    assert r.exit_code == 0, r.output
    res = read_envelope(r.stdout, "anonymize")
    assert res["counts"]["photos"] == 1 and res["counts"]["faces_found"] >= 1
    side = json.loads((out / "img8.json").read_text())
    assert side["key"] == "album" and side["input"] == "img8.jpg" and (out / "img8.jpg").is_file()
