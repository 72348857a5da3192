"""How many faces/s one driver commits from its workers' batch files, as the bank grows: images
referenced (`fragment-refs`, the default) against images copied into each commit (`copy_images`,
the layout before, which a user needing older readers would pick), side by side in one run.

Workers are simulated: batch files of `--run` faces (8, the Ray engine's default batch) with
~1.3 MB of random image bytes each (the size of a 1024 px PNG face) are written into the work
folder with the engine's own `PendingBatch.write`, untimed. Timed: the driver's `adopt` of each
file (its XXH3 check) and the commit of `--faces` faces. Each step adds `--faces` faces to the
same two banks, alternating the layouts, so both see the same machine load. After the last step:
the median time to read one random face's image (what a swapper does per target) and to open
the bank, per layout.

    PYTHONPATH=. python tools/bench_driver_commit.py [--faces 1024] [--steps 3] [--run 8] [--dir /tmp]

Last line: RESULT commit_refs_fps=<a> commit_copy_fps=<b> refs_vs_copy=<a/b> gpus_at_40fps=<a/40>
read_image_refs_ms=<c> read_image_copy_ms=<d> open_refs_ms=<e> open_copy_ms=<f>
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bank_write import _records  # noqa: E402  (the same synthetic 1.3 MB faces)


def _write_worker_files(work: Path, records, run: int) -> list[str]:
    from facebank.bank.writer import PendingBatch

    work.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(0, len(records), run):
        batch = PendingBatch()
        for r in records[k:k + run]:
            batch.add_face(r)
        names.append(f"batch-{uuid.uuid4().hex}.h5")
        batch.write(work / names[-1])
    return names


def _step(bank: Path, records, run: int, copy_images: bool) -> float:
    """faces/s of the driver: adopt every worker file, then commit them (one fragment)."""
    from facebank._io.checksum import xxh3_file
    from facebank.bank import BankWriter

    with BankWriter(bank, commit_every=10**9, copy_images=copy_images) as w:
        names = _write_worker_files(w.work_dir(), records, run)
        sums = [xxh3_file(w.work_dir() / n) for n in names]  # what each worker reports
        start = time.perf_counter()
        for name, xxh3 in zip(names, sums):
            w.adopt(name, xxh3)
        w.commit()
        return len(records) / (time.perf_counter() - start)


def _reads(bank: Path, rng: np.random.Generator, n: int = 200) -> tuple[float, float]:
    """(median ms to read one random face's image bytes, median ms to open the bank)."""
    from facebank.bank import open_bank

    opens, reads = [], []
    for _ in range(5):
        t = time.perf_counter()
        b = open_bank(bank)
        opens.append(time.perf_counter() - t)
        b.close()
    with open_bank(bank) as b:
        for row in rng.integers(0, len(b), n):
            t = time.perf_counter()
            b.face(int(row), spaces=[]).image_bytes()
            reads.append(time.perf_counter() - t)
    return statistics.median(reads) * 1e3, statistics.median(opens) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=1024, help="faces per step (one commit)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--run", type=int, default=8, help="faces per worker batch file")
    ap.add_argument("--dir", default=None, help="where the banks go (default: the system temp folder)")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-driver-", dir=args.dir))
    fps: dict[str, list[float]] = {"refs": [], "copy": []}
    try:
        records = _records(args.faces * args.steps, int(1.3e6))
        for step in range(args.steps):
            batch = [next(records) for _ in range(args.faces)]
            for layout in ("refs", "copy") if step % 2 == 0 else ("copy", "refs"):
                fps[layout].append(_step(root / f"{layout}.h5", batch, args.run, layout == "copy"))
            print(f"bank {step * args.faces:>6} -> {(step + 1) * args.faces:>6} faces: driver commits "
                  f"{fps['refs'][-1]:7.1f} faces/s referencing images, {fps['copy'][-1]:6.1f} copying them", flush=True)
        rng = np.random.default_rng(0)
        read_refs, open_refs = _reads(root / "refs.h5", rng)
        read_copy, open_copy = _reads(root / "copy.h5", rng)
        print(f"one random image: {read_refs:.2f} ms (refs), {read_copy:.2f} ms (copy); "
              f"open: {open_refs:.0f} ms (refs), {open_copy:.0f} ms (copy)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    a, b = statistics.median(fps["refs"]), statistics.median(fps["copy"])
    print(f"RESULT commit_refs_fps={a:.1f} commit_copy_fps={b:.1f} refs_vs_copy={a / b:.2f} gpus_at_40fps={a / 40:.1f} "
          f"read_image_refs_ms={read_refs:.2f} read_image_copy_ms={read_copy:.2f} "
          f"open_refs_ms={open_refs:.0f} open_copy_ms={open_copy:.0f}")


if __name__ == "__main__":
    main()
