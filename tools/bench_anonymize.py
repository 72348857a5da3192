"""Benchmark `facebank anonymize` warm on real photos against the shell loop over `facebank pick --image`.

What a user did before: one `facebank pick --image P` process per photo (models loaded every
time, no swap, no check). What this measures: one Anonymizer (models loaded once) over the real
deepface photos, photos/s and faces/s, with each photo's time split into detection (detect,
age/gender, embed), pick, swap (the swapper and any fallback) and check (re-detect and embed each
result in a crop, then the finished photo whole). The swapper is `classical` when it is installed, else `blur` (said in the output).

Run: python tools/bench_anonymize.py [--build /work/exp/builds/current] [--photos 20] [--loop 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared/assets"


class _Clock:
    """Seconds spent inside wrapped callables, per part, for the current photo."""

    def __init__(self):
        self.parts: dict[str, float] = {}

    def wrap(self, part: str, fn):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.parts[part] = self.parts.get(part, 0.0) + time.perf_counter() - t
        return timed


def _swapper() -> tuple[str, str]:
    from facebank.swap import get_swapper

    try:
        get_swapper("classical")
        return "classical", ""
    except ImportError as exc:
        return "blur", f"classical is not installed here ({exc}); measured with blur"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="/work/exp/builds/current")
    ap.add_argument("--photos", type=int, default=20, help="real photos anonymised (after one warm-up photo)")
    ap.add_argument("--loop", type=int, default=3, help="photos run through the `facebank pick --image` loop")
    ap.add_argument("--detector", default="dlib")
    ap.add_argument("--detector-model", default=None)
    args = ap.parse_args()

    from facebank.anonymize import photo as photo_mod  # (facebank.anonymize the attribute is the function)
    from facebank import FaceBank
    from facebank.anonymize import AnonymizeOptions
    from facebank.anonymize.photo import Anonymizer, build_models

    photos = sorted((ASSETS / "deepface_faces").glob("img*.jpg"), key=lambda p: int(p.stem[3:]))
    swapper, note = _swapper()
    if note:
        print(f"note: {note}")
    session = FaceBank(args.build)
    anon = Anonymizer(session, AnonymizeOptions(swapper=swapper, detector=args.detector,
                                                detector_model=args.detector_model))
    clock = _Clock()
    # The parts: check_result is looked up in the photo module; the analyser's own calls outside it
    # are the detection. Wrapping the instances' methods leaves the library untouched.
    photo_mod.check_result = clock.wrap("check", photo_mod.check_result)
    anon.analyser.get = clock.wrap("analyse", anon.analyser.get)
    session.pick_faces = clock.wrap("pick", session.pick_faces)
    anon.swapper.swap = clock.wrap("swap", anon.swapper.swap)
    if anon.fallback is not None:
        anon.fallback.swap = clock.wrap("fallback", anon.fallback.swap)
    anon._recheck = clock.wrap("recheck", anon._recheck)  # the finished photo analysed whole

    t = time.perf_counter()
    anon.run(photos[0], key=photos[0].name)  # warm-up: models load here
    warmup = time.perf_counter() - t
    rows = []
    for p in photos[1:1 + args.photos]:
        clock.parts = {}
        t = time.perf_counter()
        _, report = anon.run(p, key=p.name)
        total = time.perf_counter() - t
        parts = dict(clock.parts)
        check = parts.get("check", 0.0) + parts.get("recheck", 0.0)
        rows.append({"total": total, "faces": len(report.faces),
                     "detect": parts.get("analyse", 0.0) - check,  # the analyser's time outside the checks
                     "pick": parts.get("pick", 0.0), "swap": parts.get("swap", 0.0) + parts.get("fallback", 0.0),
                     "check": check})
    session.close()
    n, faces, wall = len(rows), sum(r["faces"] for r in rows), sum(r["total"] for r in rows)

    models = build_models(FaceBank(args.build), None)
    loop = []
    for p in photos[1:1 + args.loop]:
        cmd = [str(Path(sys.executable).parent / "facebank"), "pick", "--image", str(p), "--build", args.build,
               "--json"] + [x for s, m in models.items() for x in ("--model", f"{s}={m}")]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        loop.append(time.perf_counter() - t)

    med = {k: statistics.median(r[k] for r in rows) for k in ("total", "detect", "pick", "swap", "check")}
    base = statistics.median(loop)
    print(f"swapper {swapper}, detector {args.detector}, build {args.build}")
    print(f"warm-up photo (models load): {warmup:.2f} s")
    print(f"{'':34}{'median s/photo':>16}{'photos/s':>10}")
    print(f"{'anonymize (warm, swap + check)':34}{med['total']:>16.3f}{n / wall:>10.2f}   faces/s {faces / wall:.2f}"
          f"  ({n} photos, {faces} faces)")
    print(f"{'loop of facebank pick --image':34}{base:>16.3f}{1 / base:>10.2f}   (pick only, {len(loop)} photos)")
    print(f"ratio: the loop takes {base / med['total']:.1f}x the time per photo of a warm anonymize")
    print("split of a photo's median time (ms): " + ", ".join(f"{k} {med[k] * 1e3:.0f}"
                                                                for k in ("detect", "pick", "swap", "check")))
    print(f"RESULT swapper={swapper} photos={n} faces={faces} photos_per_s={n / wall:.3f} faces_per_s={faces / wall:.3f} "
          f"s_per_photo={med['total']:.3f} loop_s_per_photo={base:.3f} speedup={base / med['total']:.2f} "
          f"detect_ms={med['detect'] * 1e3:.0f} pick_ms={med['pick'] * 1e3:.1f} swap_ms={med['swap'] * 1e3:.0f} "
          f"check_ms={med['check'] * 1e3:.0f}")


if __name__ == "__main__":
    main()
