"""Benchmark: what build integrity costs a session, side by side in one run (issue 13).

1. Session open (`FaceBank(build, bank=...)`) at 100k and 1M x 512 (one space, float32: 2 GB of
   vectors at 1M) with the build's files checked by XXH3-128 (manifest version 2), by sha256 (the
   same files under a version-1 manifest) and not at all; the three take turns, medians of
   `--opens` rounds. Also the checksum pass alone.
2. Pick latency (`pick_target`, one random unit query, threshold 0: about half the bank is
   eligible) at 10k and 100k: with the per-target re-check against the bank (facebank.pick.guard:
   its vector, group and threshold, read from the fragments' memory maps) and without it; the two
   take turns in rounds.

Banks are synthetic (random unit vectors) but written with the project's own fragment writer
(`facebank.bank.layout`: a fragment, row sums, the top file); crops and images are left
unwritten (HDF5 allocates nothing for them), so a 1M bank is 2 GB, not 37 GB. Builds come from
`facebank.index.build.build_index`. Everything lives in a temporary folder (`--dir`), removed
at the end. The files are in the page cache when opened (just written): the figures are the
hashing and reading cost, not a cold disk's.

    python tools/bench_integrity.py [--open-sizes 100000 1000000] [--pick-sizes 10000 100000]

Last line: `RESULT open_ms_1m_xxh3=... open_ms_1m_sha256=... open_ms_1m_none=... ...
pick_p99_ratio_100k=...` (pick ratios: with the re-check / without).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from facebank.bank import schema  # noqa: E402
from facebank.bank.integrity import write_bank_id  # noqa: E402
from facebank.bank.layout import FragmentWriter, empty_manifest, fragment_dir, write_top  # noqa: E402
from facebank.index.build import build_index  # noqa: E402
from facebank.index.build_files import open_files, verify_files  # noqa: E402
from facebank.index.manifest import read_manifest  # noqa: E402
from facebank.pick import session as session_mod  # noqa: E402
from facebank.pick.session import FaceBank  # noqa: E402

D = 512
BLOCK = 65536


def synthetic_bank(path: Path, n: int, seed: int = 0, spaces: tuple[str, ...] = ("s",)) -> None:
    """n annotated faces with random unit vectors in each space (default: one, "s"), in one fragment."""
    rng = np.random.default_rng(seed)
    m = empty_manifest(f"{path.name}.d")
    m["version"] = 1
    fw = FragmentWriter(fragment_dir(path, m), 1)
    faces = fw.part("faces", 0, n, list(schema.FACE_COLUMNS))
    embs = {s: fw.part(f"emb/{s}", 0, n, ["vectors", "present"], dim=D) for s in spaces}
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        rows = np.arange(a, b)
        faces["id"][a:b] = np.array([f"{i:016x}" for i in rows], dtype="S16")
        faces["content_sha256"][a:b] = np.array([f"{i:064x}" for i in rows], dtype="S64")
        faces["age"][a:b] = rng.uniform(1, 90, b - a).astype(np.float32)
        faces["gender"][a:b] = rng.integers(0, 2, b - a).astype(np.int8)
        faces["status"][a:b] = schema.STATUS_ANNOTATED
        for emb in embs.values():
            v = rng.standard_normal((b - a, D), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            emb["vectors"][a:b] = v
            emb["present"][a:b] = True
    fw.seal(faces)
    for emb in embs.values():
        fw.seal(emb)
    m["fragments"].append(fw.close())
    m["rows"]["faces"] = n
    for s in spaces:
        m["spaces"][s] = {"model": "synthetic", "sha256": "00" * 32, "dim": D}
    write_bank_id(path.parent / m["dir"], m["uuid"])  # the folder proves it holds this bank's fragments
    write_top(path, m, time.time())


def sha256_twin(build: Path) -> Path:
    """The same files (hard links) under a version-1 manifest: a session checks their sha256s."""
    twin = build.parent / f"{build.name}-v1"
    twin.mkdir()
    for p in build.iterdir():
        if p.name != "manifest.json":
            os.link(p, twin / p.name)
    m = json.loads((build / "manifest.json").read_text())
    m["format_version"] = 1
    for where in [m, *m["spaces"].values()]:
        where.pop("xxh3_128")
    (twin / "manifest.json").write_text(json.dumps(m))
    return twin


@contextlib.contextmanager
def no_verification():
    real = session_mod.verify_files
    session_mod.verify_files = lambda *a, **k: None
    try:
        yield
    finally:
        session_mod.verify_files = real


def bench_open(root: Path, n: int, rounds: int) -> dict:
    bank = root / f"bank{n}.h5"
    t = time.perf_counter()
    synthetic_bank(bank, n)
    build = build_index(bank, out=root / f"builds{n}", thresholds={"s": 0.0}, build_id="b")
    made = time.perf_counter() - t
    twin = sha256_twin(build)
    times: dict[str, list[float]] = {"xxh3": [], "sha256": [], "none": [], "xxh3_only": [], "sha256_only": []}
    m2, m1 = (read_manifest(b) for b in (build, twin))
    for r in range(rounds + 1):  # round 0 warms the page cache and imports
        for name, b in (("xxh3", build), ("sha256", twin), ("none", build)):
            with no_verification() if name == "none" else contextlib.nullcontext():
                t = time.perf_counter()
                FaceBank(b, bank=bank).close()
                dt = time.perf_counter() - t
            if r:
                times[name].append(dt)
        for name, b, m in (("xxh3_only", build, m2), ("sha256_only", twin, m1)):
            t = time.perf_counter()
            verify_files(b, m, open_files(m))
            if r:
                times[name].append(time.perf_counter() - t)
    size = sum((build / f).stat().st_size for f in open_files(m2))
    out = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    print(f"open n={n:>8,} ({size / 2**30:.2f} GiB checked at open; bank+build made in {made:.0f} s), "
          f"median of {rounds} ms: xxh3 {out['xxh3']:.0f}  sha256 {out['sha256']:.0f}  none {out['none']:.0f}  "
          f"| checksums alone: xxh3 {out['xxh3_only']:.0f} ({size / out['xxh3_only'] / 1e6:.1f} GB/s)  "
          f"sha256 {out['sha256_only']:.0f} ({size / out['sha256_only'] / 1e6:.1f} GB/s)", flush=True)
    shutil.rmtree(root / f"builds{n}")
    os.unlink(bank)
    shutil.rmtree(f"{bank}.d")
    return out


def bench_pick(root: Path, n: int, rounds: int, per_round: int) -> dict:
    bank = root / f"pbank{n}.h5"
    synthetic_bank(bank, n, seed=1)
    build = build_index(bank, out=root / f"pbuilds{n}", thresholds={"s": 0.0}, build_id="b")
    sessions = {name: FaceBank(build, bank=bank) for name in ("recheck", "none")}
    off = sessions["none"]
    off._guard = lambda index_row, bank_row, *a: off._guard_of.attributes(bank_row)  # the target's fields only
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((per_round, D), dtype=np.float32)
    times: dict[str, list[int]] = {k: [] for k in sessions}
    for r in range(rounds + 1):  # round 0: warm-up (page cache, fragment chunk offsets)
        for name, s in sessions.items():
            g = np.random.default_rng(r)
            for q in queries:
                t = time.perf_counter_ns()
                s.pick_target(q, rng=g)
                dt = time.perf_counter_ns() - t
                if r:
                    times[name].append(dt)
    for s in sessions.values():
        s.close()
    out = {}
    for name, ts in times.items():
        a = np.asarray(ts) / 1e3
        out[name] = {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}
    print(f"pick n={n:>8,} ({len(times['none'])} picks each, us): "
          + "  ".join(f"{k} p50 {v['p50']:.0f} p99 {v['p99']:.0f}" for k, v in out.items())
          + f"  | ratio recheck/none p50 {out['recheck']['p50'] / out['none']['p50']:.3f} "
            f"p99 {out['recheck']['p99'] / out['none']['p99']:.3f}", flush=True)
    shutil.rmtree(root / f"pbuilds{n}")
    os.unlink(bank)
    shutil.rmtree(f"{bank}.d")
    return out


def _tag(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--open-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--pick-sizes", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--opens", type=int, default=5, help="timed open rounds per size")
    ap.add_argument("--pick-rounds", type=int, default=10)
    ap.add_argument("--picks", type=int, default=300, help="picks per variant per round")
    ap.add_argument("--dir", default=None, help="where the temporary banks and builds go (default: $TMPDIR)")
    args = ap.parse_args()
    need = max(args.open_sizes + args.pick_sizes + [0]) * D * 4 * 3.2  # bank + vectors.npy + flat index
    root = Path(tempfile.mkdtemp(prefix="bench_integrity-", dir=args.dir))
    free = shutil.disk_usage(root).free
    if free < need:
        shutil.rmtree(root)
        sys.exit(f"error: need about {need / 2**30:.1f} GiB free in {root.parent}, have {free / 2**30:.1f}")
    res = {}
    try:
        for n in args.pick_sizes:
            p = bench_pick(root, n, args.pick_rounds, args.picks)
            for q in ("p50", "p99"):
                res[f"pick_{q}_us_{_tag(n)}_recheck"] = p["recheck"][q]
                res[f"pick_{q}_us_{_tag(n)}_none"] = p["none"][q]
                res[f"pick_{q}_ratio_{_tag(n)}"] = p["recheck"][q] / p["none"][q]
        for n in args.open_sizes:
            o = bench_open(root, n, args.opens)
            for k in ("xxh3", "sha256", "none"):
                res[f"open_ms_{_tag(n)}_{k}"] = o[k]
            res[f"open_ratio_{_tag(n)}_sha256_over_xxh3"] = o["sha256"] / o["xxh3"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("RESULT " + " ".join(f"{k}={v:.3f}" if "ratio" in k else f"{k}={v:.0f}" for k, v in res.items()))


if __name__ == "__main__":
    main()
