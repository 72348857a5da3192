"""Every key of a build config is checked by type and range before any work, naming the key; and the
inputs around it (workers, seeds, ages, crop sizes, URLs, paths of the wrong kind) fail early with the
right reason."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facebank.config import load_config
from facebank.errors import ConfigError, InputError, SourceError

FACEBANK = str(Path(sys.executable).with_name("facebank"))

CASES = [
    ("bank = 5", "key bank must be a string"),
    ("vision = 5", r"\[vision\] must be a table"),
    ('[[sources]]\nkind = "stylegan"\npath = "net.pkl"\npsi = "high"', "key psi must be a finite number"),
    ('[vision]\nmin_face_px = "big"', "key min_face_px must be an integer"),
    ("[vision]\nmin_face_px = 0", r"key \[vision\] min_face_px must be an integer from 1"),
    ('[index]\nthresholds = "x"', "key thresholds must be a table"),
    ("[index]\nthresholds = { dlib = 1.5 }", r"key \[index\] thresholds.dlib must be a cosine"),
    ('[index]\nkind = "annoy"', r"key \[index\] kind must be one of flat, ivf, hnsw"),
    ('spaces = "dlib"', r"key spaces must be an array of tables"),
    ('[index]\nspaces = "dlib"', "key spaces must be an array of strings"),
    ("sample_picks = -3", "key sample_picks must be an integer from 0"),
    ("workers = 100000", "workers 100000 is more than"),
    ('[[sources]]\nkind = "stylegan"\npath = "net.pkl"\nseeds = "١-٣"', r"key \[\[sources\]\] seeds: bad seed range"),
    ('[[sources]]\nkind = "stylegan"\npath = "net.pkl"\nclass_idx = -1', r"class_idx must be an integer >= 0"),
    ("sources = 3", r"key sources must be an array of tables"),
    ('[[spaces]]\nspace = "dlib"\n[[spaces]]\nspace = "dlib"', "distinct, non-empty space names"),
    ("[engine]\nactors = \"two\"", "key actors must be an integer"),
]


@pytest.mark.parametrize("body,message", CASES)
def test_each_bad_key_is_refused_naming_it(tmp_path, body, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(body + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)


def test_the_build_command_refuses_a_bad_config_before_any_work(tmp_path):
    cfg = tmp_path / "c.toml"
    bank = tmp_path / "bank.h5"
    cfg.write_text(f'bank = "{bank}"\n[vision]\nmin_face_px = "big"\n')
    r = subprocess.run([FACEBANK, "build", "--config", str(cfg)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "min_face_px" in r.stderr, r.stderr
    assert not bank.exists()


def test_the_shipped_config_still_loads():
    cfg = load_config("default")
    assert cfg.index.kind == "flat" and cfg.sample_picks >= 0


def test_a_folder_where_the_config_belongs(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a TOML file"):
        load_config(tmp_path)


def test_huge_workers_are_refused_before_spawning(tmp_path):
    (tmp_path / "photos").mkdir()
    r = subprocess.run([FACEBANK, "ingest", "folder", str(tmp_path / "photos"), "--bank", str(tmp_path / "b.h5"),
                        "--workers", "100000"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "per CPU" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "b.h5").exists()


def test_seeds_take_ascii_digits_and_overlaps_count_once():
    from facebank.seeds import parse_seeds

    assert parse_seeds("0-5,3-8,2") == list(range(9))
    for text in ("٣", "1-٣", "１２"):
        with pytest.raises(InputError, match="ASCII digits"):
            parse_seeds(text)


def test_age_true_is_not_an_age():
    from facebank.labels import check_age

    for value in (True, False, np.bool_(True)):
        with pytest.raises(InputError, match="number of years"):
            check_age(value)
    assert check_age(np.float32(30)) == 30.0


def test_a_swapper_crop_size_is_capped():
    from facebank.vision.align import align_to_swapper

    image, landmarks = np.zeros((64, 64, 3), np.uint8), np.array([[20, 25], [44, 25], [32, 35], [24, 46], [40, 46]],
                                                                 np.float32)
    for size in (100_000, True, 8):
        with pytest.raises(InputError, match="size must be an integer from 16 to 4096"):
            align_to_swapper(image, landmarks, size)
    assert align_to_swapper(image, landmarks, 224).shape == (224, 224, 3)


@pytest.mark.parametrize("url,message", [
    ("http://127.0.0.1:notaport/x.pkl", "invalid URL"),
    ("http://127.0.0.1:70000/x.pkl", "invalid URL"),
    ("http:///x.pkl", "names no host"),
])
def test_invalid_urls_are_refused_before_connecting(tmp_path, url, message):
    from facebank._io.download import fetch

    with pytest.raises(SourceError, match=message):
        fetch(url, cache_dir=tmp_path)


def test_a_local_file_url_is_tried_once(tmp_path, caplog):
    from facebank._io import download

    calls = []

    def attempt(url, part):
        calls.append(url)
        raise OSError(2, "No such file or directory")
    missing = tmp_path / "gone.pkl"
    with pytest.raises(SourceError, match="file not found"):
        download.fetch(missing.as_uri(), cache_dir=tmp_path / "cache")
    real = tmp_path / "net.pkl"
    real.write_bytes(b"x")
    original = download._attempt
    download._attempt = attempt
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(SourceError):
            download.fetch(real.as_uri(), cache_dir=tmp_path / "cache")
    finally:
        download._attempt = original
    assert len(calls) == 1 and "retry" not in caplog.text


def test_paths_of_the_wrong_kind_say_so(tmp_path, small_bank):
    from facebank._io.download import fetch
    from facebank.bank import BankWriter
    from facebank.index.build import build_index

    with pytest.raises(SourceError, match="is a folder, not a file"):
        fetch(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        build_index(small_bank, out=afile / "builds")
    with pytest.raises(InputError, match="is a file, not a folder"):
        BankWriter(afile / "bank.h5")


def test_a_sub_folder_removed_while_listing_is_skipped_with_a_warning(tmp_path, capsys):
    from facebank.sources.folder import _files

    for rel in ("a/1.jpg", "b/c/2.jpg", "d/3.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    listing = _files(tmp_path)
    first = next(listing)
    top = first.relative_to(tmp_path).parts[0]
    for other in {"a", "b", "d"} - {top}:
        shutil.rmtree(tmp_path / other)  # removed while the tree is being listed
    rest = list(listing)
    assert rest == [] and first.exists()
    assert "warning: folder" in capsys.readouterr().err
