"""Mutation fuzzing of every structure facebank reads from disk (issue 13).

Each test starts from a real, valid artefact (the 40-face bank of conftest.small_bank and an index
build of it; the real generated.photos export in ../shared/assets) and applies one or two
hypothesis-drawn mutations: a field dropped, retyped or replaced, wrong nesting, huge numbers,
NaN, odd unicode, raw-text damage. The only outcomes allowed are success or a FacebankError
subclass, and on the command line one `error:` line with no traceback.

The profile is fixed (derandomize, no database, no deadline), so a failure reproduces and the
examples are the same on every run.
"""

from __future__ import annotations

from facebank.cli.common import read_envelope

import csv
import io
import json
import math
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from facebank.errors import FacebankError

# FACEBANK_FUZZ_EXAMPLES=N runs a deeper (still derandomized) search locally; CI uses the default.
EXAMPLES = int(os.environ.get("FACEBANK_FUZZ_EXAMPLES", "60"))
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=EXAMPLES, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
FUZZ_CLI = settings(FUZZ, max_examples=max(EXAMPLES * 2 // 5, 1))

runner = CliRunner()

# -- hostile values and a generic mutator of JSON-like documents --

HUGE_INT = "9" * 5000  # digits past CPython's 4300-digit int <-> str limit: json.loads refuses them
HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([0, -1, 2**31, 2**63, 2**64 + 1, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0]),
    st.text(max_size=12),
    st.sampled_from(["", " ", "..", "../../etc/passwd", "/abs", "a/b", "\x00", "\ud800", "\u202e\u0301", "é" * 300,
                     "NaN", "1e999", "true", "0" * 64, "g" * 64]),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.builds(lambda: [[[[[]]]]]), st.builds(lambda: {"": {"": None}}),  # fresh each draw: mutated in place
)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _get(doc, path):
    for k in path:
        doc = doc[k]
    return doc


def _retype(value, how: int):
    if how == 0:
        return str(value)
    if how == 1:
        return [value]
    if how == 2:
        return {"value": value}
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("latin-1")[::-1]
    return None


@st.composite
def mutated(draw, doc, n_max: int = 2):
    """`doc` (deep-copied) with 1..n_max mutations, and their description (shown on failure)."""
    doc = json.loads(json.dumps(doc))
    done = []
    for _ in range(draw(st.integers(1, n_max))):
        path = draw(st.sampled_from(list(_paths(doc))))
        op = draw(st.sampled_from(["drop", "replace", "retype", "add", "wrap"]))
        if not path:
            op = draw(st.sampled_from(["replace", "wrap", "add"]))
        if op == "add":
            target = _get(doc, path)
            if isinstance(target, dict):
                target[draw(st.text(max_size=8))] = draw(HOSTILE_VALUES)
            elif isinstance(target, list):
                target.append(draw(HOSTILE_VALUES))
            else:
                op = "replace"
        if op in ("drop", "replace", "retype", "wrap") and path:
            parent, key = _get(doc, path[:-1]), path[-1]
            if op == "drop":
                del parent[key]
            elif op == "replace":
                parent[key] = draw(HOSTILE_VALUES)
            elif op == "retype":
                parent[key] = _retype(parent[key], draw(st.integers(0, 3)))
            else:
                parent[key] = [parent[key]]
        elif op in ("replace", "wrap") and not path:
            doc = draw(HOSTILE_VALUES) if op == "replace" else [doc]
        done.append((op, path))
        if not isinstance(doc, (dict, list)):
            break
    return doc, done


def dumps(doc) -> str:
    """JSON text as a careless writer would make it: NaN/Infinity allowed, huge ints written out."""
    text = json.dumps(doc, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: only its \\u escape can be written
        return json.dumps(doc)
    return text


RAW_DAMAGE = st.sampled_from([
    lambda t: t[: len(t) // 2],  # truncated
    lambda t: t.replace("1", HUGE_INT, 1),  # a 5000-digit integer
    lambda t: t.replace("0.", "1e999", 1),  # overflowing float literal
    lambda t: "[" * 100_000 + "]" * 100_000,  # nesting past the recursion limit
    lambda t: t.replace('"', "'", 3),
    lambda t: "\ufeff" + t,  # a BOM
    lambda t: t + "\n{}",  # trailing data
    lambda t: t.replace(":", ": NaN, \"x\":", 1),
])


# -- fixtures: a real build of the real 40-face bank --

@pytest.fixture(scope="module")
def real_build(small_bank, tmp_path_factory):
    from facebank.index.build import build_index

    root = tmp_path_factory.mktemp("fuzzbuild")
    build = build_index(small_bank, out=root / "builds", build_id="fz", make_current=False)
    with h5py.File(small_bank, "r") as f:
        q = f["embeddings/dlib/vectors"][0]
    qfile = root / "q.npy"
    np.save(qfile, -q)
    return small_bank, build, qfile


def _fresh_build(real_build, tmp_path, k=[0]) -> Path:  # noqa: B006 - a counter for unique folders
    k[0] += 1
    dst = tmp_path / f"b{k[0]}"
    shutil.copytree(real_build[1], dst)
    return dst


def cli(*args):
    from facebank.cli import app

    return runner.invoke(app, [str(a) for a in args])


def assert_clean(result) -> None:
    """Success, or exactly one `error: <Type>: ...` line on stderr, a facebank error, no traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    if result.exit_code == 0:
        return
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not lines[0].startswith("error: internal"), lines[0]  # an unexpected exception: a bug
    assert result.exit_code in (1, 2), (result.exit_code, lines)


def _below_the_real_threshold(bank: Path, q: np.ndarray, row: int) -> None:
    """A target that a damaged build returned is still dissimilar to the query by the REAL bank's
    vector at the unmutated build's threshold (the shipped dlib default): damage may refuse a
    pick, never weaken it."""
    from facebank.index.build import default_thresholds

    with h5py.File(bank, "r") as f:
        v = f["embeddings/dlib/vectors"][row].astype(np.float64)
    u = q.astype(np.float64) / np.linalg.norm(q.astype(np.float64))
    assert float(u @ v) <= default_thresholds()["spaces"]["dlib"]["threshold"] + 1e-6


def _open_and_pick(build: Path, bank: Path, q: np.ndarray) -> None:
    from facebank.pick.session import FaceBank

    with FaceBank(build, bank=bank) as fb:
        t = fb.pick_target(q, rng=np.random.default_rng(0))
    _below_the_real_threshold(bank, q, t.row)


# -- (a) build manifests --

@FUZZ
@given(data=st.data())
def test_fuzz_manifest_fields(real_build, tmp_path, data):
    bank, build, qfile = real_build
    manifest = json.loads((build / "manifest.json").read_text())
    doc, how = data.draw(mutated(manifest), label="mutation")
    b = _fresh_build(real_build, tmp_path)
    (b / "manifest.json").write_text(dumps(doc))
    try:
        _open_and_pick(b, bank, np.load(qfile))
    except FacebankError:
        pass


@FUZZ
@given(data=st.data())
def test_fuzz_manifest_raw_text(real_build, tmp_path, data):
    bank, build, qfile = real_build
    damage = data.draw(RAW_DAMAGE, label="damage")
    b = _fresh_build(real_build, tmp_path)
    text = damage((build / "manifest.json").read_text())
    if data.draw(st.booleans(), label="as bytes with a bad byte"):
        (b / "manifest.json").write_bytes(text.encode() + b"\xff\xfe")
    else:
        (b / "manifest.json").write_text(text)
    try:
        _open_and_pick(b, bank, np.load(qfile))
    except FacebankError:
        pass


@FUZZ_CLI
@given(data=st.data(), command=st.sampled_from(["pick", "index info", "index verify"]))
def test_fuzz_manifest_cli(real_build, tmp_path, data, command):
    bank, build, qfile = real_build
    manifest = json.loads((build / "manifest.json").read_text())
    doc, how = data.draw(mutated(manifest), label="mutation")
    b = _fresh_build(real_build, tmp_path)
    (b / "manifest.json").write_text(dumps(doc))
    if command == "pick":
        r = cli("pick", "--embedding", qfile, "--build", b, "--bank", bank, "--json")
    elif command == "index info":
        r = cli("index", "info", "--build", b, "--json")
    else:
        r = cli("index", "verify", "--build", b, "--bank", bank)
    assert_clean(r)
    if command == "pick" and r.exit_code == 0:
        from facebank.cli.common import read_envelope

        for p in read_envelope(r.stdout)["picks"]:
            _below_the_real_threshold(bank, np.load(qfile), p["target"]["row"])


# -- (b) bank attributes and column lengths --

def _top_copy(bank: Path, tmp_name: str) -> Path:
    """A copy of the bank beside it (top file, and its folder of hard-linked fragments)."""
    from facebank.bank import copy_bank

    dst = bank.parent / tmp_name
    dst.unlink(missing_ok=True)
    shutil.rmtree(f"{dst}.d", ignore_errors=True)
    return copy_bank(bank, dst)


def _h5_value(value):
    """A hostile value as an HDF5 attribute can hold it (None and dicts become JSON text)."""
    if value is None or isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list):
        return np.array(value, dtype=np.int64) if all(isinstance(v, int) for v in value) else json.dumps(value)
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return str(value)
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        return np.bytes_(raw) if b"\0" in raw else raw.decode("utf-8", "replace")  # vlen str cannot hold NUL
    return value


ROOT_ATTRS = ["format", "schema_version", "required_features", "content_hash", "writer", "created", "updated",
              "version", "manifest"]


@st.composite
def bank_damage(draw):
    """One or two damages of the top file: a root attribute, the manifest JSON inside it, a space's
    info attribute, or a column replaced by one of another length or dtype."""
    kinds = draw(st.lists(st.sampled_from(["attr", "manifest", "space_info", "column", "drop_attr"]),
                          min_size=1, max_size=2))
    out = []
    for kind in kinds:
        if kind in ("attr", "drop_attr"):
            out.append((kind, draw(st.sampled_from(ROOT_ATTRS)), _h5_value(draw(HOSTILE_VALUES))))
        elif kind == "manifest":
            out.append((kind, None, draw(st.integers(0, 2**32 - 1))))
        elif kind == "space_info":
            out.append((kind, None, draw(st.integers(0, 2**32 - 1))))
        else:
            col = draw(st.sampled_from(["faces/id", "faces/age", "faces/gender", "faces/status", "faces/crop",
                                        "faces/source_id", "faces/provenance", "embeddings/dlib/vectors",
                                        "embeddings/dlib/present"]))
            out.append((kind, col, (draw(st.integers(0, 45)), draw(st.sampled_from(["f4", "i1", "S3", "u1"])))))
    return out


def _apply_bank_damage(path: Path, damage: list, data) -> None:
    with h5py.File(path, "r+") as f:
        for kind, name, value in damage:
            if kind == "attr":
                f.attrs[name] = value
            elif kind == "drop_attr":
                if name in f.attrs:
                    del f.attrs[name]
            elif kind in ("manifest", "space_info"):
                where = f.attrs if kind == "manifest" else f["embeddings/dlib"].attrs
                key = "manifest" if kind == "manifest" else "info"
                try:
                    doc = json.loads(where[key])
                except (KeyError, TypeError, ValueError):  # an earlier damage dropped or replaced it
                    continue
                doc, _ = data.draw(mutated(doc), label=f"{kind} mutation")
                where[key] = dumps(doc).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            else:
                n, dtype = value
                shape = (n,) + f[name].shape[1:]
                del f[name]
                f.create_dataset(name, data=np.zeros(shape, dtype=dtype))


def _read_bank(path: Path) -> None:
    from facebank.bank import open_bank

    with open_bank(path) as bank:
        len(bank)
        for s in bank.spaces:
            bank.space_info(s)
            bank.vectors(s, 0, 2)
            bank.present(s)
        if len(bank):
            bank.face(0)
            bank.face(len(bank) - 1)
        bank.rejections()
        bank.log()


@FUZZ
@given(data=st.data(), damage=bank_damage())
def test_fuzz_bank_attributes_and_columns(real_build, data, damage):
    bank = _top_copy(real_build[0], "fuzz-top.h5")
    try:
        _apply_bank_damage(bank, damage, data)
        try:
            _read_bank(bank)
        except FacebankError:
            pass
    finally:
        bank.unlink()


@FUZZ_CLI
@given(data=st.data(), damage=bank_damage(), command=st.sampled_from(["info", "pick"]))
def test_fuzz_bank_cli(real_build, data, damage, command):
    _, build, qfile = real_build
    bank = _top_copy(real_build[0], "fuzz-cli.h5")
    try:
        _apply_bank_damage(bank, damage, data)
        if command == "info":
            r = cli("info", "--bank", bank, "--json")
        else:
            r = cli("pick", "--embedding", qfile, "--build", build, "--bank", bank, "--json")
        assert_clean(r)
    finally:
        bank.unlink()


# -- (c) generated.photos CSV rows, (d) JSON faces --

GP_FILES = 4  # real images copied into each mutated export (reading them is all a source does)


@pytest.fixture(scope="module")
def real_export(assets):
    """The real export's dataset.csv rows for its first faces, and those faces' real images."""
    folder = assets / "generated_photos" / "age_adult"
    with open(folder / "dataset.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    names = sorted(p.name for p in folder.glob("*_512.jpg"))[:GP_FILES]
    keep = [r for r in body if Path(r[0]).name.split("_")[0] in {n.split("_")[0] for n in names}]
    images = {n: (folder / n).read_bytes() for n in names}
    return header, keep, images


def _write_export(root: Path, images: dict, files: dict) -> Path:
    (root / "images").mkdir(parents=True)
    for name, data in images.items():
        (root / "images" / name).write_bytes(data)
    for name, data in files.items():
        (root / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return root


def _consume(root: Path) -> list:
    """What ingest does with a source before any model runs: iterate, read labels, record provenance."""
    from facebank.labels import metadata_attributes
    from facebank.sources.generated_photos import iter_generated_photos

    items = list(iter_generated_photos(root))
    for item in items:
        assert (item.data is None) != (item.rejection is None), item  # each item is a face or a rejection
        assert isinstance(item.source_id, str)
        metadata_attributes(item.metadata)
        json.dumps({**item.metadata, "image_format": "jpg"})  # the provenance column
    return items


CSV_CELLS = st.one_of(HOSTILE_VALUES.map(str), st.sampled_from(
    ["./images/../../x.jpg", "images/1_512.jpg", "./images/1_512.jpg", "C:\\x.jpg", "a\nb", 'a"b', "\r",
     "x" * 70_000, "y" * 200_000]))  # the last is past csv's 128 KiB field limit


@st.composite
def csv_mutation(draw, header, rows):
    header, rows = list(header), [list(r) for r in rows]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["cell", "short_row", "long_row", "drop_column", "rename_header", "dup_row",
                                   "empty_row", "dup_header"]))
        r = draw(st.integers(0, len(rows) - 1)) if rows else 0
        if op == "cell" and rows:
            if rows[r]:
                rows[r][draw(st.integers(0, len(rows[r]) - 1))] = draw(CSV_CELLS)
            else:
                rows[r] = [draw(CSV_CELLS)]
        elif op == "short_row" and rows:
            rows[r] = rows[r][: draw(st.integers(0, max(len(rows[r]) - 1, 0)))]
        elif op == "long_row" and rows:
            rows[r] += [draw(CSV_CELLS) for _ in range(draw(st.integers(1, 3)))]
        elif op == "drop_column" and header:
            c = draw(st.integers(0, len(header) - 1))
            header.pop(c)
            rows = [row[:c] + row[c + 1:] for row in rows]
        elif op == "rename_header" and header:
            header[draw(st.integers(0, len(header) - 1))] = draw(CSV_CELLS)
        elif op == "dup_row" and rows:
            rows.append(list(rows[r]))
        elif op == "empty_row":
            rows.insert(r, [])
        elif op == "dup_header" and header:
            header.append(header[0])
    buf = io.StringIO()
    csv.writer(buf).writerows([header] + rows)
    return buf.getvalue()


@FUZZ
@given(data=st.data())
def test_fuzz_generated_photos_csv(real_export, tmp_path_factory, data):
    header, rows, images = real_export
    text = data.draw(csv_mutation(header, rows), label="csv")
    if data.draw(st.booleans(), label="raw damage"):
        text = data.draw(st.sampled_from([
            lambda t: t[: len(t) // 2], lambda t: "\ufeff" + t, lambda t: t.replace(",", "\x00", 2),
            lambda t: t.replace("\n", "\r", 3), lambda t: t + "\xff\ud800",
            lambda t: t.replace("adult", "\u0430dult")]), label="damage")(text)
    root = _write_export(tmp_path_factory.mktemp("csv"), images, {"dataset.csv": text})
    try:
        _consume(root)
    except FacebankError:
        pass


@pytest.fixture(scope="module")
def real_json_face(real_export):
    """An API-form face whose labels are a real CSV row's, naming a real image of the export."""
    header, rows, images = real_export
    row = dict(zip(header, next(r for r in rows if r[0].endswith("_512.jpg"))))
    name = Path(row["Image"]).name
    meta = {k.lower(): [v] for k, v in row.items() if k != "Image"}
    meta["confidence"] = [float(row["Confidence"])]
    return {"id": name.split("_")[0], "version": 3,
            "urls": [{"32": f"https://x/{name.replace('_512', '_32')}"}, {"512": f"https://x/images/{name}"}],
            "meta": meta}


@FUZZ
@given(data=st.data(), wrap=st.sampled_from(["face", "faces", "list"]))
def test_fuzz_generated_photos_json(real_export, real_json_face, tmp_path_factory, data, wrap):
    doc, how = data.draw(mutated(real_json_face, n_max=3), label="mutation")
    doc = {"face": doc, "faces": {"faces": [doc, real_json_face]}, "list": [doc]}[wrap]
    text = dumps(doc)
    if data.draw(st.booleans(), label="raw damage"):
        text = data.draw(RAW_DAMAGE, label="damage")(text)
    root = _write_export(tmp_path_factory.mktemp("json"), real_export[2], {"images/face.json": text})
    try:
        _consume(root)
    except FacebankError:
        pass


def test_unmutated_artefacts_are_accepted(real_build, real_export, real_json_face, tmp_path):
    """The fuzzers' starting points are valid: without a mutation each one reads and picks."""
    bank, build, qfile = real_build
    _open_and_pick(build, bank, np.load(qfile))
    _read_bank(bank)
    assert cli("index", "verify", "--build", build, "--bank", bank).exit_code == 0
    header, rows, images = real_export
    buf = io.StringIO()
    csv.writer(buf).writerows([header] + rows)
    items = _consume(_write_export(tmp_path / "c", images, {"dataset.csv": buf.getvalue()}))
    assert len([i for i in items if i.data]) == GP_FILES
    items = _consume(_write_export(tmp_path / "j", images, {"images/face.json": json.dumps(real_json_face)}))
    assert [i.metadata["gender"] for i in items if i.data] == [real_json_face["meta"]["gender"][0]]


FUZZ_INGEST = settings(FUZZ, max_examples=max(EXAMPLES // 10, 1))  # each run loads the detector


@FUZZ_INGEST
@given(data=st.data(), form=st.sampled_from(["csv", "json"]))
def test_fuzz_generated_photos_ingest_cli(real_export, real_json_face, tmp_path_factory, data, form):
    """The whole `ingest generated-photos` on a mutated export: a summary, or one `error:` line."""
    header, rows, images = real_export
    if form == "csv":
        files = {"dataset.csv": data.draw(csv_mutation(header, rows), label="csv")}
    else:
        doc, how = data.draw(mutated(real_json_face, n_max=3), label="mutation")
        files = {"images/face.json": dumps(doc)}
    root = _write_export(tmp_path_factory.mktemp("ingest"), dict(list(images.items())[:1]), files)
    r = cli("ingest", "generated-photos", root, "--bank", root / "bank.h5", "--workers", "1", "--json")
    assert_clean(r)
    if r.exit_code == 0:
        out = read_envelope(r.stdout, "ingest generated-photos")
        assert out["added"] + out["already_in_bank"] + sum(out["rejected"].values()) == out["items"], out
