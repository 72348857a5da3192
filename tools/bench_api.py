"""Latency of the public API, `FaceBank.pick_target`, against the picker core it wraps.

A synthetic 10k-face bank (random 512-d unit vectors in one space, placeholder crops) is built
and indexed in a temporary folder; then, side by side in one run: `Picker.pick` directly,
`pick_target` without a group, and `pick_target` with an age/gender group. Queries are
correlated with the bank so that about `--eligible` of it is eligible.

    python tools/bench_api.py [--n 10000] [--picks 5000]

Last line: RESULT api_pick_p50_us=<a> api_pick_p99_us=<b> api_group_pick_p99_us=<c>

With --photo, the photo path instead: `FaceBank.pick_for_image` on a real photo (models loaded
once per session, so a call costs inference only) against the one-shot path it replaces
(`analyse_photo` loads the detector, age/gender and embedding models on every call, then the
same session pick), on a bank of real generated.photos faces in the dlib space:

    python tools/bench_api.py --photo ../shared/assets/deepface_faces/img1.jpg [--calls 7]

Last line: RESULT photo_oneshot_ms=<a> photo_session_ms=<b> photo_speedup=<a/b>
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import numpy as np


def make_bank(path: Path, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    from facebank.bank import BankWriter, FaceRecord

    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    crop = np.zeros((112, 112, 3), np.uint8)
    nan4, nan52 = np.full(4, np.nan, np.float32), np.full((5, 2), np.nan, np.float32)
    with BankWriter(path, batch_size=4096, commit_every=10**9) as w:
        w.register_space("s", {"model": "random", "sha256": "0" * 64, "dim": d})
        for i in range(n):
            w.add_face(FaceRecord(source="folder", source_id=str(i), image=i.to_bytes(8, "little"), image_format="png",
                                  width=1, height=1, box=nan4, landmarks=nan52, detector="", crop=crop,
                                  age=float(rng.integers(0, 80)), gender=int(rng.integers(0, 2)),
                                  embeddings={"s": x[i]}))
    return x


def timed(fn, queries, repeat: int) -> np.ndarray:
    gc.disable()
    try:
        out = []
        for k in range(repeat):
            t0 = time.perf_counter_ns()
            fn(queries[k % len(queries)])
            out.append(time.perf_counter_ns() - t0)
        return np.asarray(out) / 1000.0
    finally:
        gc.enable()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--picks", type=int, default=5000)
    ap.add_argument("--eligible", type=float, default=0.5, help="share of the bank each query may get")
    ap.add_argument("--photo", type=Path, help="benchmark pick_for_image on this real photo instead")
    ap.add_argument("--gp", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "assets"
                    / "generated_photos" / "age_adult", help="generated.photos folder for the --photo bank")
    ap.add_argument("--calls", type=int, default=7, help="timed calls per path with --photo")
    args = ap.parse_args()
    if args.photo:
        return bench_photo(args)

    from facebank import FaceBank, build_index

    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="facebank-api-"))
    t0 = time.perf_counter()
    x = make_bank(tmp / "bank.h5", args.n, args.d, rng)
    queries = []
    for _ in range(64):  # queries near a random subset, so similarities spread out
        q = x[rng.choice(args.n, 50, replace=False)].mean(0) + 0.02 * rng.standard_normal(args.d).astype(np.float32)
        queries.append((q / np.linalg.norm(q)).astype(np.float32))
    sims = np.stack(queries) @ x.T
    thr = float(np.quantile(sims, args.eligible))
    build = build_index(tmp / "bank.h5", out=tmp / "builds", thresholds={"s": thr})
    print(f"# bank of {args.n} x {args.d} and its build made in {time.perf_counter() - t0:.1f} s; "
          f"threshold {thr:.4f} (about {args.eligible:.0%} eligible)")

    with FaceBank(build) as fb:
        g = np.random.default_rng(1)
        runs = {
            "Picker.pick (core)": lambda q: fb.picker.pick({"s": q}, thresholds={"s": thr}, rng=g),
            "FaceBank.pick_target": lambda q: fb.pick_target(q, space="s", rng=g),
            "pick_target, age 34 + gender f": lambda q: fb.pick_target(q, space="s", age=34, gender="f", rng=g,
                                                                      fallback="widen_age"),
        }
        for fn in runs.values():  # warm up
            timed(fn, queries, 200)
        results = {name: timed(fn, queries, args.picks) for name, fn in runs.items()}
    core = np.median(results["Picker.pick (core)"])
    for name, t in results.items():
        p50, p99 = np.percentile(t, [50, 99])
        print(f"{name:32s} p50 {p50:7.1f} us  p99 {p99:7.1f} us  ({p50 / core:.2f}x the core's median)")
    api, grp = results["FaceBank.pick_target"], results["pick_target, age 34 + gender f"]
    print(f"RESULT api_pick_p50_us={np.median(api):.1f} api_pick_p99_us={np.percentile(api, 99):.1f} "
          f"api_group_pick_p99_us={np.percentile(grp, 99):.1f}")


def bench_photo(args) -> None:
    """Per-photo cost of the session path (models warm) beside the one-shot path (models per call)."""
    from facebank import FaceBank, build_index
    from facebank.config import SpaceConfig
    from facebank.ingest import ingest
    from facebank.pick.analyse import analyse_photo
    from facebank.pick.options import PickOptions
    from facebank.sources.generated_photos import iter_generated_photos

    tmp = Path(tempfile.mkdtemp(prefix="facebank-photo-"))
    items = [i for i in iter_generated_photos(args.gp) if i.data][:30]
    ingest(str(tmp / "bank.h5"), items, spaces=[SpaceConfig("dlib")])
    build = build_index(tmp / "bank.h5", out=tmp / "builds")
    image = args.photo.read_bytes()
    with FaceBank(build) as fb:
        g = np.random.default_rng(0)

        def oneshot():  # today's private path: every model loaded again for this photo
            faces = analyse_photo(image, spaces=fb.spaces)
            return fb.pick_faces([{"embedding": f.embeddings, "age": f.age, "gender": f.gender} for f in faces],
                                 PickOptions(rng=g))

        def session():
            return fb.pick_for_image(image, rng=g)

        t0 = time.perf_counter()
        first = session()
        cold = time.perf_counter() - t0
        assert len(first) == len(oneshot()) >= 1, "both paths must find the same faces"
        times = {"one-shot (models per call)": [], "FaceBank.pick_for_image": []}
        for _ in range(args.calls):  # interleaved, so machine load hits both alike
            for name, fn in (("one-shot (models per call)", oneshot), ("FaceBank.pick_for_image", session)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    print(f"# {args.photo.name}: {len(first)} face(s); bank of {len(items)} real faces; first session call "
          f"(loads the models) {cold * 1e3:.0f} ms")
    med = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    for name, m in med.items():
        print(f"{name:28s} median {m:7.1f} ms  min {min(times[name]) * 1e3:7.1f} ms  ({args.calls} calls)")
    a, b = med["one-shot (models per call)"], med["FaceBank.pick_for_image"]
    print(f"RESULT photo_oneshot_ms={a:.1f} photo_session_ms={b:.1f} photo_speedup={a / b:.2f}")


if __name__ == "__main__":
    main()
