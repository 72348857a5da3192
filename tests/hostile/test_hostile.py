"""Hostile input, faults and tampering (issue 13): every case is one typed error, never a traceback.

CLI cases: exit code, exactly one stderr line `error: <Type>: <what>`, no traceback.
API cases: the facebank error type. A tampered build is refused, or never returns a target
that breaks the threshold against the BANK's own vectors.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from facebank.bank import BankWriter, FaceRecord, open_bank
from facebank.errors import FacebankError, IndexBuildError, InputError, StaleIndex, UnknownSpace
from facebank.index.build import build_index
from facebank.pick.session import FaceBank
from facebank.cli.common import read_envelope

runner = CliRunner()
DIM = 8


def _record(i: int) -> FaceRecord:
    rng = np.random.default_rng(i)
    v = rng.standard_normal(DIM).astype(np.float32)
    return FaceRecord(source="folder", source_id=f"f{i}.png", image=b"img%d" % i, image_format="png", width=64,
                      height=64, box=np.zeros(4, np.float32), landmarks=np.zeros((5, 2), np.float32), detector="t",
                      crop=np.zeros((112, 112, 3), np.uint8), age=float(20 + i % 40), gender=i % 2,
                      embeddings={"s": v / np.linalg.norm(v)})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(bank, build dir) of 300 synthetic faces in one 8-d space: read-only, copy before damaging."""
    root = tmp_path_factory.mktemp("hostile")
    bank = root / "bank.h5"
    with BankWriter(bank) as w:
        w.register_space("s", {"model": "t", "sha256": "ab" * 32, "dim": DIM})
        for i in range(300):
            w.add_face(_record(i))
    build = build_index(bank, out=root / "builds", thresholds={"s": 0.3}, build_id="b1")
    return bank, build


def _copy_build(built, tmp_path) -> Path:
    dst = tmp_path / "build"
    shutil.copytree(built[1], dst)
    return dst


def cli(*args: str):
    from facebank.cli import app

    return runner.invoke(app, [str(a) for a in args])


def assert_one_line(result, code: int, kind: str | None = None) -> str:
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    if kind:
        assert lines[0].startswith(f"error: {kind}: "), lines[0]
    return lines[0]


# -- 1. the guarantee against a bad build --

def _tamper_flip(b: Path) -> None:
    vec = np.load(b / "vectors.s.npy")
    np.save(b / "vectors.s.npy", -vec)  # every similarity flips sign: "dissimilar" faces are the close ones


def _tamper_truncate(b: Path) -> None:
    data = (b / "vectors.s.npy").read_bytes()
    (b / "vectors.s.npy").write_bytes(data[: len(data) // 2])


def _tamper_swap(b: Path) -> None:
    vec = np.load(b / "vectors.s.npy")
    np.save(b / "vectors.s.npy", vec[::-1].copy())  # right shape and values, wrong rows


def _tamper_rows(b: Path) -> None:
    rows = np.load(b / "rows.npy")
    np.save(b / "rows.npy", np.roll(rows, 1))


def _tamper_ids(b: Path) -> None:
    ids = np.load(b / "ids.npy")
    np.save(b / "ids.npy", ids[::-1].copy())


def _tamper_pickle(b: Path) -> None:
    np.save(b / "rows.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)


TAMPER = {"flipped": _tamper_flip, "truncated": _tamper_truncate, "swapped": _tamper_swap,
          "rows": _tamper_rows, "ids": _tamper_ids, "pickle_rows": _tamper_pickle}


@pytest.mark.parametrize("how", sorted(TAMPER))
def test_tampered_build_is_refused(built, tmp_path, how):
    b = _copy_build(built, tmp_path)
    TAMPER[how](b)
    with pytest.raises(IndexBuildError, match="checksum"):
        FaceBank(b, bank=built[0])
    q = tmp_path / "q.npy"
    np.save(q, np.ones(DIM, np.float32))
    assert_one_line(cli("pick", "--embedding", q, "--build", b, "--bank", built[0]), 1, "IndexBuildError")


@pytest.mark.parametrize("how", ["flipped", "swapped", "rows"])
def test_tampered_build_with_forged_checksums_never_breaks_the_threshold(built, tmp_path, how):
    """Someone rewrites the manifest's checksums too: the bank's own vector still has the last word."""
    from facebank._io.download import sha256_file

    b = _copy_build(built, tmp_path)
    TAMPER[how](b)
    m = json.loads((b / "manifest.json").read_text())
    m["files"] = {k: sha256_file(b / k) for k in m["files"]}
    m["spaces"]["s"]["files"] = {k: sha256_file(b / k) for k in m["spaces"]["s"]["files"]}
    (b / "manifest.json").write_text(json.dumps(m))
    try:
        session = FaceBank(b, bank=built[0])
    except (IndexBuildError, StaleIndex):
        return  # refused at open (rows/ids desynchronised from the bank)
    with open_bank(built[0]) as bank:
        truth = bank.vectors("s")
    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(60):
        q = rng.standard_normal(DIM).astype(np.float32)
        try:
            t = session.pick_target(q, threshold=-0.2, rng=rng)
        except (IndexBuildError, StaleIndex):
            refused += 1
            continue
        except FacebankError:
            continue
        u = q.astype(np.float64) / np.linalg.norm(q.astype(np.float64))
        assert float(truth[t.row].astype(np.float64) @ u) <= -0.2 + 1e-6
    assert refused > 0
    session.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), threshold=st.floats(-0.6, 0.6), batch=st.booleans())
def test_property_targets_satisfy_the_threshold_against_the_bank(built, seed, threshold, batch):
    session = FaceBank(built[1], bank=built[0])
    with open_bank(built[0]) as bank:
        truth = bank.vectors("s").astype(np.float64)
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((3, DIM)).astype(np.float32)
    try:
        targets = (session.pick_targets(q, threshold=threshold, rng=rng, allow_looser=True) if batch
                   else [session.pick_target(x, threshold=threshold, rng=rng, allow_looser=True) for x in q])
    except FacebankError as exc:
        assert type(exc).__name__ == "NoEligibleTarget"
        return
    finally:
        session.close()
    for t, x in zip(targets, q):
        u = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64))
        assert truth[t.row] @ u <= threshold + 1e-9
        assert t.id == open_bank(built[0]).ids[t.row]


# -- 2. nothing dropped silently --

def test_same_file_name_in_two_sub_folders_is_two_faces(tmp_path, assets):
    from facebank.sources.generated_photos import iter_generated_photos

    src = sorted((assets / "generated_photos" / "age_adult").glob("*.jpg"))[:2]
    exp = tmp_path / "export"
    (exp / "a").mkdir(parents=True)
    (exp / "b").mkdir()
    shutil.copy(src[0], exp / "a" / "1_512.jpg")
    shutil.copy(src[1], exp / "b" / "1_512.jpg")
    (exp / "dataset.csv").write_text("Image,Gender,Age\na/1_512.jpg,male,adult\nb/1_512.jpg,female,adult\n")
    items = list(iter_generated_photos(exp))
    assert sorted(i.source_id for i in items) == ["a/1_512.jpg", "b/1_512.jpg"]
    assert len({i.data for i in items}) == 2 and all(i.rejection is None for i in items)


def test_ingest_counts_add_up(tmp_path):
    from facebank.ingest.stages import Summary, _check_counts

    s = Summary(added=2, items=3)
    with pytest.raises(RuntimeError):
        _check_counts(s)
    s.rejected["no_face"] += 1
    _check_counts(s)


# -- 3. one boundary for hostile input: CLI cases --

def _bank_copy(built, tmp_path) -> Path:
    from facebank.bank import copy_bank

    dst = tmp_path / "bank.h5"
    copy_bank(built[0], dst)
    return dst


def _attr(name, value):
    def f(bank: Path):
        with h5py.File(bank, "r+") as h:
            h.attrs[name] = value
    return f


def _manifest(value):
    def f(b: Path):
        (b / "manifest.json").write_text(json.dumps(value))
    return f


def _manifest_field(path, value):
    def f(b: Path):
        m = json.loads((b / "manifest.json").read_text())
        d = m
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        (b / "manifest.json").write_text(json.dumps(m))
    return f


def _short_column(bank: Path) -> None:
    with h5py.File(bank, "r+") as h:
        del h["faces/age"]
        h["faces/age"] = np.zeros(5, np.float32)


BANK_DAMAGE = {
    "column_lengths": (_short_column, 1),
    "required_features_garbage": (_attr("required_features", "nope"), 1),
    "schema_version_str": (_attr("schema_version", "two"), 1),
    "not_hdf5": (lambda b: b.write_bytes(b"not an hdf5 file at all" * 10), 1),
    "zero_byte": (lambda b: b.write_bytes(b""), 1),
    "truncated": (lambda b: b.write_bytes(b.read_bytes()[:3000]), 1),
    "manifest_attr_garbage": (_attr("manifest", "{not json"), 1),
}


@pytest.mark.parametrize("case", sorted(BANK_DAMAGE))
@pytest.mark.parametrize("command", ["info", "pick"])
def test_damaged_bank(built, tmp_path, case, command):
    bank = _bank_copy(built, tmp_path)
    damage, code = BANK_DAMAGE[case]
    damage(bank)
    if command == "info":
        r = cli("info", "--bank", bank)
    else:
        q = tmp_path / "q.npy"
        np.save(q, np.ones(DIM, np.float32))
        r = cli("pick", "--embedding", q, "--build", built[1], "--bank", bank)
    assert_one_line(r, code)
    assert "internal" not in r.stderr


def test_bank_path_is_a_directory(tmp_path):
    (tmp_path / "d.h5").mkdir()
    line = assert_one_line(cli("info", "--bank", tmp_path / "d.h5"), 2, "InputError")
    assert "is a directory" in line


BUILD_DAMAGE = {
    "manifest_list": (_manifest([1, 2]), "IndexBuildError"),
    "manifest_only_kind": (_manifest({"kind": "facebank.index_build"}), "IndexBuildError"),
    "manifest_rows_str": (_manifest_field(["rows"], "many"), "IndexBuildError"),
    "manifest_spaces_list": (_manifest_field(["spaces"], ["s"]), "IndexBuildError"),
    "manifest_dim_str": (_manifest_field(["spaces", "s", "dim"], "8"), "IndexBuildError"),
    "manifest_threshold_str": (_manifest_field(["spaces", "s", "threshold"], "x"), "IndexBuildError"),
    "manifest_files_traversal": (_manifest_field(["files", "../../x"], "0" * 64), "IndexBuildError"),
    "manifest_bank_null": (_manifest_field(["bank"], None), "IndexBuildError"),
    "vectors_missing": (lambda b: (b / "vectors.s.npy").unlink(), "IndexBuildError"),
    "vectors_truncated": (_tamper_truncate, "IndexBuildError"),
    "rows_pickle": (_tamper_pickle, "IndexBuildError"),
}


@pytest.mark.parametrize("case", sorted(BUILD_DAMAGE))
@pytest.mark.parametrize("command", ["pick", "index info", "index verify"])
def test_damaged_build(built, tmp_path, case, command):
    b = _copy_build(built, tmp_path)
    damage, kind = BUILD_DAMAGE[case]
    damage(b)
    if command == "pick":
        q = tmp_path / "q.npy"
        np.save(q, np.ones(DIM, np.float32))
        r = cli("pick", "--embedding", q, "--build", b, "--bank", built[0])
    elif command == "index info":
        r = cli("index", "info", "--build", b)
        if case.startswith(("vectors", "rows")):  # info reads only the manifest
            assert r.exit_code == 0, r.stderr
            return
    else:
        r = cli("index", "verify", "--build", b, "--bank", built[0])
    assert_one_line(r, 1, kind)


def _npy(tmp_path, make):
    p = tmp_path / "q.npy"
    make(p)
    return p


PICK_INPUT = {
    "embedding_0d": (lambda p: np.save(p, np.array(1.0)), []),
    "embedding_3d": (lambda p: np.save(p, np.ones((2, 2, DIM))), []),
    "embedding_npz": (lambda p: np.savez(p.with_suffix(""), a=np.ones(DIM)) or p.with_suffix(".npz").rename(p), []),
    "embedding_pickle": (lambda p: np.save(p, np.array([{}], dtype=object), allow_pickle=True), []),
    "embedding_text": (lambda p: p.write_text("hello"), []),
    "embedding_strings": (lambda p: np.save(p, np.array(["a"] * DIM)), []),
    "embedding_wrong_dim": (lambda p: np.save(p, np.ones(DIM + 1)), []),
    "embedding_nan": (lambda p: np.save(p, np.full(DIM, np.nan)), []),
    "seed_negative": (lambda p: np.save(p, np.ones(DIM)), ["--seed", "-1"]),
    "threshold_2": (lambda p: np.save(p, np.ones(DIM)), ["--threshold", "2"]),
    "threshold_minus_2": (lambda p: np.save(p, np.ones(DIM)), ["--threshold", "-2"]),
    "threshold_nan": (lambda p: np.save(p, np.ones(DIM)), ["--threshold", "nan"]),
    "age_negative": (lambda p: np.save(p, np.ones(DIM)), ["--age", "-3"]),
    "gender_bad": (lambda p: np.save(p, np.ones(DIM)), ["--gender", "x"]),
    "mode_bad": (lambda p: np.save(p, np.ones(DIM)), ["--mode", "nope"]),
    "space_unknown": (lambda p: np.save(p, np.ones(DIM)), ["--space", "nope"]),
}


@pytest.mark.parametrize("case", sorted(PICK_INPUT))
def test_pick_bad_input(built, tmp_path, case):
    make, extra = PICK_INPUT[case]
    q = _npy(tmp_path, make)
    r = cli("pick", "--embedding", q, "--build", built[1], "--bank", built[0], *extra)
    assert_one_line(r, 2)


@pytest.mark.parametrize("args", [["--device", "nope"], ["--device", "cuda:99"], ["--seeds", "0-4294967295"],
                                  ["--seeds", "5-1"], ["--seeds", "x"]])
def test_generate_bad_options(tmp_path, args):
    net = tmp_path / "net.pkl"
    net.write_bytes(b"not a pickle")
    r = cli("generate", "--network", net, "--bank", tmp_path / "b.h5", *args)
    assert_one_line(r, 2, "InputError")


# -- sources: one bad item is a rejection, never the end of the run --

def _export(tmp_path, files: dict) -> Path:
    root = tmp_path / "export"
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return root


JSON_SHAPES = {
    "meta_list": {"id": "a", "meta": [1], "urls": []},
    "meta_null": {"id": "a", "meta": None, "urls": []},
    "urls_not_dicts": {"id": "a", "meta": {}, "urls": [1, "x"]},
    "url_int": {"id": "a", "meta": {}, "urls": [{"512": 5}]},
    "urls_dict": {"id": "a", "meta": {}, "urls": {"512": "x.jpg"}},
    "id_list": {"id": [1], "meta": {}, "urls": []},
    "top_number": 42,
    "faces_not_list": {"faces": {"a": 1}},
    "faces_number": {"faces": 3},
}


@pytest.mark.parametrize("case", sorted(JSON_SHAPES))
def test_generated_photos_json_shapes_are_rejections(tmp_path, case):
    from facebank.sources.generated_photos import iter_generated_photos

    root = _export(tmp_path, {"f.json": json.dumps(JSON_SHAPES[case])})
    items = list(iter_generated_photos(root))
    if case == "top_number":  # a number is JSON, not a face: nothing of it is a face
        assert all(i.rejection for i in items)
    else:
        assert items and all(i.rejection and i.rejection[0] == "unreadable" for i in items), items


def _bad_crc_zip(path: Path, data: bytes) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("1_512.jpg", data)
        z.writestr("dataset.csv", "Image,Gender\n1_512.jpg,male\n")
    raw = bytearray(path.read_bytes())
    i = raw.find(data[:16])
    raw[i + 20] ^= 0xFF  # the member's bytes change, its recorded CRC does not
    path.write_bytes(bytes(raw))


def test_source_faults_are_rejections(tmp_path, assets):
    from facebank.sources.folder import iter_folder
    from facebank.sources.generated_photos import iter_generated_photos

    jpg = sorted((assets / "generated_photos" / "age_adult").glob("*.jpg"))[0].read_bytes()
    # short CSV rows and rows without an Image value
    root = _export(tmp_path / "csv", {"dataset.csv": "Image,Gender,Age\n1_512.jpg,male\n\n,female,adult\n",
                                      "1_512.jpg": jpg})
    items = list(iter_generated_photos(root))
    assert [i.source_id for i in items if i.data] == ["1_512.jpg"]
    assert [i.rejection[0] for i in items if not i.data] == ["unreadable"]
    # a bad CRC
    z = tmp_path / "e.zip"
    _bad_crc_zip(z, jpg)
    (item,) = list(iter_generated_photos(z))
    assert item.rejection and item.rejection[0] == "unreadable" and "CRC" in item.rejection[1]
    # a zip bomb member is refused by its ratio, without inflating it
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("1_512.jpg", b"\0" * (32 << 20))
        zf.writestr("dataset.csv", "Image\n1_512.jpg\n")
    (item,) = list(iter_generated_photos(bomb))
    assert item.rejection and "cap" in item.rejection[1]
    # a non-UTF-8 name and a symlink out of the folder, beside a good file
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(jpg)
    with open(bytes(folder) + b"/bad\xff.jpg", "wb") as fh:
        fh.write(jpg)
    (tmp_path / "outside.jpg").write_bytes(jpg)
    (folder / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    got = {i.source_id: (i.rejection or ("ok",))[0] for i in iter_folder(folder)}
    assert got == {"good.jpg": "ok", "bad\\xff.jpg": "unreadable", "link.jpg": "unsafe_path"}, got
    gp = {i.source_id: (i.rejection or ("ok",))[0] for i in iter_generated_photos(
        _export(tmp_path / "gp", {"dataset.csv": "Image\ngood.jpg\n", "good.jpg": jpg}))}
    assert gp == {"good.jpg": "ok"}


def test_ingest_runs_past_a_bad_name(tmp_path, assets):
    jpg = sorted((assets / "generated_photos" / "age_adult").glob("*.jpg"))[0].read_bytes()
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(jpg)
    with open(bytes(folder) + b"/bad\xff.jpg", "wb") as fh:
        fh.write(jpg[:100])
    r = cli("ingest", "folder", folder, "--bank", tmp_path / "b.h5", "--json")
    assert r.exit_code == 0, r.stderr
    out = read_envelope(r.stdout)
    assert out["added"] == 1 and out["rejected"] == {"unreadable": 1} and out["items"] == 2


# -- the Python API raises only facebank errors --

API_CASES = {
    "age_str": (lambda fb, q: fb.pick_target(q, age="abc"), InputError),
    "threshold_str": (lambda fb, q: fb.pick_target(q, threshold="abc"), InputError),
    "threshold_2": (lambda fb, q: fb.pick_target(q, threshold=2), InputError),
    "threshold_nan": (lambda fb, q: fb.pick_target(q, threshold=float("nan")), InputError),
    "threshold_unknown_space": (lambda fb, q: fb.pick_target(q, threshold={"nope": 0.1}), UnknownSpace),
    "threshold_dict_str": (lambda fb, q: fb.pick_target(q, threshold={"s": "x"}), InputError),
    "exclude_int": (lambda fb, q: fb.pick_target(q, exclude=5), InputError),
    "exclude_ints": (lambda fb, q: fb.pick_target(q, exclude=[5]), InputError),
    "too_few_ages": (lambda fb, q: fb.pick_targets(np.stack([q, q]), ages=[30]), InputError),
    "ages_int": (lambda fb, q: fb.pick_targets(np.stack([q, q]), ages=30), InputError),
    "too_few_keys": (lambda fb, q: fb.pick_targets(np.stack([q, q]), keys=["a"]), InputError),
    "photo_no_embedding": (lambda fb, q: fb.pick_for_photo([{"age": 3}]), InputError),
    "photo_not_mapping": (lambda fb, q: fb.pick_for_photo([q]), InputError),
    "photo_mapping": (lambda fb, q: fb.pick_for_photo({"embedding": q}), InputError),
    "photo_empty": (lambda fb, q: fb.pick_for_photo([]), InputError),
    "gender_bad": (lambda fb, q: fb.pick_target(q, gender="x"), InputError),
    "mode_bad": (lambda fb, q: fb.pick_target(q, mode="x"), InputError),
    "fallback_bad": (lambda fb, q: fb.pick_target(q, age=30, fallback="x"), InputError),
    "embedding_str": (lambda fb, q: fb.pick_target("abc"), InputError),
    "embedding_none": (lambda fb, q: fb.pick_target(None), InputError),
    "embedding_0d": (lambda fb, q: fb.pick_target(np.array(1.0)), InputError),
    "space_unknown": (lambda fb, q: fb.pick_target(q, space="nope"), UnknownSpace),
    "batch_1d": (lambda fb, q: fb.pick_targets(q), InputError),
    "key_int": (lambda fb, q: fb.pick_target(q, key=5), InputError),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_api_bad_arguments_raise_facebank_errors(built, case):
    call, kind = API_CASES[case]
    with FaceBank(built[1], bank=built[0]) as fb:
        with pytest.raises(kind):
            call(fb, np.ones(DIM, np.float32))


def test_no_other_exception_leaks_from_the_api(built):
    """Every hostile argument, in any of the public pick calls: a FacebankError or a pick."""
    values = ["abc", 2, -2, float("nan"), None, 5, [5], {"nope": 1}, {"s": "x"}, np.array(1.0), b"\xff", [], {}]
    with FaceBank(built[1], bank=built[0]) as fb:
        q = np.ones(DIM, np.float32)
        for name in ("age", "gender", "threshold", "exclude", "mode", "fallback", "key", "space", "rng"):
            for v in values:
                try:
                    fb.pick_target(q, **{name: v})
                except FacebankError:
                    pass
        for v in values + [[{"embedding": "x"}], [{"embedding": q, "age": "x"}], [{"embedding": {"nope": q}}]]:
            try:
                fb.pick_for_photo(v)
            except FacebankError:
                pass
            try:
                fb.pick_targets(v)
            except FacebankError:
                pass
