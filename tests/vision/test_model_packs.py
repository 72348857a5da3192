"""InsightFace model packs: fetch from a local HTTP server on 127.0.0.1 only (never the internet),
with tiny ONNX graphs made here standing in for the real models."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from facebank.cli import models_cmd
from facebank.errors import ModelError, SourceError
from facebank.vision import model_packs
from facebank.vision.model_packs import DEFAULT_DEST, MANIFEST_NAME, PACKS, extract_zip, fetch_pack, list_packs
from facebank.cli.common import read_envelope

BUFFALO_L = ("det_10g.onnx", "w600k_r50.onnx", "genderage.onnx")


@functools.lru_cache(maxsize=1)
def _tiny_onnx() -> bytes:
    """An Identity graph: enough for onnxruntime to open, a few hundred bytes."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by any onnxruntime this project supports
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(autouse=True)
def tiny_models_published(request, monkeypatch):
    """The tiny stand-ins play the official files: their checksum is what the table publishes.
    Tests marked `real_pins` keep the real table (the published InsightFace checksums)."""
    if "real_pins" in request.keywords:
        return
    tiny = (hashlib.sha256(_tiny_onnx()).hexdigest(), len(_tiny_onnx()))
    monkeypatch.setattr(model_packs, "PUBLISHED", {p: {n: tiny for n in table} for p, table in
                                                   model_packs.PUBLISHED.items()})


def _make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _pack_members(prefix: str = "", names=BUFFALO_L) -> dict[str, bytes]:
    return {f"{prefix}{n}": _tiny_onnx() for n in names}


def _leftovers(dest: Path) -> list[str]:
    """Everything under dest except the (empty) cache folder."""
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.name != ".downloads")


@pytest.mark.parametrize("prefix", ["", "buffalo_l/"])
def test_fetch_then_cache_then_verify(tmp_path, http_root, prefix):
    root, base, hits = http_root
    zip_path = _make_zip(root / "buffalo_l.zip", {**_pack_members(prefix), f"{prefix}1k3d68.onnx": _tiny_onnx()})
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    dest = tmp_path / "models"

    first = fetch_pack("buffalo_l", dest=dest, url=f"{base}/buffalo_l.zip")
    pack_dir = dest / "buffalo_l"
    assert first["status"] == "fetched" and first["zip_sha256"] == digest and len(hits) == 1
    assert sorted(p.name for p in pack_dir.glob("*.onnx")) == sorted([*BUFFALO_L, "1k3d68.onnx"])
    manifest = json.loads((pack_dir / MANIFEST_NAME).read_text())
    assert manifest["zip_sha256"] == digest and manifest["format_version"] == 1
    assert manifest["files"]["det_10g.onnx"]["sha256"] == hashlib.sha256(_tiny_onnx()).hexdigest()
    assert not list(dest.glob(".buffalo_l.*"))  # no temporary directory left

    again = fetch_pack("buffalo_l", dest=dest, url=f"{base}/buffalo_l.zip", expected_sha256=digest.upper())
    assert again["status"] == "present" and again["recorded"] and len(hits) == 1
    shutil.rmtree(pack_dir)  # the cached zip (checked against its record) is extracted again
    assert fetch_pack("buffalo_l", dest=dest, url=f"{base}/buffalo_l.zip")["status"] == "fetched"
    assert len(hits) == 1

    (pack_dir / "w600k_r50.onnx").write_bytes(b"swapped")
    with pytest.raises(ModelError, match="changed since it was fetched.*w600k_r50.onnx"):
        fetch_pack("buffalo_l", dest=dest, url=f"{base}/buffalo_l.zip")
    listed = {e["name"]: e for e in list_packs(dest)}
    assert listed["buffalo_l"]["changed"] == ["w600k_r50.onnx"] and not listed["buffalo_s"]["present"]


def test_wrong_sha256_refused_nothing_left(tmp_path, http_root):
    root, base, _ = http_root
    _make_zip(root / "buffalo_l.zip", _pack_members())
    dest = tmp_path / "models"
    with pytest.raises(SourceError, match="expected 0000"):
        fetch_pack("buffalo_l", dest=dest, url=f"{base}/buffalo_l.zip", expected_sha256="0" * 64)
    assert _leftovers(dest) == [] and not any((dest / ".downloads").iterdir())


def test_zip_slip_refused_nothing_outside(tmp_path, http_root):
    root, base, _ = http_root
    _make_zip(root / "bad.zip", {**_pack_members(), "../evil": b"x", "sub/../../evil2": b"x"})
    dest = tmp_path / "a" / "models"
    with pytest.raises(SourceError, match="unsafe zip member '../evil'"):
        fetch_pack("buffalo_l", dest=dest, url=f"{base}/bad.zip")
    assert not (tmp_path / "a" / "evil").exists() and not (dest / "evil").exists()
    assert _leftovers(dest) == [] and not any((dest / ".downloads").iterdir())  # bad download not kept


@pytest.mark.parametrize("name", ["/abs/evil", "C:/evil", "a\\..\\evil"])
def test_absolute_and_windows_members_refused(tmp_path, name):
    zpath = _make_zip(tmp_path / "z.zip", {name: b"x"})
    (tmp_path / "out").mkdir()
    with pytest.raises(SourceError, match="unsafe zip member"):
        extract_zip(zpath, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_symlink_member_refused(tmp_path):
    info = zipfile.ZipInfo("det_10g.onnx")
    info.external_attr = (0o120777 << 16)  # S_IFLNK
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        zf.writestr(info, "/etc/passwd")
    (tmp_path / "out").mkdir()
    with pytest.raises(SourceError, match="not a regular file"):
        extract_zip(tmp_path / "z.zip", tmp_path / "out")


def test_missing_or_unloadable_model_is_model_error(tmp_path):
    dest = tmp_path / "models"
    no_gender = _make_zip(tmp_path / "a.zip", _pack_members(names=BUFFALO_L[:2]))
    with pytest.raises(ModelError, match="lacks genderage.onnx"):
        fetch_pack("buffalo_l", dest=dest, url=no_gender)
    broken = _make_zip(tmp_path / "b.zip", {**_pack_members(), "det_10g.onnx": b"not onnx"})
    with pytest.raises(ModelError, match="det_10g.onnx is not the published buffalo_l file"):
        fetch_pack("buffalo_l", dest=dest, url=broken.as_uri())  # the checksum catches it first
    with pytest.raises(ModelError, match="not a loadable ONNX"):  # a pack of one's own: only onnxruntime can
        fetch_pack("my_pack", dest=dest, url=broken.as_uri())
    assert _leftovers(dest) == []
    with pytest.raises(SourceError, match="not a readable zip"):
        fetch_pack("buffalo_l", dest=dest, url=_write(tmp_path / "c.zip", b"PK no"))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_offline_says_what_to_do(tmp_path):
    with pytest.raises(SourceError, match=r"--url file:///path/to/buffalo_l.zip.*--model/--detector-path"):
        fetch_pack("buffalo_l", dest=tmp_path, url="http://127.0.0.1:9/buffalo_l.zip")  # nothing listens on 9


def test_official_packs_and_defaults():
    assert PACKS["buffalo_l"].url == "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
    assert set(PACKS["buffalo_l"].required) == set(BUFFALO_L)
    assert models_cmd._DEFAULT_DEST == DEFAULT_DEST


def test_directory_of_pack_feeds_the_loaders(tmp_path):
    """The fetched directory is what the registry's model-file search expects."""
    from facebank.vision.model_files import find_model_file

    fetch_pack("buffalo_l", dest=tmp_path, url=_make_zip(tmp_path / "z.zip", _pack_members("buffalo_l/")))
    assert find_model_file(tmp_path / "buffalo_l", ("det_10g.onnx",), what="d").name == "det_10g.onnx"
    assert find_model_file(tmp_path / "buffalo_l", ("*.onnx",), what="e").suffix == ".onnx"  # manifest is hidden


# -- CLI --------------------------------------------------------------------------------------------

def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:  # a callback keeps `models` a sub-command even when it is the only group
        pass

    models_cmd.register(app)
    return app


def _run(*args):
    return CliRunner().invoke(_app(), ["models", *map(str, args)])


def _one_line_error(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_fetch_list_and_errors(tmp_path, http_root):
    root, base, hits = http_root
    zip_path = _make_zip(root / "buffalo_l.zip", _pack_members())
    dest = tmp_path / "models"
    r = _run("fetch", "buffalo_l", "--dest", dest, "--url", f"{base}/buffalo_l.zip", "--json")
    assert r.exit_code == 0, r.stderr
    out = read_envelope(r.stdout)
    assert out["status"] == "fetched" and out["zip_sha256"] == hashlib.sha256(zip_path.read_bytes()).hexdigest()
    assert "non-commercial research" in r.stderr

    r = _run("fetch", "buffalo_l", "--dest", dest, "--url", f"{base}/buffalo_l.zip")
    assert r.exit_code == 0 and "already present" in r.stdout and len(hits) == 1

    r = _run("list", "--dest", dest, "--json")
    listed = {e["name"]: e for e in read_envelope(r.stdout)}
    assert r.exit_code == 0 and listed["buffalo_l"]["recorded"] and set(listed["buffalo_l"]["files"]) == set(BUFFALO_L)
    r = _run("list", "--dest", dest)
    assert r.exit_code == 0 and "buffalo_m: not present" in r.stdout
    assert out["files"]["genderage.onnx"]["sha256"] in r.stdout

    _one_line_error(_run("fetch", "buffalo_s", "--dest", dest, "--url", f"{base}/buffalo_l.zip", "--sha256", "ab" * 32),
                    2, "SourceError", "expected abab")
    _one_line_error(_run("fetch", "buffalo_s", "--dest", dest, "--sha256", "xyz"), 2, "InputError", "64 hex digits")
    _one_line_error(_run("fetch", "antelope", "--dest", dest), 2, "unknown model pack", "buffalo_l")
    _one_line_error(_run("fetch", "../up", "--dest", dest, "--url", f"{base}/buffalo_l.zip"), 2, "InputError")
    _one_line_error(_run("fetch", "buffalo_s", "--dest", dest, "--url", f"{base}/buffalo_l.zip"), 1,
                    "ModelError", "lacks det_500m.onnx, w600k_mbf.onnx")
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == ["buffalo_l"]


# --- the real published checksums (shared/docs/MODEL_CHECKSUMS.md) ---------------------------

real_pins = pytest.mark.real_pins


@real_pins
def test_the_pinned_table_is_the_published_one():
    doc = Path(__file__).resolve().parents[3] / "shared" / "docs" / "MODEL_CHECKSUMS.md"
    if not doc.is_file():
        pytest.skip(f"{doc} is not here")
    import re

    published = {}
    for line in doc.read_text().splitlines():
        m = re.match(r"\| `([\w.]+\.onnx)`[^|]*\| ([^|]+)\| ([\d,]+) \| `([0-9a-f]{64})` \|", line)
        if m:
            published[m[1]] = ({p.strip() for p in m[2].split(",")}, int(m[3].replace(",", "")), m[4])
    assert len(published) >= 6
    for pack, table in model_packs.PUBLISHED.items():
        for name, (sha, size) in table.items():
            packs, doc_size, doc_sha = published[name]
            assert (sha, size) == (doc_sha, doc_size) and pack in packs, (pack, name)
    zips = dict(re.findall(r"\| `(\w+)\.zip` \(release v0.7\) \| — \| — \| `([0-9a-f]{64})` \|", doc.read_text()))
    assert model_packs.PUBLISHED_ZIP_SHA256 == zips


@real_pins
def test_a_real_model_file_matches_its_published_checksum(assets):
    from facebank._io.download import sha256_file

    det = assets / "insightface_scrfd" / "det_500m.onnx"
    files = {"det_500m.onnx": {"sha256": sha256_file(det), "size": det.stat().st_size}}
    assert model_packs.check_published("buffalo_s", files, "x") == ["det_500m.onnx"]
    files["w600k_mbf.onnx"] = {"sha256": hashlib.sha256(_tiny_onnx()).hexdigest(), "size": len(_tiny_onnx())}
    with pytest.raises(ModelError, match="w600k_mbf.onnx is not the published buffalo_s file"):
        model_packs.check_published("buffalo_s", files, "x")


@real_pins
def test_a_pack_whose_files_are_not_the_published_ones_is_refused(tmp_path, http_root, assets):
    root, base, _ = http_root
    # The real SCRFD 500M beside a stand-in recogniser: the detector passes, the recogniser is refused.
    _make_zip(root / "buffalo_s.zip", {"det_500m.onnx": (assets / "insightface_scrfd" / "det_500m.onnx").read_bytes(),
                                        "w600k_mbf.onnx": _tiny_onnx(), "genderage.onnx": _tiny_onnx()})
    dest = tmp_path / "models"
    with pytest.raises(ModelError, match="w600k_mbf.onnx is not the published buffalo_s file"):
        fetch_pack("buffalo_s", dest=dest, url=f"{base}/buffalo_s.zip")
    assert _leftovers(dest) == [] and not any((dest / ".downloads").iterdir())
    _make_zip(root / "buffalo_l.zip", _pack_members())
    _one_line_error(_run("fetch", "buffalo_l", "--dest", dest, "--url", f"{base}/buffalo_l.zip"), 1, "ModelError",
                    "det_10g.onnx is not the published buffalo_l file")
    assert _leftovers(dest) == []
    # A pack put in place by hand, never fetched by facebank: checked against the table too.
    hand = dest / "buffalo_l"
    hand.mkdir(parents=True)
    for n in BUFFALO_L:
        (hand / n).write_bytes(_tiny_onnx())
    with pytest.raises(ModelError, match="not the published buffalo_l file"):
        fetch_pack("buffalo_l", dest=dest)
    listed = {e["name"]: e for e in list_packs(dest)}
    assert listed["buffalo_l"]["unpublished"] == sorted(BUFFALO_L)


@real_pins
def test_the_official_buffalo_sc_zip_is_pinned(tmp_path, http_root, monkeypatch):
    root, base, _ = http_root
    _make_zip(root / "buffalo_sc.zip", {"det_500m.onnx": _tiny_onnx(), "w600k_mbf.onnx": _tiny_onnx()})
    monkeypatch.setitem(PACKS, "buffalo_sc", PACKS["buffalo_sc"].__class__(
        "buffalo_sc", f"{base}/buffalo_sc.zip", PACKS["buffalo_sc"].required))  # the "official" URL, served here
    with pytest.raises(SourceError, match="expected 57d31b56"):
        fetch_pack("buffalo_sc", dest=tmp_path / "models")
