"""Pixel metrics: hand-computed values, the batched matrix against skimage, real photos."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from facebank.audit.pixel_metrics import (
    pick_by_pixel_metric,
    pixel_similarity_matrix,
    psnr,
    rmse,
    ssim,
)
from facebank.errors import InputError, NoEligibleTarget


def _crops(rng, n, size=112):
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_identical_crops():
    a = _crops(np.random.default_rng(0), 1)[0]
    assert ssim(a, a) == pytest.approx(1.0)
    assert rmse(a, a) == 0.0
    assert psnr(a, a) == math.inf


def test_constant_offset():
    a = np.random.default_rng(1).integers(0, 200, size=(112, 112, 3), dtype=np.uint8)
    b = a + np.uint8(7)  # no overflow: a <= 199
    assert rmse(a, b) == pytest.approx(7.0)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 49))


def test_matrix_equals_single_pair_functions():
    rng = np.random.default_rng(2)
    q, t = _crops(rng, 3, 32), _crops(rng, 5, 32)
    t[0] = q[0]  # an identical pair: ssim 1, rmse 0, psnr inf
    for metric, fn in (("ssim", ssim), ("rmse", rmse), ("psnr", psnr)):
        m = pixel_similarity_matrix(q, t, metric)
        ref = np.array([[fn(a, b) for b in t] for a in q])
        assert m.shape == (3, 5)
        # ssim: same formula, batched filters; differs from skimage only in float rounding.
        np.testing.assert_allclose(m, ref, rtol=0, atol=1e-12)
    assert pixel_similarity_matrix(q, t, "psnr")[0, 0] == math.inf


def test_pick_directions():
    rng = np.random.default_rng(3)
    q = _crops(rng, 1, 32)[0]
    noise = rng.integers(-1, 2, size=q.shape)
    near = np.clip(q.astype(int) + noise, 0, 255).astype(np.uint8)  # very similar to q
    cands = np.stack([near, 255 - q, _crops(rng, 1, 32)[0]])
    # Furthest: 255 - q is most dissimilar by all three metrics.
    for metric in ("ssim", "rmse", "psnr"):
        assert pick_by_pixel_metric(q, cands, metric=metric, mode="furthest").index == 1
    # Thresholds keep the near copy out: ssim <= 0.5, rmse >= 20, psnr <= 20 dB.
    for metric, t in (("ssim", 0.5), ("rmse", 20.0), ("psnr", 20.0)):
        picks = {pick_by_pixel_metric(q, cands, metric=metric, threshold=t, rng=s).index for s in range(30)}
        assert picks == {1, 2}
        assert pick_by_pixel_metric(q, cands, metric=metric, threshold=t, rng=0).n_eligible == 2
    with pytest.raises(NoEligibleTarget):
        pick_by_pixel_metric(q, cands[:1], metric="rmse", threshold=20.0)


def test_bad_input():
    a = np.zeros((112, 112, 3), dtype=np.uint8)
    with pytest.raises(InputError):
        ssim(a.astype(np.float32), a)
    with pytest.raises(InputError):
        rmse(a, a[:100])
    with pytest.raises(InputError):
        pixel_similarity_matrix(a[None], a[None], "l1")
    with pytest.raises(InputError):
        pick_by_pixel_metric(a, a[None], mode="closest")


def test_real_generated_photos(assets):
    """Real generated.photos faces resized to 112: the batched matrix agrees with skimage, a face
    is most similar to itself, and the metrics order distinct faces consistently with their
    definitions (psnr is a monotone function of rmse)."""
    from PIL import Image

    paths = sorted((assets / "generated_photos" / "age_adult").glob("*_512.jpg"))[:6]
    assert len(paths) == 6
    crops = np.stack([np.asarray(Image.open(p).convert("RGB").resize((112, 112), Image.BILINEAR)) for p in paths])
    s = pixel_similarity_matrix(crops, crops, "ssim")
    r = pixel_similarity_matrix(crops, crops, "rmse")
    p = pixel_similarity_matrix(crops, crops, "psnr")
    np.testing.assert_allclose(np.diag(s), 1.0)
    assert np.all(np.diag(r) == 0) and np.all(np.isinf(np.diag(p)))
    off = ~np.eye(6, dtype=bool)
    assert np.all(s[off] < 0.99) and np.all(r[off] > 1)
    np.testing.assert_allclose(p[off], 20 * np.log10(255 / r[off]))
    np.testing.assert_allclose(s, s.T, atol=1e-12)
    ref = structural_similarity(crops[0], crops[1], channel_axis=-1, data_range=255)
    assert s[0, 1] == pytest.approx(ref, abs=1e-12)
