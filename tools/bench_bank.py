"""Bank benchmark: ingest + annotate + embed throughput, and reading one face by id.

Side by side in one run, against what a user would write instead:
- ingest: a plain loop per image (decode, dlib detect, 5-point shape, 128-d descriptor, keep
  the crop) saving one .npz per face, the usual face_recognition-style script;
- read: that per-face .npz (crop + embedding) against our bank's `face(id)` and `crop`+`vector`.

    python tools/bench_bank.py [--assets ../shared/assets] [--faces 596] [--workers 0]

Last line: RESULT ingest_faces_per_s=<x> read_p99_us=<y>
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def baseline_ingest(items, out: Path) -> float:
    """The script a user would write: one dlib pass per image, one .npz per face."""
    import dlib

    from facebank.vision.dlib_models import dlib_model_path
    from facebank.vision.image_io import decode_image

    detector = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(dlib_model_path("shape_5")))
    net = dlib.face_recognition_model_v1(str(dlib_model_path("resnet")))
    start = time.perf_counter()
    for i, item in enumerate(items):
        image = decode_image(item.data)
        faces = detector(image, 1)
        if len(faces) != 1:
            continue
        s = shape(image, faces[0])
        vec = np.asarray(net.compute_face_descriptor(image, s), np.float32)
        chip = dlib.get_face_chip(image, s, size=112)
        np.savez(out / f"{i:05d}.npz", crop=chip, embedding=vec / np.linalg.norm(vec))
    return time.perf_counter() - start


def percentile_us(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e6, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", default=os.environ.get("FACEBANK_ASSETS", str(ROOT.parent / "shared/assets")))
    ap.add_argument("--faces", type=int, default=0, help="limit the number of faces (0 = all)")
    ap.add_argument("--workers", type=int, default=0, help="facebank worker processes (0 = one per CPU)")
    ap.add_argument("--reads", type=int, default=5000)
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()

    from facebank.bank import open_bank
    from facebank.config import SpaceConfig
    from facebank.ingest import ingest
    from facebank.sources.generated_photos import iter_generated_photos

    items = [i for i in iter_generated_photos(Path(args.assets) / "generated_photos") if i.data]
    if args.faces:
        items = items[: args.faces]
    tmp = Path(tempfile.mkdtemp(prefix="facebank-bench-"))
    bank = tmp / "bank.h5"

    start = time.perf_counter()
    summary = ingest(str(bank), items, spaces=[SpaceConfig("dlib")], workers=args.workers)
    ours_s = time.perf_counter() - start
    ours_rate = len(items) / ours_s
    print(f"facebank ingest+annotate+embed (dlib, workers={args.workers or os.cpu_count()}): {len(items)} images, "
          f"{summary.added} faces, {summary.already_in_bank} duplicates, {dict(summary.rejected)} in {ours_s:.1f} s "
          f"= {ours_rate:.1f} images/s")

    base_rate = float("nan")
    if not args.skip_baseline:
        npz = tmp / "npz"
        npz.mkdir()
        base_s = baseline_ingest(items, npz)
        base_rate = len(items) / base_s
        print(f"baseline loop (dlib detect upsample 1 + descriptor, .npz per face): {base_s:.1f} s = "
              f"{base_rate:.1f} images/s; facebank/baseline = {ours_rate / base_rate:.2f}x")

    rng = np.random.default_rng(0)
    with open_bank(bank) as b:
        ids = list(b.ids)
        picks = rng.choice(len(ids), size=args.reads)
        for fid in ids[:50]:  # warm the OS cache like a long-running picker would have it
            b.crop(b.row(fid))
        ours = []
        for k in picks:
            t0 = time.perf_counter()
            row = b.row(ids[k])
            b.crop(row), b.vector("dlib", row)
            ours.append(time.perf_counter() - t0)
        full = []
        for k in picks[:1000]:
            t0 = time.perf_counter()
            b.face(ids[k])
            full.append(time.perf_counter() - t0)
    print(f"read crop+embedding by id: median {percentile_us(ours, 50):.0f} us, p99 {percentile_us(ours, 99):.0f} us "
          f"({args.reads} reads); whole face(id) median {percentile_us(full, 50):.0f} us, "
          f"p99 {percentile_us(full, 99):.0f} us")
    if not args.skip_baseline:
        files = sorted((tmp / "npz").glob("*.npz"))
        base = []
        for k in rng.choice(len(files), size=min(args.reads, 2000)):
            t0 = time.perf_counter()
            with np.load(files[k]) as z:
                z["crop"], z["embedding"]
            base.append(time.perf_counter() - t0)
        print(f"baseline .npz per face: median {percentile_us(base, 50):.0f} us, p99 {percentile_us(base, 99):.0f} us; "
              f"p99 ratio baseline/facebank = {percentile_us(base, 99) / percentile_us(ours, 99):.2f}x")
    print(f"bank file {bank.stat().st_size / 1e6:.1f} MB for {summary.added} faces")
    print(f"RESULT ingest_faces_per_s={ours_rate:.2f} read_p99_us={percentile_us(ours, 99):.0f}")


if __name__ == "__main__":
    main()
