"""Resource limits against hostile input (issue 13): decompression bombs are refused from their
header (Pillow's own limit kept, and facebank's lower one), and no single hostile input takes the
CLI past ~600 MB resident. Peak RSS is the kernel's figure (getrusage RUSAGE_CHILDREN ru_maxrss) for
the CLI run in a fresh subprocess by a small wrapper, so nothing else this test process ran counts."""

from __future__ import annotations

from facebank.cli.common import read_envelope

import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from facebank.errors import FaceRejected

RSS_LIMIT_MB = 600
PIL_DEFAULT_MAX_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)  # Pillow's own default (~89.5 MP)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, width: int, height: int, *, rows: bool = False) -> Path:
    """An RGB PNG of width x height: with `rows`, real all-black pixel data (zeros deflate ~1000:1);
    without, only the header and an empty image stream (a few dozen bytes on disk)."""
    comp = zlib.compressobj(9)
    data = bytearray()
    if rows:
        row = b"\0" * (1 + 3 * width)
        for _ in range(height):
            data += comp.compress(row)
    data += comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bytes(data)) + _chunk(b"IEND", b""))
    return path


def test_pillow_bomb_limit_is_kept():
    import facebank.cli  # noqa: F401  (everything the CLI imports at start)
    import facebank.vision.image_io as image_io

    assert Image.MAX_IMAGE_PIXELS == PIL_DEFAULT_MAX_PIXELS
    assert image_io.MAX_PIXELS < Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("size", [(100_000, 100_000), (20_000, 20_000), (10_000, 5_000)])
def test_bomb_header_is_a_typed_rejection(tmp_path, size):
    """Past Pillow's limit (first two) or facebank's lower one (third): refused from the header."""
    from facebank.vision.image_io import decode_image

    path = bomb_png(tmp_path / "bomb.png", *size)
    assert path.stat().st_size < 100
    with pytest.raises(FaceRejected) as info:
        decode_image(path.read_bytes(), name="bomb.png")
    assert info.value.reason == "unreadable" and "too large" in info.value.detail


def test_bomb_in_the_cli(tmp_path):
    """ingest: a rejection with its reason, the run goes on; pick --image: one `error:` line."""
    from facebank.cli import app

    folder = tmp_path / "faces"
    folder.mkdir()
    bomb_png(folder / "bomb.png", 100_000, 100_000)
    r = CliRunner().invoke(app, ["ingest", "folder", str(folder), "--bank", str(tmp_path / "b.h5"), "--json",
                                 "--workers", "1"])
    assert r.exit_code == 0, r.stderr
    out = read_envelope(r.stdout, "ingest folder")
    assert out["rejected"] == {"unreadable": 1} and "too large" in out["rejected_items"][0]["detail"]
    r = CliRunner().invoke(app, ["pick", "--image", str(folder / "bomb.png"), "--build", str(tmp_path / "nobuild")])
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.exit_code in (1, 2) and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr


# -- peak resident memory of the CLI on the worst single inputs --

_WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(r.returncode); "
            "sys.stderr.write(r.stderr[-2000:])")


def peak_rss_mb(*args) -> tuple[float, int, str]:
    """(peak RSS in MB of the CLI run `facebank ARGS` and its children, its exit code, its stderr)."""
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "facebank.cli", *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    rss_kb, code = r.stdout.split()
    return int(rss_kb) / 1024, int(code), r.stderr


def _zeros_zip(path: Path) -> Path:
    """A generated.photos zip whose one image member is 512 MiB of zeros (~0.5 MB compressed)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("1_512.jpg", "w") as fh:
            block = b"\0" * (1 << 20)
            for _ in range(512):
                fh.write(block)
        zf.writestr("dataset.csv", "Image,Gender,Age\n1_512.jpg,female,adult\n")
    return path


def _huge_csv_line(root: Path) -> Path:
    root.mkdir()
    with open(root / "dataset.csv", "w") as fh:
        fh.write("Image,Gender,Age\n")
        fh.write("x" * (60 << 20))  # one 60 MB line: under the 64 MiB file cap, past csv's field limit
        fh.write(",female,adult\n")
    return root


def _decodable_bomb(root: Path) -> Path:
    """The largest image that is decoded at all: 6000 x 6000 (36 MP, under the 40 MP cap), ~110 KB."""
    root.mkdir()
    bomb_png(root / "big.png", 6000, 6000, rows=True)
    return root


HOSTILE = {
    "zip_512MiB_zeros": lambda tmp: ["ingest", "generated-photos", _zeros_zip(tmp / "z.zip")],
    "huge_csv_line": lambda tmp: ["ingest", "generated-photos", _huge_csv_line(tmp / "csv")],
    "bomb_png_header": lambda tmp: ["ingest", "folder", bomb_png((tmp / "f").mkdir() or tmp / "f" / "b.png",
                                                                 100_000, 100_000).parent],
    "decodable_bomb_png": lambda tmp: ["ingest", "folder", _decodable_bomb(tmp / "big")],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_peak_rss_of_the_worst_single_inputs(tmp_path, case):
    args = HOSTILE[case](tmp_path)
    rss, code, stderr = peak_rss_mb(*args, "--bank", tmp_path / "bank.h5", "--workers", "1", "--json")
    print(f"{case}: peak RSS {rss:.0f} MB, exit {code}")
    assert "Traceback" not in stderr, stderr
    assert code in (0, 2), stderr  # a rejection (exit 0) or one input error line
    assert rss < RSS_LIMIT_MB, f"{case}: peak RSS {rss:.0f} MB"
