"""The rejection loop of random picks: one draw plan per group size, one numpy reference loop, and
the compiled loop (facebank.index.screen, `_screen.c`) as its drop-in twin.

Rejection sampling. Every draw is an independent uniform member of the group; a pick returns the
first draw that is eligible and not excluded. Conditioned on that draw being eligible it is
uniform over the eligible set E, whatever its position. If all draws fail the caller scans and
chooses uniformly from E with fresh randomness. The failure event does not depend on which
eligible row would have been returned, so P(t) = P(success) / |E| + P(failure) / |E| = 1 / |E|
for every t in E.

Draw j of the stream is the j-th raw 64-bit word whose top `bits` bits are < m (the others are
discarded: what is kept is uniform on [0, m)). Blocks only batch the verification: the returned
row is the first eligible draw of the stream whatever the block sizes, and a block never reaches
past `limit` draws, so the stopping rule depends on counts alone. The block sizes are fixed
(_BLOCKS, in draws), so how much of the generator a pick consumes depends only on the query and
the bank, never on earlier picks: seeded and keyed sequences of picks reproduce.

Both loops read the same raw words in the same blocks and hand the same rows to the same exact
checks, so a seeded pick returns the same row, the same tries and leaves the generator in the
same state whichever loop ran (tests check this).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from facebank.index import screen

__all__ = ["DrawPlan", "draw_loop", "draw_plan", "random_draws"]

# Draws verified per rejection block: the first settles ~99% of picks at >= 40% eligible, the
# second (60 draws in all) ~99.8% at 10% eligible; larger blocks after that, up to 512.
_BLOCKS = (10, 50, 200, 512)
_SHIFTS = [np.uint64(64 - b) for b in range(64)]  # random_raw word >> (64 - bits): uniform on [0, 2^bits)
_NO_ROWS = np.empty(0, np.int64)

# first_eligible(rows) -> (position of the first eligible, not excluded row of a block or -1,
# the row's exact similarity when the check computed it, else None)
FirstEligible = Callable[[np.ndarray], tuple[int, float | None]]


@dataclass(frozen=True, eq=False)
class DrawPlan:
    """How the picks from a group of m rows draw: computed once per group size."""

    m: int  # rows in the group
    limit: int  # draws before the exact scan
    bits: int  # bits per draw: the smallest 2^bits >= m
    shift: np.uint64  # raw word >> shift = the top `bits` bits
    full: bool  # m == 2^bits: every word is a draw
    words: tuple[int, ...]  # raw words read per block (the blocks of _BLOCKS, in words)
    words_i64: np.ndarray  # the same, as the compiled loop reads them
    cap: int  # the largest block, in words


def draw_plan(m: int, limit: int) -> DrawPlan:
    bits = max(1, (m - 1).bit_length())
    scale = (1 << bits) / max(m, 1)  # raw words per draw, on average
    words = tuple(math.ceil(b * scale) for b in _BLOCKS)
    return DrawPlan(m, limit, bits, _SHIFTS[bits], m == 1 << bits, words, np.array(words, np.int64), max(words))


def draw_loop(gen: np.random.Generator, plan: DrawPlan, members: np.ndarray | None,
              first_eligible: FirstEligible) -> tuple[int, float | None, int]:
    """The numpy reference loop: (row, its exact similarity or None, draws made), or (-1, None,
    draws) once `plan.limit` draws failed. `members`: the group's rows, or None for 0..m-1."""
    raw = gen.bit_generator.random_raw
    limit, shift, full, words, m = plan.limit, plan.shift, plan.full, plan.words, plan.m
    tries = nb = 0
    while tries < limit:
        want = words[nb] if nb < len(words) else words[-1]
        nb += 1
        draw = raw(min(want, limit - tries)) >> shift
        if not full:
            draw = draw[draw < m]
            if not draw.size:
                continue
        rows = draw if members is None else members.take(draw)
        i, ex = first_eligible(rows)
        if i >= 0:
            return int(rows[i]), ex, tries + i + 1
        tries += draw.size
    return -1, None, tries


def random_draws(gen: np.random.Generator, n: int, plan: DrawPlan, members: np.ndarray | None,
                 screen_parts: tuple | None, faces: int, excluded: set[int] | tuple,
                 admits: Callable[[int], bool], first_eligible: FirstEligible) -> tuple[int, float | None, int]:
    """The draws of one random pick, as `draw_loop` returns them: in the compiled loop when it is
    built and can read the rows (`screen_parts` not None, see Query.screen_parts), else in numpy.

    admits(row): the exact decision on a draw the compiled loop hands back from an error band.
    """
    if screen_parts is not None and screen.AVAILABLE and screen.usable_members(members):
        excl = np.array(sorted(excluded), np.int64) if excluded else _NO_ROWS
        row, tries = screen.screen_one(gen, n, screen_parts, members, plan.m, faces, plan, excl, admits)
        return row, None, tries
    return draw_loop(gen, plan, members, first_eligible)
