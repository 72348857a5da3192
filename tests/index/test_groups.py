"""Age and gender groups: documented boundaries, spellings, codes and the widen_age order."""

from __future__ import annotations

import numpy as np
import pytest

from facebank.errors import InputError
from facebank.index import groups as G


@pytest.mark.parametrize(
    "age, label",
    [(0, "0-12"), (12.99, "0-12"), (13, "13-19"), (19.5, "13-19"), (20, "20-29"), (29.9, "20-29"),
     (30, "30-39"), (45, "40-49"), (59.999, "50-59"), (60, "60+"), (101, "60+")],
)
def test_age_group_boundaries(age, label):
    assert G.age_group(age) == label


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "old", None])
def test_age_group_rejects(bad):
    with pytest.raises(InputError):
        G.age_group(bad)


@pytest.mark.parametrize("spelling, name", [("F", "female"), ("woman", "female"), ("Female ", "female"),
                                            ("m", "male"), ("MAN", "male"), ("male", "male")])
def test_gender_spellings(spelling, name):
    assert G.gender_name(spelling) == name


@pytest.mark.parametrize("bad", ["x", "", None, 1])
def test_gender_rejects(bad):
    with pytest.raises(InputError):
        G.group_code("20-29", bad)


def test_codes_are_dense_and_decode():
    codes = {G.group_code(a, g) for a in G.AGE_GROUPS for g in G.GENDERS}
    assert codes == set(range(G.N_GROUPS))
    for a in G.AGE_GROUPS:
        for g in G.GENDERS:
            assert G.decode_group(G.group_code(a, g)) == (a, g)
    assert G.group_label(G.group_code("30-39", "f")) == "30-39/female"
    with pytest.raises(InputError):
        G.group_code("30-40", "f")
    with pytest.raises(InputError):
        G.decode_group(G.N_GROUPS)


def test_group_codes_matches_scalar():
    rng = np.random.default_rng(0)
    ages = rng.uniform(0, 90, 500)
    genders = rng.choice(["f", "M", "woman", "male"], 500)
    got = G.group_codes(ages, genders)
    assert got.dtype == np.int16
    assert got.tolist() == [G.group_code(G.age_group(a), g) for a, g in zip(ages, genders)]


def test_group_codes_rejects():
    with pytest.raises(InputError):
        G.group_codes([10, -3], ["f", "m"])
    with pytest.raises(InputError):
        G.group_codes([10, 20], ["f", "x"])
    with pytest.raises(InputError):
        G.group_codes([10], ["f", "m"])


def test_widen_age_nearest_first():
    assert G.widen_age("30-39") == ("20-29", "40-49", "13-19", "50-59", "0-12", "60+")
    assert G.widen_age("0-12") == ("13-19", "20-29", "30-39", "40-49", "50-59", "60+")
    assert G.widen_age("60+")[0] == "50-59"
    code = G.group_code("30-39", "m")
    assert G.widen_age_codes(code) == tuple(G.group_code(a, "m") for a in G.widen_age("30-39"))


# -- the one parser (facebank.labels): queries strict, stored metadata lenient, same spellings --

@pytest.mark.parametrize("spelling, code", [("f", 0), ("W", 0), (" woman", 0), ("Female", 0), ("m", 1), ("MAN", 1),
                                            ("male ", 1)])
def test_one_gender_parser_everywhere(spelling, code):
    from facebank import labels
    from facebank.bank import schema

    assert labels.gender_code(spelling) == labels.gender_code(spelling, strict=True) == code
    assert schema.gender_code(spelling) == code  # the bank's name delegates to it
    assert G.gender_name(spelling) == G.GENDERS[code]  # and so do queries


@pytest.mark.parametrize("bad", ["x", "", None, 1, "females"])
def test_unknown_gender_is_unknown_in_metadata_and_an_error_in_queries(bad):
    from facebank import labels
    from facebank.bank import schema

    assert labels.gender_code(bad) == schema.gender_code(bad) == labels.GENDER_UNKNOWN
    with pytest.raises(InputError):
        labels.gender_code(bad, strict=True)
    assert schema.gender_name(labels.GENDER_UNKNOWN) == "unknown"
