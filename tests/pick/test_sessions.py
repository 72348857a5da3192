"""Picking sessions whose bank is closed or replaced under them: facebank errors, never h5py's."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from facebank import BankClosed, FaceBank, StaleIndex, build_index, open_bank
from facebank.bank import copy_bank


@pytest.fixture()
def session_bank(small_bank, tmp_path):
    bank = tmp_path / "bank.h5"
    copy_bank(small_bank, bank)
    return bank, build_index(bank, out=tmp_path / "builds")


def _query(bank) -> np.ndarray:
    with open_bank(bank) as b:
        return b.vectors("dlib")[0]


def test_a_closed_session_and_its_targets_raise_bank_closed(session_bank):
    bank, build = session_bank
    fb = FaceBank(build)
    target = fb.pick_target(_query(bank), rng=np.random.default_rng(0))
    face = target.face()
    fb.close()
    for call in (lambda: fb.pick_target(_query(bank)), lambda: fb.pick_targets(np.stack([_query(bank)] * 2)),
                 target.crop, target.image, target.image_bytes, target.face, lambda: target.aligned(128),
                 lambda: fb.bank.crop(0), lambda: fb.bank.face(0), face.image):
        with pytest.raises(BankClosed, match="closed"):
            call()
    fb.close()  # closing twice is harmless


def test_target_of_a_with_block_raises_bank_closed_after_it(session_bank):
    bank, build = session_bank
    with FaceBank(build) as fb:
        target = fb.pick_target(_query(bank), rng=np.random.default_rng(1))
        assert target.crop().shape == (112, 112, 3)
    with pytest.raises(BankClosed):
        target.crop()


def test_a_bank_rewritten_with_the_same_content_is_reloaded(session_bank):
    bank, build = session_bank
    with FaceBank(build) as fb:
        target = fb.pick_target(_query(bank), rng=np.random.default_rng(2))
        crop = target.crop()
        old = fb.bank
        tmp = bank.with_name("rewritten.h5")
        shutil.copy2(bank, tmp)
        os.replace(tmp, bank)  # a new file (inode) with the same content, as compact or a copy leaves
        np.testing.assert_array_equal(target.crop(), crop)  # read through the reopened bank
        assert fb.bank is not old
        with pytest.raises(BankClosed):
            old.crop(0)  # the replaced handle was closed, and says so
        assert fb.pick_target(_query(bank), rng=np.random.default_rng(2)).id == target.id


def test_a_bank_that_changed_under_a_session_is_stale_on_every_call(session_bank, gp_items):
    from facebank.ingest import ingest

    bank, build = session_bank
    with FaceBank(build) as fb:
        target = fb.pick_target(_query(bank), rng=np.random.default_rng(3))
        extra = [i for i in gp_items[:1]]
        assert ingest(str(bank), [_other(extra[0])]).added == 1
        for _ in range(2):  # not only the first call: the new file is never taken in
            with pytest.raises(StaleIndex):
                fb.pick_target(_query(bank))
            with pytest.raises(StaleIndex):
                target.crop()


def _other(item):
    """The same face with other bytes (one more byte after JPEG's end), so it is a new face."""
    from dataclasses import replace

    return replace(item, data=item.data + b"\0", source_id=item.source_id + "-copy")
