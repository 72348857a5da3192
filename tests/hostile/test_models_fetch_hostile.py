"""`facebank models fetch` against hostile packs and arguments (issue 13), through the real CLI and
a local HTTP server on 127.0.0.1 (conftest.http_root) or file:// URLs: each failure is exactly one
stderr line `error: <Type>: ...`, a non-zero exit, and nothing left behind (no pack, no partial
folder, no cached zip, nothing written outside the destination)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.vision.test_model_packs import BUFFALO_L, _make_zip, _pack_members
from tests.vision.test_model_packs import tiny_models_published  # noqa: F401 (autouse: stand-ins play the published files)

runner = CliRunner()


def _fetch(*args):
    from facebank.cli import app

    return runner.invoke(app, ["models", "fetch", *map(str, args)])


def _symlink_zip(path: Path) -> Path:
    """A pack whose extra member is a symlink (Unix mode bits in external_attr) to /etc/passwd."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in _pack_members().items():
            zf.writestr(name, data)
        info = zipfile.ZipInfo("link.onnx")
        info.external_attr = (0o120777 << 16)
        info.create_system = 3
        zf.writestr(info, "/etc/passwd")
    return path


def _bad_crc_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in _pack_members().items():
            zf.writestr(name, data)
    raw = bytearray(path.read_bytes())
    raw[60] ^= 0xFF  # inside the first member's data: its recorded CRC no longer matches
    path.write_bytes(bytes(raw))
    return path


def _raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


ZIPS = {
    "traversal_member": (lambda p: _make_zip(p, {**_pack_members(), "../evil.onnx": b"x"}), "SourceError",
                         "unsafe zip member"),
    "deep_traversal_member": (lambda p: _make_zip(p, {**_pack_members(), "a/../../evil.onnx": b"x"}), "SourceError",
                              "unsafe zip member"),
    "absolute_member": (lambda p: _make_zip(p, {**_pack_members(), "/tmp/evil.onnx": b"x"}), "SourceError",
                        "unsafe zip member"),
    "symlink_member": (_symlink_zip, "SourceError", "not a regular file"),
    "corrupt_zip": (lambda p: _raw(p, b"PK\x03\x04" + bytes(range(256)) * 8), "SourceError", "not a readable zip"),
    "not_a_zip": (lambda p: _raw(p, b"<html>not found</html>"), "SourceError", "not a readable zip"),
    "bad_crc": (_bad_crc_zip, "SourceError", "not a readable zip"),
    "empty_zip": (lambda p: _make_zip(p, {}), "SourceError", "holds no files"),
    "missing_models": (lambda p: _make_zip(p, _pack_members(names=BUFFALO_L[:1])), "ModelError", "lacks"),
    "not_onnx": (lambda p: _make_zip(p, {n: b"garbage" for n in BUFFALO_L}), "ModelError", None),
}


def _assert_one_error(result, kind: str, needle: str | None) -> str:
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert result.exit_code in (1, 2), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1 and lines[0].startswith(f"error: {kind}: "), result.stderr
    if needle:
        assert needle in lines[0], lines[0]
    return lines[0]


def _nothing_left(tmp_path: Path, dest: Path) -> None:
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if p.is_file() and "www" not in p.parts and p.name != "src.zip")
    assert left == [], left  # no pack, no .part folder content, no cached zip or its record
    assert not dest.exists() or all(p.name == ".downloads" for p in dest.iterdir()), list(dest.iterdir())
    assert not list(tmp_path.rglob("evil*"))


@pytest.mark.parametrize("case", sorted(ZIPS))
@pytest.mark.parametrize("how", ["http", "file"])
def test_hostile_zip(tmp_path, http_root, case, how):
    root, base, _ = http_root
    make, kind, needle = ZIPS[case]
    src = make(root / "buffalo_l.zip")
    url = f"{base}/buffalo_l.zip" if how == "http" else src.as_uri()
    dest = tmp_path / "models"
    _assert_one_error(_fetch("buffalo_l", "--dest", dest, "--url", url), kind, needle)
    _nothing_left(tmp_path, dest)


def test_sha256_mismatch(tmp_path, http_root):
    root, base, _ = http_root
    _make_zip(root / "buffalo_l.zip", _pack_members())
    dest = tmp_path / "models"
    line = _assert_one_error(_fetch("buffalo_l", "--dest", dest, "--url", f"{base}/buffalo_l.zip", "--sha256",
                                    "ab" * 32), "SourceError", "expected abab")
    assert hashlib.sha256((root / "buffalo_l.zip").read_bytes()).hexdigest()[:12] in line or "sha256" in line
    _nothing_left(tmp_path, dest)


@pytest.mark.parametrize("name,url,kind,needle", [
    ("antelope", None, "InputError", "unknown model pack 'antelope'"),
    ("../up", "URL", "InputError", "model pack name"),
    ("..", "URL", "InputError", "model pack name"),
    ("a/b", "URL", "InputError", "model pack name"),
    ("", "URL", "InputError", "model pack name"),
    ("buffalo_l", "http://127.0.0.1:9/nothing-listens.zip", "SourceError", None),
])
def test_bad_name_or_url(tmp_path, http_root, name, url, kind, needle):
    root, base, _ = http_root
    _make_zip(root / "buffalo_l.zip", _pack_members())
    dest = tmp_path / "models"
    args = [name, "--dest", dest] + ([] if url is None else ["--url", f"{base}/buffalo_l.zip" if url == "URL" else url])
    _assert_one_error(_fetch(*args), kind, needle)
    _nothing_left(tmp_path, dest)
    assert not (tmp_path / "up").exists()


def test_bad_sha256_argument(tmp_path):
    _assert_one_error(_fetch("buffalo_l", "--dest", tmp_path / "m", "--sha256", "xyz"), "InputError", "64 hex")
