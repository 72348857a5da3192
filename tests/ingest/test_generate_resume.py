"""A resumed `generate` stores what an uninterrupted run stores, bit for bit and in the same rows.

CPU convolutions round differently at other batch sizes, so generator batches lie on a fixed grid
over the requested seeds (`sources.seed_grid`); a re-run makes a batch holding a missing seed whole
again and keeps only the missing faces. On the tiny test network, cutting batches from the seeds
left instead (the old way) changes the last bits of the faces whose batch size changed.
"""

from __future__ import annotations

import numpy as np
import pytest

from facebank.bank import open_bank
from facebank.bank.schema import FACE_COLUMNS
from facebank.config import VisionConfig
from facebank.ingest import generate_to_bank
from facebank.sources.seed_grid import GridBatch, seed_grid
from facebank.sources.stylegan_source import GenerateConfig


def test_grid_keeps_the_batches_with_a_missing_seed_and_numbers_them_in_todo_order():
    seeds = [5, 6, 7, 8, 9, 10, 11, 5]  # a seed listed twice is two places on the grid, as before
    missing = [False, False, True, False, False, False, True, True]
    assert list(seed_grid(seeds, missing, 3)) == [
        GridBatch(0, (5, 6, 7), (False, False, True)),  # made whole: 5 and 6 only complete it
        GridBatch(1, (11, 5), (True, True)),  # the last batch is short, as in an uninterrupted run
    ]
    assert list(seed_grid(seeds, [False] * 8, 3)) == []
    with pytest.raises(ValueError):
        list(seed_grid(seeds, missing[:-1], 3))


def _bank(path) -> dict:
    """Everything a bank holds per row, in row order, but when each row was written."""
    with open_bank(path) as b:
        out = {name: b.column(name) for name in FACE_COLUMNS if name not in ("image", "crop", "added_at")}
        out["image"] = [b.image_bytes(r) for r in range(len(b))]
        out["crop"] = np.stack([b.crop(r) for r in range(len(b))])
        for s in b.spaces:
            out[f"{s}/vectors"], out[f"{s}/present"] = b.vectors(s), b.present(s)
        out["rejections"] = [(r["source_id"], r["reason"]) for r in b.rejections()]
    return out


class _Interrupt:
    """A progress callback that stops the run like Ctrl-C after `after` faces."""

    def __init__(self, after: int):
        self.after = after

    def __call__(self, event) -> None:
        if event.done >= self.after:
            raise KeyboardInterrupt


# Annotated in the same pass, the tiny network's random faces are rejected: their rejections compare too.
@pytest.mark.parametrize("batch_size, vision", [(3, None), (4, VisionConfig(min_face_px=8))])
def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(tmp_path, stylegan_fixtures, batch_size, vision):
    cfg = GenerateConfig(network=str(stylegan_fixtures / "tiny64.pkl"), seeds="0-11", device="cpu",
                         batch_size=batch_size)
    ref, bank = tmp_path / "ref.h5", tmp_path / "resumed.h5"
    generate_to_bank(str(ref), cfg, vision=vision, workers=1)
    with pytest.raises(KeyboardInterrupt):  # mid-batch: seed 4 ends no grid batch
        generate_to_bank(str(bank), cfg, vision=vision, workers=1, pending_every=2, progress=_Interrupt(5))
    with open_bank(bank) as b:
        assert len(b) == 5  # the writer committed what was finished
    s = generate_to_bank(str(bank), cfg, vision=vision, workers=1)
    assert s.generated == 7 and s.already_in_bank == 5  # faces made only to complete a batch are not stored
    want, got = _bank(ref), _bank(bank)
    assert got.keys() == want.keys()
    assert len(set(got["id"])) == 12
    for key in want:
        assert len(got[key]) == len(want[key]) == 12 or key == "rejections", key
        if isinstance(want[key], np.ndarray) and want[key].dtype.kind != "O":
            assert np.array_equal(got[key], want[key], equal_nan=want[key].dtype.kind == "f"), f"{key} differs"
        else:
            assert list(got[key]) == list(want[key]), f"{key} differs"
