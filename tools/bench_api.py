"""The public API (`FaceBank.pick_target`, `pick_targets`, reads, session open) against the picker
core it wraps, side by side in one run (issue 22).

A synthetic bank of random 512-d unit vectors in one or two spaces (written with the project's
fragment writer, tools/bench_integrity.py) and its flat build, threshold 0 in every space (about
half the bank eligible per space), or an existing one (`--reuse DIR` with DIR/bank.h5 and
DIR/builds/b). The variants take turns in rounds, so machine load hits them alike:

- core one space (`Picker.pick`) vs `pick_target` one space; core two spaces vs `pick_target`
  two spaces (a dict query); `pick_target` with age 34 + gender f (widen_age), keyed, furthest
  (at n <= 100k: a furthest pick scans the bank);
- batches: `Picker.pick_batch(as_arrays=True)` vs `pick_targets`, `--batch` queries;
- one-face read by id: `bank.row(id)` + `bank.crop(row)` + `bank.vector(space, row)`;
- session open (`FaceBank(build)`), and the part of it that is `Picker(...)` construction.

    python tools/bench_api.py [--n 10000] [--spaces 2] [--picks 400] [--rounds 10]
    python tools/bench_api.py --reuse DIR        # e.g. a 1M bank made by tools/bench_integrity.py

Picks through pick_target run with margin=1.0 beside the core (the same picks); the lines marked
"margin" use the build's default privacy margin (facebank.index.margin), timed in the same rounds.

Last line: RESULT api_p99_ratio_1s=... api_p99_ratio_2s=... group_p99_us=... open_ms=...
read_p99_us=... batch_per_s=... (ratios: pick_target p99 / core p99 on the same queries).

With --photo, the photo path instead (docs/photo_path.md): `FaceBank.pick_for_image` on real photos
(deepface img1.jpg resized to 480x640, the same at its own 1382x1868 = 2.6 MP, the 3-face img62.jpg;
or the photos given), split per stage (decode, detect, attributes, embed per space, pick) and per
detector, the new path beside the old one in the same rounds, on builds over 30 generated.photos
faces (mobilefacenet_128d alone; dlib + mobilefacenet_128d):

    python tools/bench_api.py --photo [PHOTO ...] [--calls 7] [--detectors scrfd yunet dlib]

Last line: RESULT photo_<photo>_<detector>_ms=<median of pick_for_image> ... (photo_2_6mp_scrfd_ms
is issue 22's target).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

D = 512


def make(root: Path, n: int, spaces: tuple[str, ...]) -> tuple[Path, Path]:
    from bench_integrity import synthetic_bank

    from facebank.index.build import build_index

    bank = root / "bank.h5"
    synthetic_bank(bank, n, seed=0, spaces=spaces)
    return bank, build_index(bank, out=root / "builds", thresholds={s: 0.0 for s in spaces}, build_id="b")


def pct(a, q) -> float:
    return float(np.percentile(np.asarray(a) / 1e3, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--spaces", type=int, default=2, choices=(1, 2))
    ap.add_argument("--reuse", type=Path, help="a folder with bank.h5 and builds/b (its spaces are used)")
    ap.add_argument("--picks", type=int, default=400, help="picks per variant per round")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--no-gc", action="store_true", help="disable the garbage collector while timing")
    ap.add_argument("--open", type=Path, nargs="*", default=[], metavar="DIR",
                    help="also time opening these (DIR/bank.h5 + DIR/builds/b, e.g. 100k and 1M banks)")
    ap.add_argument("--photo", type=Path, nargs="*", help="benchmark pick_for_image instead: on these photos, or "
                    "with none given on a real one at 480x640 and at 2.6 MP and a 3-face one")
    ap.add_argument("--gp", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "assets"
                    / "generated_photos" / "age_adult", help="generated.photos folder for the --photo bank")
    ap.add_argument("--calls", type=int, default=7, help="timed calls per path with --photo")
    ap.add_argument("--detectors", nargs="*", default=["scrfd", "yunet", "dlib"])
    args = ap.parse_args()
    if args.photo is not None:
        return bench_photo(args)

    from facebank import FaceBank
    from facebank.index.picker import Picker

    if args.reuse:
        bank, build = args.reuse / "bank.h5", args.reuse / "builds" / "b"
    else:
        t0 = time.perf_counter()
        bank, build = make(Path(tempfile.mkdtemp(prefix="facebank-api-")), args.n, ("s", "t")[:args.spaces])
        print(f"# bank of {args.n:,} x {D} in {args.spaces} space(s) and its build made in {time.perf_counter() - t0:.0f} s")
    opens = time_open(build, bank)
    open_at = {}
    for d in args.open:
        open_at[d] = time_open(d / "builds" / "b", d / "bank.h5")
    fb = FaceBank(build, bank=bank)
    t = time.perf_counter_ns()
    Picker(fb._vectors, fb.codes)
    picker_ns = time.perf_counter_ns() - t
    spaces, n = fb.spaces, len(fb.rows)
    thr = dict(fb.thresholds)
    rng = np.random.default_rng(2)
    qs = {s: rng.standard_normal((256, D), dtype=np.float32) for s in spaces}
    one = spaces[0]
    g = np.random.default_rng(1)
    ids = [fb.bank.face_id(int(r)) for r in rng.integers(0, len(fb.bank), 256)]

    def read(k):
        row = fb.bank.row(ids[k % 256])
        fb.bank.crop(row), fb.bank.vector(one, row)

    runs = {
        "core, one space": lambda k: fb.picker.pick({one: qs[one][k % 256]}, thresholds={one: thr[one]}, rng=g),
        # margin=1.0: the same picks as the core's; the build's default margin is timed on its own line
        "pick_target, one space": lambda k: fb.pick_target(qs[one][k % 256], space=one, rng=g, margin=1.0),
        "pick_target, one space, margin": lambda k: fb.pick_target(qs[one][k % 256], space=one, rng=g),
        "pick_target, age 34 + f": lambda k: fb.pick_target(qs[one][k % 256], space=one, age=34, gender="f", rng=g,
                                                            fallback="widen_age", margin=1.0),
        "core, keyed": lambda k: fb.picker.pick({one: qs[one][k % 256]}, thresholds={one: thr[one]}, key=f"photo-{k}"),
        "pick_target, keyed": lambda k: fb.pick_target(qs[one][k % 256], space=one, key=f"photo-{k}", margin=1.0),
        "one-face read by id": read,
    }
    if len(spaces) == 2:
        runs["core, two spaces"] = lambda k: fb.picker.pick({s: qs[s][k % 256] for s in spaces}, thresholds=thr, rng=g)
        runs["pick_target, two spaces"] = lambda k: fb.pick_target({s: qs[s][k % 256] for s in spaces}, rng=g,
                                                                   margin=1.0)
        runs["pick_target, two spaces, margin"] = lambda k: fb.pick_target({s: qs[s][k % 256] for s in spaces},
                                                                           rng=g)
    if n <= 100_000:
        runs["core, furthest"] = lambda k: fb.picker.pick({one: qs[one][k % 256]}, thresholds={one: thr[one]},
                                                          mode="furthest")
        runs["pick_target, furthest"] = lambda k: fb.pick_target(qs[one][k % 256], space=one, mode="furthest",
                                                                 margin=1.0)
    times: dict[str, list[int]] = {name: [] for name in runs}
    slow: dict[str, int] = {name: 0 for name in runs}
    pauses = GcPauses()
    flt0 = resource.getrusage(resource.RUSAGE_SELF)
    for r in range(args.rounds + 1):  # round 0 warms up (maps, caches, the first source_id read)
        for name, fn in runs.items():
            if args.no_gc:
                gc.disable()
            for k in range(args.picks):
                t = time.perf_counter_ns()
                fn(k)
                dt = time.perf_counter_ns() - t
                if r:
                    times[name].append(dt)
                    slow[name] += dt > 1_000_000
            gc.enable()
    flt1 = resource.getrusage(resource.RUSAGE_SELF)
    gc.callbacks.remove(pauses.callback)
    qb = {s: rng.standard_normal((args.batch, D), dtype=np.float32) for s in spaces}
    batch = {"core pick_batch": [], "pick_targets": []}
    for _ in range(5):
        t = time.perf_counter_ns()
        fb.picker.pick_batch(qb, thresholds=thr, rng=g, as_arrays=True)
        batch["core pick_batch"].append(time.perf_counter_ns() - t)
        t = time.perf_counter_ns()
        fb.pick_targets(qb, rng=g, margin=1.0)
        batch["pick_targets"].append(time.perf_counter_ns() - t)
    fb.close()

    print(f"# n={n:,}, spaces {spaces}, {args.rounds} rounds x {args.picks} picks per variant, gc "
          f"{'off' if args.no_gc else 'on'}; page faults during the rounds: {flt1.ru_minflt - flt0.ru_minflt} minor, "
          f"{flt1.ru_majflt - flt0.ru_majflt} major")
    print(f"# garbage collections during the rounds: {pauses.count} (gen 2: {pauses.full}), longest pause "
          f"{pauses.longest_us:.0f} us: {'not ' if pauses.longest_us < 1000 else ''}a cause of the ms tails")
    print(f"session open: median {opens.median_ms:.0f} ms (min {opens.min_ms:.0f}), {opens.norm_ms:.0f} ms of it the "
          f"exact check's max-norm pass; first pick after open {opens.first_pick_ms:.1f} ms; Picker(...) {picker_ns / 1e6:.0f} ms")
    for d, o in open_at.items():
        print(f"session open of {d} ({o.n:,} faces, {o.spaces} space(s)): median {o.median_ms:.0f} ms (min {o.min_ms:.0f}), "
              f"{o.norm_ms:.0f} ms of it the max-norm pass; first pick after open {o.first_pick_ms:.1f} ms")
    core = {"one space": times["core, one space"], "two spaces": times.get("core, two spaces"),
            "keyed": times["core, keyed"], "furthest": times.get("core, furthest")}
    for name, t in times.items():
        base = core[next((k for k in ("two spaces", "keyed", "furthest") if k in name), "one space")]
        print(f"{name:26s} p50 {pct(t, 50):8.1f} us  p99 {pct(t, 99):8.1f} us  (p50 {pct(t, 50) / pct(base, 50):.2f}x, "
              f"p99 {pct(t, 99) / pct(base, 99):.2f}x the core's)  calls > 1 ms: {slow[name]}")
    for name, t in batch.items():
        print(f"{name:26s} {args.batch / np.median(t) * 1e9:10,.0f} picks/s (median of {len(t)} batches of {args.batch:,})")
    res = {}
    for key, api, base in (("1s", "pick_target, one space", "core, one space"),
                           ("2s", "pick_target, two spaces", "core, two spaces"),
                           ("keyed", "pick_target, keyed", "core, keyed"),
                           ("furthest", "pick_target, furthest", "core, furthest")):
        if api in times:
            res[f"api_p99_ratio_{key}"] = pct(times[api], 99) / pct(times[base], 99)
            res[f"api_p50_ratio_{key}"] = pct(times[api], 50) / pct(times[base], 50)
    res["margin_p50_ratio_1s"] = pct(times["pick_target, one space, margin"], 50) / pct(times["pick_target, one space"], 50)
    res.update(group_p50_us=pct(times["pick_target, age 34 + f"], 50), group_p99_us=pct(times["pick_target, age 34 + f"], 99),
               open_ms=opens.median_ms, open_without_max_norm_ms=opens.median_ms - opens.norm_ms)
    for o in open_at.values():
        tag = (f"{o.n // 1000}k" if o.n < 1_000_000 else f"{o.n // 1_000_000}m") + f"_{o.spaces}s"
        res[f"open_{tag}_ms"] = o.median_ms
        res[f"open_{tag}_without_max_norm_ms"] = o.median_ms - o.norm_ms
    res.update(read_p50_us=pct(times["one-face read by id"], 50), read_p99_us=pct(times["one-face read by id"], 99),
               batch_per_s=args.batch / np.median(batch["pick_targets"]) * 1e9,
               core_batch_per_s=args.batch / np.median(batch["core pick_batch"]) * 1e9)
    print("# issue 22's figures before this work (10k, one space): pick_target p99 6.2x the core's, with a group "
          "107.6 us (4,129 us under load); open 1.72 s at 1M, 149 ms at 100k; read p99 178 us; batch 234k/s.")
    print("# targets: p99 ratio <= 2 (one and two spaces, 10k and 1M), group p99 <= 50 us at 10k, open <= 500 ms "
          "at 1M and <= 60 ms at 100k, read p99 <= 60 us, batch >= 1M/s at 10k.")
    print("RESULT " + " ".join(f"{k}={v:.2f}" if "ratio" in k else f"{k}={v:.0f}" for k, v in res.items()))


class GcPauses:
    """Every garbage collection while registered: how many, how many full (gen 2), the longest pause."""

    def __init__(self):
        self.count = self.full = 0
        self.longest_us = 0.0
        self._t = 0
        gc.callbacks.append(self.callback)

    def callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = time.perf_counter_ns()
            return
        self.count += 1
        self.full += info.get("generation") == 2
        self.longest_us = max(self.longest_us, (time.perf_counter_ns() - self._t) / 1e3)


class Opened:
    """Session-open timings of one build: median and min of 4 opens, the part of an open that is
    the exact check's max-norm pass over the storage (0 once it is recorded at build time), and
    the first pick_target after an open (what a pipeline waits for before its first target)."""

    def __init__(self, build: Path, bank: Path):
        from facebank import FaceBank
        from facebank.index import exact

        ns = []
        for _ in range(4):
            t = time.perf_counter_ns()
            FaceBank(build, bank=bank).close()
            ns.append(time.perf_counter_ns() - t)
        self.median_ms, self.min_ms = float(np.median(ns)) / 1e6, min(ns) / 1e6
        fb = FaceBank(build, bank=bank)
        self.n, self.spaces = len(fb.rows), len(fb.spaces)
        q = np.random.default_rng(0).standard_normal(fb.picker.spaces[fb.spaces[0]], dtype=np.float32)
        t = time.perf_counter_ns()
        fb.pick_target(q, space=fb.spaces[0], margin=1.0)
        self.first_pick_ms = (time.perf_counter_ns() - t) / 1e6
        self.norm_ms = 0.0
        max_norm = getattr(exact, "_max_norm", None)  # the exact check's pass at open, while it has one
        if max_norm is not None:
            t = time.perf_counter_ns()
            for s, v in fb._vectors.items():
                max_norm(s, v)
            self.norm_ms = (time.perf_counter_ns() - t) / 1e6
        fb.close()


def time_open(build: Path, bank: Path) -> Opened:
    return Opened(build, bank)




# -- the photo path (--photo): pick_for_image per stage, per detector, new path beside the old --------------

PHOTO_STAGES = ("decode", "detect", "attributes")


class _PerFace:
    """A model seen without its batch method: the old path ran the models one face at a time."""

    def __init__(self, model):
        self.model, self.info = model, model.info

    def estimate(self, image, detection):
        return self.model.estimate(image, detection)

    def embed(self, image, detection):
        return self.model.embed(image, detection)


def _photo_inputs(args, assets: Path) -> dict[str, bytes]:
    """The photos timed: a real one at 480x640, the same at its own 2.6 MP, and a 3-face one (or --photo's)."""
    import cv2

    from facebank.pick.analyse import as_rgb

    if args.photo:
        return {p.stem: p.read_bytes() for p in args.photo}
    real = assets / "deepface_faces" / "img1.jpg"  # 1382x1868 (2.58 MP), one face, as a camera wrote it
    small = cv2.resize(as_rgb(real), (480, 640), interpolation=cv2.INTER_AREA)
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return {"480x640": enc.tobytes(), "2_6mp": real.read_bytes(),
            "3faces": (assets / "deepface_faces" / "img62.jpg").read_bytes()}


def _photo_bank(args, assets: Path, mbf: Path) -> dict[str, Path]:
    """Builds over 30 generated.photos faces: one in the ONNX space alone, one in dlib + that space."""
    from facebank import build_index
    from facebank.config import SpaceConfig
    from facebank.ingest import ingest
    from facebank.sources.generated_photos import iter_generated_photos

    tmp = Path(tempfile.mkdtemp(prefix="facebank-photo-"))
    items = [i for i in iter_generated_photos(assets / "generated_photos" / "age_adult") if i.data][:30]
    ingest(str(tmp / "bank.h5"), items, spaces=[SpaceConfig("dlib"), SpaceConfig("mobilefacenet_128d", str(mbf))])
    return {"mbf": build_index(tmp / "bank.h5", out=tmp / "builds", spaces=["mobilefacenet_128d"], build_id="mbf"),
            "dlib+mbf": build_index(tmp / "bank.h5", out=tmp / "builds", build_id="both")}


def _old_detector(an, det_name: str, path):
    """The detector as it ran before: SCRFD on the square 640 canvas, ONNX Runtime threads spinning."""
    import onnxruntime as ort

    from facebank.vision.registry import load_detector

    det = load_detector(det_name, path, **({"canvas": "full"} if det_name == "scrfd" else {}))
    if hasattr(det, "_session"):  # onnxruntime's defaults, spinning included
        det._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return det


def bench_photo(args) -> None:
    """`pick_for_image`'s cost per photo with models warm, split per stage, per detector, new and old path."""
    import contextlib
    from unittest import mock

    from facebank import FaceBank
    from facebank.pick.analyse import FaceAnalyser, embed_faces, estimate_faces, as_rgb
    from facebank.pick.options import PickOptions, QueryFace
    from facebank.vision import image_io

    assets = args.gp.parents[1]
    mbf = assets / "onnx_embedders" / "mobilefacenet_128d.onnx"
    paths = {"dlib": None, "scrfd": assets / "insightface_scrfd" / "det_2.5g.onnx",
             "yunet": assets / "yunet" / "face_detection_yunet_2023mar.onnx"}
    photos = _photo_inputs(args, assets)
    builds = _photo_bank(args, assets, mbf)
    sessions = {k: FaceBank(b) for k, b in builds.items()}
    models = {"mobilefacenet_128d": str(mbf)}
    g = np.random.default_rng(0)
    pillow_only = mock.patch.object(image_io, "_decode_jpeg", lambda data, image: None)  # the old decode
    res: dict[str, float] = {}
    print(f"# {args.calls} warm calls per path, medians in ms (old = Pillow decode, SCRFD on the 640x640 canvas, "
          "ONNX Runtime spinning, one model call per face); bank: 30 generated.photos faces")
    for det_name in args.detectors:
        analysers = {}
        for sname, fb in sessions.items():
            an = FaceAnalyser(fb.spaces, models=models, detector=det_name, detector_path=paths[det_name]).prepare()
            det, attr, embedders = an._models
            old = FaceAnalyser(fb.spaces, models=models, detector=det_name, detector_path=paths[det_name])
            old._models = (_old_detector(an, det_name, paths[det_name]), _PerFace(attr),
                           {s: _PerFace(e) for s, e in embedders.items()})
            analysers[sname] = {"new": an, "old": old}
        key = tuple(sorted(models.items()))
        for label, image in photos.items():
            h, w = as_rgb(image).shape[:2]
            times: dict[str, list[float]] = {}
            faces = 0
            for c in range(args.calls + 1):  # call 0 warms up
                for path_name in ("new", "old"):
                    with pillow_only if path_name == "old" else contextlib.nullcontext():
                        an = analysers["dlib+mbf"][path_name]
                        det, attr, embedders = an._models
                        t = {"start": time.perf_counter()}
                        rgb = as_rgb(image)
                        t["decode"] = time.perf_counter()
                        dets = [d for d in det.detect(rgb)
                                if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= an.min_face_px]
                        t["detect"] = time.perf_counter()
                        attrs = estimate_faces(attr, rgb, dets)
                        t["attributes"] = time.perf_counter()
                        vectors = {}
                        for s, e in embedders.items():
                            vectors[s] = embed_faces(e, rgb, dets)
                            t[f"embed {s}"] = time.perf_counter()
                        if dets:
                            sessions["dlib+mbf"].pick_faces(
                                [QueryFace({s: v[k] for s, v in vectors.items()}, None, a.age, a.gender)
                                 for k, a in enumerate(attrs)], PickOptions(rng=g, fallback="widen_age"))
                        t["pick"] = time.perf_counter()
                        faces = len(dets)
                        totals = {}
                        for sname, fb in sessions.items():  # the public call, end to end
                            fb._analysers[key] = analysers[sname][path_name]
                            t0, c0 = time.perf_counter(), time.process_time()
                            fb.pick_for_image(image, models=models, rng=g, fallback="widen_age")
                            totals[f"pick_for_image {sname}"] = time.perf_counter() - t0
                            # CPU seconds of all the process's threads: what the call costs on an idle machine
                            totals[f"pick_for_image {sname} cpu"] = time.process_time() - c0
                    if c:
                        names = list(t)
                        for a, b in zip(names, names[1:]):
                            times.setdefault(f"{path_name} {b}", []).append(t[b] - t[a])
                        for k, v in totals.items():
                            times.setdefault(f"{path_name} {k}", []).append(v)
            med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
            print(f"{det_name:5s} {label:8s} {w}x{h} ({w * h / 1e6:.1f} MP), {faces} face(s):")
            for stage in [k[4:] for k in med if k.startswith("new ")]:
                new, old = med[f"new {stage}"], med[f"old {stage}"]
                print(f"    {stage:28s} new {new:7.1f}   old {old:7.1f}   ({old / max(new, 1e-9):.2f}x)")
            res[f"photo_{label}_{det_name}_ms"] = med["new pick_for_image mbf"]
            res[f"photo_{label}_{det_name}_dlib_ms"] = med["new pick_for_image dlib+mbf"]
            res[f"photo_{label}_{det_name}_old_ms"] = med["old pick_for_image mbf"]
            res[f"photo_{label}_{det_name}_cpu_ms"] = med["new pick_for_image mbf cpu"]
    for fb in sessions.values():
        fb.close()
    print("# photo_<photo>_<detector>_ms: pick_for_image on a build in mobilefacenet_128d alone; _dlib_ms: in dlib "
          "and mobilefacenet_128d; _old_ms: the old path on the first build; _cpu_ms: the process's CPU time "
          "of the first (all threads), the wall time an unshared machine would show")
    print("RESULT " + " ".join(f"{k}={v:.1f}" for k, v in res.items()))


if __name__ == "__main__":
    main()
