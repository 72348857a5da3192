"""Random picks through the compiled rejection loop (`_screen.c`): the same draws, the same rows.

The numpy reference loop (facebank.index.draws.draw_loop) verifies random draws in blocks of
numpy calls; the compiled loop does the same work without a numpy call per block: it reads the generator's raw words in the same
blocks, screens each draw with a float32 dot product and stops at the first draw below the error
band. Draws inside the band, and queries whose draws run out, come back here and are decided
exactly by the caller, as the numpy loop decides them. So a seeded pick returns the same row, the
same tries and leaves the generator in the same state whichever loop ran; tests check this.

The extension is built when facebank is installed (setup.py); without a C compiler the install
goes on without it and `Picker` runs the numpy loop (`AVAILABLE` tells which).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np

try:
    from facebank.index import _screen as _c
except ImportError:  # built without a C compiler: the numpy loop runs instead
    _c = None

AVAILABLE = _c is not None
_DONE, _BAND, _LIMIT = 0, 1, 2


@contextlib.contextmanager
def numpy_loop() -> Iterator[None]:
    """Within this block pickers run their numpy loop (benchmarks and tests compare the two)."""
    global AVAILABLE
    old, AVAILABLE = AVAILABLE, False
    try:
        yield
    finally:
        AVAILABLE = old


def usable(data: np.ndarray) -> bool:
    """Whether the compiled loop can read these rows as they are (float32 or float16, C order)."""
    return type(data) in (np.ndarray, np.memmap) and data.dtype in (np.float32, np.float16) \
        and data.flags.c_contiguous


def usable_members(members: np.ndarray | None) -> bool:
    """Whether the compiled loop can read a group's member rows as they are."""
    return members is None or (members.dtype == np.int64 and members.flags.c_contiguous)


def screen_one(gen: np.random.Generator, n: int, parts: tuple, members: np.ndarray | None, m: int, faces: int,
               plan, excluded: np.ndarray, decide: Callable[[int], bool]) -> tuple[int, int]:
    """`screen_picks` for one query, with less per-call work: (row, tries), or (-1, tries) once
    the draw limit is reached (the caller then scans). The twin of facebank.index.draws.draw_loop."""
    limit, bits, words, cap = plan.limit, plan.bits, plan.words_i64, plan.cap
    work = np.empty(_ST + 2 + cap, np.int64)
    bg = gen.bit_generator
    resume = False
    while True:
        with bg.lock:
            code = _c.screen(bg.capsule, n, parts, members, m, 1, faces, bits, limit, words, excluded, work, resume)
        if code == _DONE:
            return work.item(_ST), work.item(_ST + 1)
        if code == _LIMIT:
            return -1, work.item(1)
        i = work.item(3) - 1
        j = work.item(_ST + 2 + i)
        row = j if members is None else int(members[j])
        if decide(row):
            return row, work.item(1) + i + 1
        resume = True


def screen_picks(gen: np.random.Generator, n: int, parts: tuple, members: np.ndarray | None, m: int, b_all: int,
                 faces: int, plan, excluded: np.ndarray, decide: Callable[[int, int], bool],
                 on_limit: Callable[[int, int], int]):
    """One random pick for each of `b_all` queries, in query order.

    Args:
        n: bank rows. parts: one (rows (n, d) float32 or float16 (`usable`), d, float32 queries
            (b_all * faces, d) unit rows, threshold - margin, threshold + margin) per space; query
            b is rows b * faces .. b * faces + faces - 1 of every space's queries.
        members: the group's rows (int64, increasing) or None for all rows; m: their number.
        plan: the draw plan of a group of m rows (facebank.index.draws.DrawPlan).
        excluded: int64 increasing rows never returned.
        decide(b, row): exact eligibility of a draw of query b within the error band of a space.
        on_limit(b, tries): the row query b gets after `tries` failed draws (the exact scan).
    Returns:
        rows int64 (B,), tries int64 (B,) (draws verified; scans not counted), scanned bool (B,).
    """
    limit, bits, words, cap = plan.limit, plan.bits, plan.words_i64, plan.cap
    if b_all == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.zeros(0, bool)
    work = np.empty(_ST + 2 * b_all + cap, np.int64)  # state, rows, tries, the current block
    st, rows, tries = work[:_ST], work[_ST:_ST + b_all], work[_ST + b_all:_ST + 2 * b_all]
    scanned = np.zeros(b_all, bool)
    bg = gen.bit_generator
    capsule, lock = bg.capsule, bg.lock
    resume = False
    while True:
        with lock:  # numpy's own methods hold it while they draw
            code = _c.screen(capsule, n, parts, members, m, b_all, faces, bits, limit, words, excluded, work, resume)
        resume = True
        if code == _DONE:
            return rows, tries, scanned
        b = int(st[0])
        if code == _BAND:
            i = int(st[3]) - 1
            j = int(work[_ST + 2 * b_all + i])
            row = j if members is None else int(members[j])
            if not decide(b, row):
                continue  # resume after this draw
            rows[b], tries[b] = row, st[1] + i + 1
        else:
            rows[b], tries[b], scanned[b] = on_limit(b, int(st[1])), st[1], True
        st[:] = 0
        st[0] = b + 1


_ST = 6  # state words of the compiled loop (see _screen.c)
