"""What re-reading fragment digests costs a writer's open (facebank/bank/digests.py).

Copies a bank (default /work/exp/bank.h5, 593 faces) to a temporary folder and times, side by side in
each round, `BankWriter` open + close: without the digest check (the writer before), with the record
of what was verified (the steady state: nothing re-read), and with no record (every file re-read: the
first writer after this change, or after `cp`); and `verify_bank` (every digest, what
`facebank bank verify` does). Medians of --rounds rounds; ratios against the writer without the check.

    .venv/bin/python tools/bench_bank_digests.py [--bank PATH] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import facebank.bank.writer as writer_module
from facebank.bank import BankWriter
from facebank.bank.digests import RACY_NS, record_path, verify_bank


def _open_close(bank: Path) -> float:
    t = time.perf_counter()
    with BankWriter(bank):
        pass
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", default="/work/exp/bank.h5")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    src = Path(args.bank)
    with tempfile.TemporaryDirectory() as tmp:
        bank = Path(tmp) / src.name
        shutil.copy(src, bank)
        shutil.copytree(f"{src}.d", f"{bank}.d")
        time.sleep(RACY_NS / 1e9 + 0.5)  # copies younger than the margin are re-read whatever the record says
        size = sum(p.stat().st_size for p in Path(f"{bank}.d").iterdir())
        real = writer_module.verify_digests
        times: dict[str, list[float]] = {"no_check": [], "record": [], "no_record": [], "verify_all": []}
        for _ in range(args.rounds):
            writer_module.verify_digests = lambda *a, **k: None
            times["no_check"].append(_open_close(bank))
            writer_module.verify_digests = real
            record_path(bank).unlink(missing_ok=True)
            times["no_record"].append(_open_close(bank))
            times["record"].append(_open_close(bank))
            t = time.perf_counter()
            verify_bank(bank)
            times["verify_all"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"bank {src} ({size / 1e6:.1f} MB of fragment files), {args.rounds} rounds, median ms:")
    for k, v in med.items():
        print(f"  {k:12s} {v:8.1f} ms  ({v / med['no_check']:.2f}x the writer without the check)")
    print(f"RESULT writer_open_ms={med['no_check']:.1f} writer_open_record_ms={med['record']:.1f} "
          f"writer_open_no_record_ms={med['no_record']:.1f} verify_all_ms={med['verify_all']:.1f} "
          f"record_ratio={med['record'] / med['no_check']:.2f} no_record_ratio={med['no_record'] / med['no_check']:.2f} "
          f"bank_mb={size / 1e6:.1f}")


if __name__ == "__main__":
    main()
