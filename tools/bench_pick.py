"""Benchmark: facebank's Picker against what a user would write instead, side by side in one run.

The picker runs its compiled rejection loop (facebank.index._screen); the same picks through its
numpy loop, and through the fp16 option (float16 rows, float32 rows kept for exact re-checks),
are timed beside it, and the same picks with the privacy margin (the shipped default, taking turns
with margin 1 in the same rounds, so the cost of the cut is read off side by side). Baselines: (a) FAISS IndexFlatIP.range_search for the eligible set (query
-q, radius -threshold: FAISS returns rows with -sim > -thr, i.e. sim < thr), then a random
choice; (b) a numpy scan (V @ q <= thr, flatnonzero, choice). Banks of random unit vectors
(512-d, float32); thresholds are each query's 10%, 50% and 90% similarity quantiles, so that
share of the bank is eligible.

    python tools/bench_pick.py [--quick]

Single picks are timed in steady state (after a second of untimed picks) with the three levels
taking turns; batch picks/s is the median of three batches. Memory is measured in fresh
subprocesses (peak RSS, VmHWM) that hold only numpy and the picker. The last line is
`RESULT pick_p99_us_10k=... pick_p99_us_1m=... margin_p99_us_10k=... margin_p99_us_1m=...
margin_p50_ratio=... speedup_vs_faiss_range_1m=...
batch_picks_per_s_10k=... rss_mb_1m=...` (MiB).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from facebank.index import screen  # noqa: E402
from facebank.index.margin import DEFAULT_MARGIN as MARGIN  # noqa: E402
from facebank.index.picker import Picker  # noqa: E402

D = 512
LEVELS = (0.1, 0.5, 0.9)


def unit_bank(n: int, seed: int = 0, out: np.ndarray | None = None, chunk: int = 8192) -> np.ndarray:
    """float32 (n, 512) random unit rows, built in place chunk by chunk (no full-size temporary)."""
    rng = np.random.default_rng(seed)
    v = np.empty((n, D), np.float32) if out is None else out
    for i in range(0, n, chunk):
        c = rng.standard_normal((min(chunk, n - i), D), dtype=np.float32)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        v[i:i + len(c)] = c
    return v


def vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(ts_ns, p) -> float:
    return float(np.percentile(np.asarray(ts_ns) / 1e3, p))


class FileRows:
    """Read-only float32 rows of a raw file, read with os.pread: only the rows asked for come into
    memory (an np.memmap would fault in read-ahead pages around every row it touches)."""

    def __init__(self, path: str, n: int):
        self.shape, self.dtype = (n, D), np.dtype(np.float32)
        self._fd = os.open(path, os.O_RDONLY)

    def __getitem__(self, rows):
        if isinstance(rows, (int, np.integer)):
            return np.frombuffer(os.pread(self._fd, D * 4, int(rows) * D * 4), np.float32)
        return np.stack([self[int(r)] for r in np.asarray(rows).ravel()]) if len(rows) else \
            np.empty((0, D), np.float32)


def rss_child(n: int, dtype: str) -> None:
    """Subprocess: build a bank of n rows, a Picker, pick 1000 times, print the peak RSS (MiB)."""
    if dtype == "float32":
        vectors = {"arcface": unit_bank(n)}
        picker = Picker(vectors, np.zeros(n, np.int16))
    else:
        # float16 in memory; the float32 rows stay on disk for the rare exact re-checks.
        half = np.empty((n, D), np.float16)
        with tempfile.NamedTemporaryFile(suffix=".f32", delete=False) as f:
            rng = np.random.default_rng(0)
            for i in range(0, n, 8192):
                c = rng.standard_normal((min(8192, n - i), D), dtype=np.float32)
                c /= np.linalg.norm(c, axis=1, keepdims=True)
                half[i:i + len(c)] = c
                f.write(c.tobytes())
            path = f.name
        try:
            exact = FileRows(path, n)
            picker = Picker({"arcface": half}, np.zeros(n, np.int16), dtype="float16", exact={"arcface": exact})
            rss_picks(picker)
        finally:
            os.unlink(path)
        print(f"{vm_hwm_mib():.1f}")
        return
    rss_picks(picker)
    print(f"{vm_hwm_mib():.1f}")


def rss_picks(picker: Picker) -> None:
    rng = np.random.default_rng(1)
    for _ in range(1000):
        picker.pick({"arcface": rng.standard_normal(D).astype(np.float32)}, thresholds={"arcface": -0.05}, rng=rng)


def measure_rss(n: int, dtype: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--rss-child", dtype, "--n", str(n)], check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_size(n: int, *, picks: int, base_reps: int, batch: int, faiss_mod) -> dict:
    """Latencies (ns lists) per level for the picker and both baselines, plus batch picks/s."""
    t0 = time.perf_counter()
    v = unit_bank(n)
    rng = np.random.default_rng(42)
    queries = unit_bank(20, seed=7)
    sims = queries @ v.T  # (20, n): each query's own quantiles set the eligible share exactly
    thr = {lv: np.quantile(sims, lv, axis=1) for lv in LEVELS}
    del sims
    picker = Picker({"arcface": v}, np.zeros(n, np.int16))
    # the fp16 option: half-size rows for the screen, the float32 rows for the rare exact re-checks
    picker16 = Picker({"arcface": v}, np.zeros(n, np.int16), dtype="float16")
    index = faiss_mod.IndexFlatIP(D)
    index.add(v)
    print(f"# n={n}: bank, picker and FAISS index built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    out = {lv: {"picker": [], "margin": [], "numpy_loop": [], "fp16": [], "faiss_range": [], "numpy_scan": []}
           for lv in LEVELS}

    def time_picks(pk: Picker, lv: float, count: int, margin: float = 1.0) -> list[int]:
        ts = []
        for i in range(count):
            j = i % len(queries)
            q, t = {"arcface": queries[j]}, {"arcface": float(thr[lv][j])}
            a = time.perf_counter_ns()
            pk.pick(q, thresholds=t, rng=rng, margin=margin)
            ts.append(time.perf_counter_ns() - a)
        return ts

    gc.disable()  # as timeit does: a collection in a timed call is not the call's cost
    # Warm-up, untimed, for a second of steady work: on this VM picks run ~1.6x slower for the
    # first ~0.6 s of continuous work (after a pause too), then settle; the figures are steady state.
    t_warm = time.perf_counter()
    while time.perf_counter() - t_warm < 1.0:
        for lv in LEVELS:
            time_picks(picker, lv, 200)
    # Single picks: the levels take turns in rounds of 500 picks, so that a burst of noise on the
    # machine lands on all of them alike rather than on whichever ran at the time. Then the same
    # for the numpy loop (what an install without a C compiler runs) and for the fp16 option.
    # The privacy margin (MARGIN, the shipped default) takes turns with margin 1 in the same rounds.
    for _ in range(max(1, picks // 500)):
        for lv in LEVELS:
            out[lv]["picker"] += time_picks(picker, lv, min(500, picks))
            out[lv]["margin"] += time_picks(picker, lv, min(500, picks), MARGIN)
    for key, pk, count in (("numpy_loop", picker, picks // 4), ("fp16", picker16, picks // 4)):
        with screen.numpy_loop() if key == "numpy_loop" else contextlib.nullcontext():
            for _ in range(max(1, count // 500)):
                for lv in LEVELS:
                    out[lv][key] += time_picks(pk, lv, min(500, count))
    for lv in LEVELS:
        res = out[lv]
        for i in range(base_reps):
            j = i % len(queries)
            q, t = queries[j], float(thr[lv][j])
            a = time.perf_counter_ns()
            _, _, ids = index.range_search(-q[None, :], -t)  # sim < t; a user would accept that
            int(ids[rng.integers(len(ids))])
            res["faiss_range"].append(time.perf_counter_ns() - a)
            a = time.perf_counter_ns()
            ids = np.flatnonzero(v @ q <= t)
            int(ids[rng.integers(len(ids))])
            res["numpy_scan"].append(time.perf_counter_ns() - a)
    if batch:
        # One threshold for the whole batch: the pooled quantile (every query sees the same
        # similarity distribution against a random bank, so the share eligible matches).
        # Picks/s is the median of three timed batches per level and output form.
        bq = unit_bank(batch, seed=11)
        for lv in LEVELS:
            bt = {"arcface": float(np.mean(thr[lv]))}
            for as_arrays in (True, False):
                picker.pick_batch({"arcface": bq[:1000]}, thresholds=bt, rng=rng, as_arrays=as_arrays)  # warm
                rates = []
                for _ in range(3):
                    a = time.perf_counter()
                    picker.pick_batch({"arcface": bq}, thresholds=bt, rng=rng, as_arrays=as_arrays)
                    rates.append(batch / (time.perf_counter() - a))
                out[lv]["batch_arrays" if as_arrays else "batch_list"] = float(np.median(rates))
    gc.enable()
    del index, picker16
    return out


def report(n: int, out: dict) -> None:
    print(f"\n## n = {n:,} x {D} float32, group = whole bank")
    print(f"{'eligible':>8} | {'picker p50/p99 us':>18} | {f'margin {MARGIN:g} p50/p99':>19} | {'numpy loop p50/p99':>18} | {'fp16 p50/p99':>16} | "
          f"{'FAISS range p50/p99 us':>23} | "
          f"{'numpy scan p50/p99 us':>22} | {'x FAISS (p50)':>13} | {'x numpy (p50)':>13} | batch picks/s")
    for lv, r in out.items():
        p50, p99 = pct(r["picker"], 50), pct(r["picker"], 99)
        m50, m99 = pct(r["margin"], 50), pct(r["margin"], 99)
        n50, n99 = pct(r["numpy_loop"], 50), pct(r["numpy_loop"], 99)
        h50, h99 = pct(r["fp16"], 50), pct(r["fp16"], 99)
        f50, f99 = pct(r["faiss_range"], 50), pct(r["faiss_range"], 99)
        s50, s99 = pct(r["numpy_scan"], 50), pct(r["numpy_scan"], 99)
        batch = (f"{r['batch_arrays']:,.0f} arrays / {r['batch_list']:,.0f} list" if "batch_arrays" in r else "-")
        print(f"{lv:>8.0%} | {p50:>8.1f} / {p99:>7.1f} | {m50:>9.1f} / {m99:>7.1f} | {n50:>8.1f} / {n99:>7.1f} | {h50:>7.1f} / {h99:>6.1f} | {f50:>11.0f} / {f99:>9.0f} | {s50:>10.0f} / {s99:>9.0f} | "
              f"{f50 / p50:>13.0f} | {s50 / p50:>13.0f} | {batch}")
    print(f"(picker: {len(out[LEVELS[0]]['picker'])} picks per level, compiled loop "
          f"{'built' if screen.AVAILABLE else 'NOT BUILT'}; numpy loop and fp16: {len(out[LEVELS[0]]['numpy_loop'])}; "
          f"baselines: "
          f"{len(out[LEVELS[0]]['faiss_range'])} queries per level)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small banks and few repetitions (smoke run)")
    ap.add_argument("--rss-child", choices=["float32", "float16"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1_000_000, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.n, args.rss_child)
        return
    import faiss  # the baseline only; the picker never needs it

    small, large = (10_000, 100_000) if args.quick else (10_000, 1_000_000)
    print(f"# faiss {faiss.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"faiss threads {faiss.omp_get_max_threads()}")
    r_small = bench_size(small, picks=2000 if args.quick else 20000, base_reps=50 if args.quick else 300,
                         batch=10_000 if args.quick else 50_000, faiss_mod=faiss)
    report(small, r_small)
    r_large = bench_size(large, picks=1000 if args.quick else 10000, base_reps=5 if args.quick else 15,
                         batch=0, faiss_mod=faiss)
    report(large, r_large)
    rss32, rss16 = measure_rss(large, "float32"), measure_rss(large, "float16")
    print(f"\n## peak RSS, {large:,} x {D}: float32 {rss32:.0f} MiB (vectors alone "
          f"{large * D * 4 / 2**20:.0f} MiB), float16 {rss16:.0f} MiB ({rss16 / rss32:.2f} x)")
    p99_small = max(pct(r_small[lv]["picker"], 99) for lv in LEVELS)  # worst level, >= 10% eligible
    p99_large = max(pct(r_large[lv]["picker"], 99) for lv in LEVELS)
    speedup = min(pct(r_large[lv]["faiss_range"], 50) / pct(r_large[lv]["picker"], 50) for lv in LEVELS)
    batch = min(r_small[lv]["batch_arrays"] for lv in LEVELS)
    m99_small = max(pct(r_small[lv]["margin"], 99) for lv in LEVELS)
    m99_large = max(pct(r_large[lv]["margin"], 99) for lv in LEVELS)
    ratio = float(np.median([pct(r[lv]["margin"], 50) / pct(r[lv]["picker"], 50) for r in (r_small, r_large)
                             for lv in LEVELS]))
    print(f"RESULT pick_p99_us_10k={p99_small:.1f} pick_p99_us_1m={p99_large:.1f} margin_p99_us_10k={m99_small:.1f} "
          f"margin_p99_us_1m={m99_large:.1f} margin_p50_ratio={ratio:.2f} "
          f"speedup_vs_faiss_range_1m={speedup:.0f} batch_picks_per_s_10k={batch:.0f} rss_mb_1m={rss32:.0f}")


if __name__ == "__main__":
    main()
