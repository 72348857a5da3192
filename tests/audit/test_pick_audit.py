"""The "Source vs Target" match-rate table on a hand-computed case."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from facebank.audit.pick_audit import match_rate_table, per_query_rows, write_table_csv
from facebank.errors import InputError

TH = {"arcface": 0.3, "dlib": 0.5}
# Four queries picked with arcface; query 3 got no pick (NaN in every scoring space).
SIMS = {
    "arcface": {
        "arcface": np.array([0.1, 0.3, 0.2, np.nan]),  # 0.3 is not > 0.3: no match
        "dlib": np.array([0.6, 0.4, 0.55, np.nan]),  # queries 0 and 2 match
    },
    "dlib": {"arcface": np.array([0.35, 0.1, 0.0, 0.2])},  # query 0 matches
}


def test_match_rate_table_hand_computed():
    rows = match_rate_table(SIMS, TH, mode="random")
    by = {(r["picked_with"], r["scored_with"]): r for r in rows}
    assert list(by) == [("arcface", "arcface"), ("arcface", "dlib"), ("arcface", "any"), ("dlib", "arcface")]
    aa = by["arcface", "arcface"]
    assert (aa["n_queries"], aa["n_no_pick"], aa["n_matched"]) == (4, 1, 0)
    assert aa["match_rate"] == 0.0 and aa["max_sim"] == pytest.approx(0.3)
    assert aa["mean_sim"] == pytest.approx(0.2) and aa["mode"] == "random"
    ad = by["arcface", "dlib"]
    assert ad["n_matched"] == 2 and ad["match_rate"] == pytest.approx(2 / 3) and ad["threshold"] == 0.5
    anyrow = by["arcface", "any"]
    assert anyrow["n_matched"] == 2 and anyrow["match_rate"] == pytest.approx(2 / 3)
    assert anyrow["threshold"] is None and math.isnan(anyrow["mean_sim"])
    assert by["dlib", "arcface"]["match_rate"] == pytest.approx(1 / 4)


def test_all_no_pick_is_nan_not_zero():
    rows = match_rate_table({"a": {"a": [np.nan, np.nan]}}, {"a": 0.3})
    assert math.isnan(rows[0]["match_rate"]) and rows[0]["n_no_pick"] == 2


def test_errors_name_the_problem():
    with pytest.raises(InputError, match="no threshold"):
        match_rate_table({"a": {"b": [0.1]}}, {"a": 0.3})
    with pytest.raises(InputError, match="queries"):
        match_rate_table({"a": {"a": [0.1], "b": [0.1, 0.2]}}, {"a": 0.3, "b": 0.3})


def test_per_query_rows_and_csv(tmp_path):
    rows = per_query_rows(["q0", "q1", "q2", "q3"], SIMS, TH, mode="furthest",
                          target_ids={"arcface": ["t5", "t6", "t7", None]})
    assert len(rows) == 4 * 3
    assert rows[4] == {"mode": "furthest", "query": "q0", "picked_with": "arcface", "target": "t5",
                       "scored_with": "dlib", "sim": pytest.approx(0.6), "threshold": 0.5, "matched": True}
    path = write_table_csv(match_rate_table(SIMS, TH), tmp_path / "t.csv")
    read = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(read) == 4 and read[1]["n_matched"] == "2"
