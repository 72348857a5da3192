"""Write cost per face as the bank grows: schema-2 writer (fragments) beside the frozen v1 writer,
and at 1k faces beside the schema-2 writer that copies images into each commit (`copy_images`).

    PYTHONPATH=. python tools/bench_bank_write.py [--max-faces 30000] [--dir /tmp]

Synthetic FaceRecords carrying ~1.3 MB of random image bytes (the size of a 1024 px PNG face)
are written through `BankWriter` with its default batching (64 faces per batch, a commit every
2,048 faces). Prints ms/face per window of faces, the medians, and
`write_growth` = ms/face over the last window at the big size / ms/face over the first 1k,
and `refs_vs_copy` = ms/face copying images / ms/face linking them, at 1k faces.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facebank.bank.records import FaceRecord

_POOL = 16  # distinct random buffers; each face gets a unique prefix so content hashes differ


def _records(n: int, face_bytes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pool = [rng.bytes(face_bytes) for _ in range(_POOL)]
    crop = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    box, marks = np.array([1, 2, 30, 40], np.float32), np.zeros((5, 2), np.float32)
    for i in range(n):
        image = i.to_bytes(8, "little") + pool[i % _POOL][8:]
        yield FaceRecord(source="stylegan", source_id=f"bench:seed{i}", image=image, image_format="png",
                         width=1024, height=1024, box=box, landmarks=marks, detector="bench", crop=crop,
                         age=30.0, gender=i % 2, status=0)


def measure_write(n_faces: int, writer: str = "v2", face_bytes: float = 1.3e6, window: int = 2048,
                  directory: str | None = None, keep: bool = False) -> list[float]:
    """ms/face over each window of `window` faces written (commits included), for `n_faces` faces."""
    options = {}
    if writer in ("v2", "v2-copy"):
        from facebank.bank.writer import BankWriter

        options = {"copy_images": writer == "v2-copy"}  # v2-copy: images copied into each commit (before refs)
    elif writer == "v1":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))  # frozen, test-only
        from bank_v1_frozen.writer import BankWriter
    else:
        raise ValueError(f"writer must be v1, v2 or v2-copy, not {writer!r}")
    root = Path(tempfile.mkdtemp(prefix=f"bench-{writer}-", dir=directory))
    out: list[float] = []
    try:
        with BankWriter(root / "bank.h5", **options) as w:
            t = time.perf_counter()
            for i, rec in enumerate(_records(n_faces, int(face_bytes)), 1):
                w.add_face(rec)
                if i % window == 0 or i == n_faces:
                    if i == n_faces:
                        w.commit()
                    now = time.perf_counter()
                    out.append((now - t) * 1000 / (window if i % window == 0 else i % window))
                    t = now
        return out
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-faces", type=int, default=30_000, help="the big bank size for the new writer")
    ap.add_argument("--v1-faces", type=int, default=8192)
    ap.add_argument("--face-bytes", type=float, default=1.3e6)
    ap.add_argument("--dir", default=None, help="where to write the banks (default: the temp dir)")
    ap.add_argument("--keep-big", action="store_true", help="keep the big v2 bank (prints its path)")
    a = ap.parse_args(argv)
    free = shutil.disk_usage(a.dir or tempfile.gettempdir()).free
    fit = int(free * 0.85 / a.face_bytes)
    big = min(a.max_faces, fit)
    v1n = min(a.v1_faces, fit)
    print(f"free disk {free / 1e9:.1f} GB: big size {big} faces (asked {a.max_faces}), v1 {v1n} faces,"
          f" {a.face_bytes / 1e6:.2f} MB/face", flush=True)
    res = {}
    for label, writer, n in (("v2_1k", "v2", 1024), ("v2copy_1k", "v2-copy", 1024), ("v1_1k", "v1", 1024),
                             ("v1_big", "v1", v1n),
                             ("v2_big", "v2", big)):
        ms = measure_write(n, writer, a.face_bytes, directory=a.dir, keep=a.keep_big and label == "v2_big")
        res[label] = ms
        print(f"{label:7s} n={n:6d} ms/face per 2048-face window: " + " ".join(f"{x:.1f}" for x in ms), flush=True)
        print(f"{label:7s} median {statistics.median(ms):.2f} ms/face, last window {ms[-1]:.2f}", flush=True)
    a1k = statistics.median(res["v2_1k"])
    b = res["v2_big"][-1]
    print(f"v1 growth (last window at {v1n} / first 1k): {res['v1_big'][-1] / res['v1_1k'][0]:.2f}")
    print(f"RESULT write_ms_per_face_1k={a1k:.2f} write_ms_per_face_{big // 1000}k={b:.2f} "
          f"write_growth={b / a1k:.2f} v2copy_ms_per_face_1k={statistics.median(res['v2copy_1k']):.2f} "
          f"refs_vs_copy={statistics.median(res['v2copy_1k']) / a1k:.2f} v1_ms_per_face_1k={statistics.median(res['v1_1k']):.2f} "
          f"v1_ms_per_face_{v1n // 1000}k={res['v1_big'][-1]:.2f} big_faces={big}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
