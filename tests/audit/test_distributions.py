"""Bank distributions against brute-force references and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from facebank.audit.distributions import (
    _pair_from_linear,
    group_counts,
    near_duplicates,
    nearest_neighbour,
    pairwise_similarities,
)
from facebank.errors import InputError


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_linear_pair_index_matches_triu(n):
    i, j = np.triu_indices(n, k=1)
    ii, jj = _pair_from_linear(np.arange(i.size), n)
    np.testing.assert_array_equal(ii, i)
    np.testing.assert_array_equal(jj, j)


def test_pairwise_all_pairs_hand_computed():
    x = np.array([[1, 0], [0, 2], [1, 1]], dtype=np.float32)  # cosines: 0, 1/sqrt2, 1/sqrt2
    sims, total, sampled = pairwise_similarities(x)
    assert (total, sampled) == (3, False)
    np.testing.assert_allclose(sims, [0, 2**-0.5, 2**-0.5], atol=1e-6)


def test_pairwise_sampled_matches_brute_force():
    rng = np.random.default_rng(0)
    x = _unit(rng, 300, 8)
    full = (x @ x.T)[np.triu_indices(300, k=1)]
    sims, total, sampled = pairwise_similarities(x, max_pairs=1000, rng=1)
    assert (total, sampled, sims.size) == (300 * 299 // 2, True, 1000)
    # Every sampled similarity is one of the real pair similarities (float32: 1e-6).
    full_sorted = np.sort(full)
    pos = np.clip(np.searchsorted(full_sorted, sims), 1, full.size - 1)
    nearest = np.minimum(abs(full_sorted[pos] - sims), abs(full_sorted[pos - 1] - sims))
    assert nearest.max() < 1e-6
    # Seeded: same sample again; a different seed gives another sample.
    again, _, _ = pairwise_similarities(x, max_pairs=1000, rng=1)
    np.testing.assert_array_equal(sims, again)
    other, _, _ = pairwise_similarities(x, max_pairs=1000, rng=2)
    assert not np.array_equal(sims, other)


def test_nearest_neighbour_matches_brute_force_across_blocks():
    rng = np.random.default_rng(3)
    x = _unit(rng, 103, 16)
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    idx, sim = nearest_neighbour(x, block=10)  # 11 blocks, the last one partial
    np.testing.assert_array_equal(idx, full.argmax(1))
    np.testing.assert_allclose(sim, full.max(1), atol=1e-6)
    assert idx.dtype == np.int64 and sim.dtype == np.float32


def test_nearest_neighbour_finds_duplicate_not_self():
    x = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    idx, sim = nearest_neighbour(x)
    assert idx[:2].tolist() == [1, 0]
    np.testing.assert_allclose(sim[:2], 1.0)


def test_near_duplicates_unique_pairs():
    idx = np.array([1, 0, 3, 2, 2])
    sim = np.array([0.99, 0.99, 0.97, 0.97, 0.5])
    assert near_duplicates(idx, sim, 0.95) == [(0, 1, pytest.approx(0.99)), (2, 3, pytest.approx(0.97))]
    assert near_duplicates(idx, sim, 0.99) == []  # strictly above


def test_group_counts():
    rows = group_counts({
        "age": np.array(["adult", "child", "adult", "adult"]),
        "gender": np.array(["f", "m", "f", "m"]),
        "source": np.array(["gp", "gp", "gp", "stylegan"]),
    })
    assert rows == [
        {"age": "adult", "gender": "f", "source": "gp", "count": 2},
        {"age": "adult", "gender": "m", "source": "stylegan", "count": 1},
        {"age": "child", "gender": "m", "source": "gp", "count": 1},
    ]
    with pytest.raises(InputError):
        group_counts({"a": np.zeros(3), "b": np.zeros(2)})


def test_bad_input_is_input_error():
    with pytest.raises(InputError):
        pairwise_similarities(np.zeros((3, 2)))
    with pytest.raises(InputError):
        nearest_neighbour(np.ones((1, 4)))
