"""The bank's manifest as a typed value (BankLayout): what the top file records, read-only, checked."""

from __future__ import annotations

import copy
import dataclasses
import json

import h5py
import pytest

from facebank.bank import open_bank
from facebank.bank.layout import BankLayout, read_layout
from facebank.errors import BankError


def test_layout_is_what_the_top_file_records(small_bank):
    with h5py.File(small_bank, "r") as f:
        raw = json.loads(f.attrs["manifest"])
        layout = read_layout(f, small_bank)
    with open_bank(small_bank) as b:
        assert b.layout == layout
        n = len(b)
    assert (layout.dir, layout.uuid, layout.version) == (raw["dir"], raw["uuid"], raw["version"])
    assert dict(layout.rows) == raw["rows"] and layout.rows["faces"] == n
    assert {s: dict(i) for s, i in layout.spaces.items()} == raw["spaces"]
    assert [fr.name for fr in layout.fragments] == [fr["name"] for fr in raw["fragments"]]
    parts = [(p.table, p.start, p.stop, list(p.columns)) for fr in layout.fragments for p in fr.parts]
    assert parts == [(p["table"], p["start"], p["stop"], p["columns"]) for fr in raw["fragments"] for p in fr["parts"]]
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.version = 0
    with pytest.raises(TypeError):
        layout.rows["faces"] = 0


@pytest.mark.parametrize("path, value", [(["version"], "3"), (["rows", "faces"], -1), (["fragments"], {}),
                                         (["uuid"], "not-a-uuid")])
def test_a_damaged_layout_is_refused(small_bank, path, value):
    with h5py.File(small_bank, "r") as f:
        raw = json.loads(f.attrs["manifest"])
    bad = copy.deepcopy(raw)
    where = bad
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    with pytest.raises(BankError, match="manifest"):
        BankLayout.from_dict(bad, small_bank)
