"""Our StyleGAN2-ADA generator against the golden vectors made with the official code, and its
resampling against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facebank.errors import InputError
from facebank.seeds import parse_seeds
from facebank.sources.stylegan import generate_images, load_generator, to_uint8, z_from_seed
from facebank.sources.stylegan.network import Generator
from facebank.sources.stylegan.ops import modulated_conv2d, normalize_2nd_moment, setup_filter, upsample2d

NAMES = ["tiny32", "tiny32_cond10", "tiny64"]
TAGS = {"psi1_0": (1.0, None), "psi0_5": (0.5, None), "psi0_7_cut4": (0.7, 4)}
ATOL = 1e-4  # the facts sheet's tolerance; we measure <= 2e-5 on these nets


@pytest.fixture(scope="module", params=NAMES)
def golden(request, stylegan_fixtures):
    G, info = load_generator(stylegan_fixtures / f"{request.param}.pkl")
    ref = dict(np.load(stylegan_fixtures / f"{request.param}_reference.npz"))
    return request.param, G, info, ref


def _assert_uint8_close(ours: np.ndarray, ref: np.ndarray) -> None:
    """Exact except rare +-1 where a value sits on a rounding boundary."""
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1
    assert (diff == 1).mean() <= 0.001


@pytest.mark.parametrize("tag", list(TAGS))
def test_matches_reference(golden, tag):
    _, G, _, ref = golden
    psi, cutoff = TAGS[tag]
    z, c = torch.from_numpy(ref["z"]), torch.from_numpy(ref["c"])
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
        img = G.synthesis(ws, noise_mode="const", force_fp32=True)
    np.testing.assert_allclose(ws.numpy(), ref[f"ws_{tag}"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(img.numpy(), ref[f"img_{tag}"], atol=ATOL, rtol=0)
    _assert_uint8_close(to_uint8(img), ref[f"uint8_{tag}"])


def test_noise_none_matches_and_differs_from_const(golden):
    _, G, _, ref = golden
    z, c = torch.from_numpy(ref["z"]), torch.from_numpy(ref["c"])
    with torch.no_grad():
        img = G(z, c, noise_mode="none", force_fp32=True)
    np.testing.assert_allclose(img.numpy(), ref["img_psi1_0_noise_none"], atol=ATOL, rtol=0)
    assert np.abs(ref["img_psi1_0_noise_none"] - ref["img_psi1_0"]).max() > 1e-3  # noise path is live


def test_fused_and_unfused_modconv_agree(golden):
    _, G, _, ref = golden
    z, c = torch.from_numpy(ref["z"]), torch.from_numpy(ref["c"])
    with torch.no_grad():
        a = G(z, c, noise_mode="const", fused_modconv=True)
        b = G(z, c, noise_mode="const", fused_modconv=False)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=ATOL, rtol=0)


def test_generate_images_reproduces_reference_per_seed(golden):
    _, G, _, ref = golden
    seeds = ref["seeds"].tolist()
    if G.c_dim:  # the reference uses class seed % c_dim, so one call per seed
        out = [next(generate_images(G, [s], class_idx=s % G.c_dim, batch_size=1)) for s in seeds]
    else:  # batches of 3 and 1
        out = list(generate_images(G, seeds, batch_size=3))
    assert [s for s, _, _ in out] == seeds
    for i, (_, img, ws) in enumerate(out):
        assert img.shape == (G.img_resolution, G.img_resolution, 3) and img.dtype == np.uint8
        assert ws.shape == (G.num_ws, G.w_dim) and ws.dtype == np.float32
        _assert_uint8_close(img[None], ref["uint8_psi1_0"][i : i + 1])
        np.testing.assert_allclose(ws, ref["ws_psi1_0"][i], atol=ATOL, rtol=0)


def test_generate_images_batches_in_order(stylegan_fixtures):
    G, _ = load_generator(stylegan_fixtures / "tiny32.pkl")
    out = list(generate_images(G, [5, 3, 9, 1], psi=0.7, cutoff=4, batch_size=2))
    assert [s for s, _, _ in out] == [5, 3, 9, 1]
    alone = {s: img for s, img, _ in generate_images(G, [9, 1], psi=0.7, cutoff=4, batch_size=1)}
    for s, img, _ in out:
        if s in alone:
            assert np.abs(img.astype(int) - alone[s]).max() <= 1


def test_conditional_needs_class(stylegan_fixtures):
    G, _ = load_generator(stylegan_fixtures / "tiny32_cond10.pkl")
    with pytest.raises(InputError, match="class_idx"):
        next(generate_images(G, [0]))
    with pytest.raises(InputError):
        next(generate_images(G, [0], class_idx=10))
    uncond, _ = load_generator(stylegan_fixtures / "tiny32.pkl")
    with pytest.raises(InputError):
        next(generate_images(uncond, [0], class_idx=1))


def test_fp16_path_close_to_fp32(stylegan_fixtures):
    """The CUDA fp16 path, run on the CPU: float32 out, close to the fp32 image."""
    G, _ = load_generator(stylegan_fixtures / "tiny64.pkl")
    for block in (G.synthesis.b32, G.synthesis.b64):
        assert block.use_fp16  # num_fp16_res 2
        block.fp16_devices = ("cpu",)
    z = torch.from_numpy(np.concatenate([z_from_seed(s, G.z_dim) for s in range(4)]))
    with torch.no_grad():
        ref = G(z, None, noise_mode="const", force_fp32=True)
        half = G(z, None, noise_mode="const")
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert (half - ref).abs().mean() < 1e-2 * ref.abs().mean()
    assert (half - ref).abs().max() > 0  # it really ran in half precision


# -- unit checks against brute-force references --------------------------------------------------


def _zero_insert(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    out = torch.zeros([n, c, 2 * h, 2 * w], dtype=x.dtype)
    out[:, :, ::2, ::2] = x
    return out


def _fir(x: torch.Tensor, f: torch.Tensor, gain: float) -> torch.Tensor:
    c = x.shape[1]
    return F.conv2d(x, (f.flip([0, 1]) * gain)[None, None].repeat(c, 1, 1, 1), groups=c)


def test_upsample2d_is_zero_insert_pad_fir():
    torch.manual_seed(0)
    x, f = torch.randn(2, 3, 5, 7), setup_filter([1, 3, 3, 1])
    ref = _fir(F.pad(_zero_insert(x), [2, 1, 2, 1]), f, gain=4)
    out = upsample2d(x, f)
    assert out.shape == (2, 3, 10, 14)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_setup_filter():
    f = setup_filter([1, 3, 3, 1])
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv2d_against_per_sample_reference(fused, demodulate, up):
    torch.manual_seed(1)
    x, weight, styles = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    f = setup_filter([1, 3, 3, 1])
    out = modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f, demodulate=demodulate, fused=fused)
    refs = []
    for n in range(3):
        w = weight * styles[n][None, :, None, None]
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        if up == 1:
            refs.append(F.conv2d(x[n : n + 1], w, padding=1))
        else:  # zero-insert, pad (3, 2), FIR x 4, then cross-correlate with the flipped weight
            y = _fir(F.pad(_zero_insert(x[n : n + 1]), [3, 2, 3, 2]), f, gain=4)
            refs.append(F.conv2d(y, w.flip([2, 3])))
    ref = torch.cat(refs)
    assert out.shape == ref.shape == (3, 5, 6 * up, 6 * up)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)


def test_normalize_2nd_moment():
    x = torch.randn(4, 16, dtype=torch.float64)
    ref = torch.from_numpy(x.numpy() / np.sqrt((x.numpy() ** 2).mean(axis=1, keepdims=True) + 1e-8))
    torch.testing.assert_close(normalize_2nd_moment(x), ref)


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
def test_architectures_build_and_run(architecture):
    torch.manual_seed(0)
    G = Generator(16, 0, 16, 16, 3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 256, "channel_max": 16, "architecture": architecture})
    assert G.num_ws == 2 * 4 - 2
    keys = list(G.state_dict())
    assert keys[0] == "synthesis.b4.const" and keys[-1].startswith("mapping.fc1")
    assert ("synthesis.b8.torgb.weight" in keys) == (architecture == "skip")
    assert ("synthesis.b8.skip.weight" in keys) == (architecture == "resnet")
    with torch.no_grad():
        img = G(torch.randn(2, 16), None, noise_mode="const")
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()


def test_ffhq_sized_state_dict_layout():
    """§2.11: 182 tensors and 30,370,060 parameters for the FFHQ-1024 config (no forward pass)."""
    with torch.device("meta"):
        G = Generator(512, 0, 512, 1024, 3, synthesis_kwargs={"channel_base": 32768, "channel_max": 512,
                                                              "num_fp16_res": 4, "conv_clamp": 256})
    assert G.num_ws == 18 and len(G.state_dict()) == 182
    assert sum(p.numel() for p in G.parameters()) == 30_370_060
    assert [r for r in G.synthesis.block_resolutions if getattr(G.synthesis, f"b{r}").use_fp16] == [128, 256, 512, 1024]


# -- seeds and uint8 ----------------------------------------------------------------------------


def test_parse_seeds():
    assert parse_seeds("0-3,12, 20-22") == [0, 1, 2, 3, 12, 20, 21, 22]
    assert len(parse_seeds("0-9999")) == 10000
    for bad in ["", "a", "3-1", "1,,2", "-5", "1-2-3", str(2**32)]:
        with pytest.raises(InputError):
            parse_seeds(bad)


def test_z_from_seed_is_numpy_legacy():
    z = z_from_seed(42, 8)
    assert z.shape == (1, 8) and z.dtype == np.float64
    np.testing.assert_array_equal(z[0], np.random.RandomState(42).randn(8))


def test_to_uint8_truncates_and_clamps():
    img = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0]).reshape(1, 1, 1, 6).expand(1, 3, 1, 6)
    out = to_uint8(img)
    assert out.shape == (1, 1, 6, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255, 255]  # 0.999 -> 255.37 -> 255, -1 -> 0.5 -> 0
