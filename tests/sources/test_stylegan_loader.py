"""Loading official-format network pickles (fixtures and look-alikes built here), our saved form,
and the cached downloader (against a local HTTP server only)."""

from __future__ import annotations

import collections
import hashlib
import json
import pickle
import pickletools
import sys
import types

import numpy as np
import pytest
import torch

from facebank.errors import ModelError, SourceError
from facebank.sources.stylegan import FFHQ_URL, load_generator, resolve_network, save_generator
from facebank.sources.stylegan.network import Generator
from facebank.sources.stylegan.pickle_loader import OUR_FORMAT

# -- look-alike pickles: the same globals and opcode shapes as the official files, written by our
#    own code with a dummy module_src (the official writer's source never enters this repo) -------

DUMMY_SRC = "# module source omitted (look-alike pickle written by facebank tests)\n"
_SKIP_ATTRS = {"training", "config"}


@pytest.fixture
def lookalike(monkeypatch):
    """Returns to_record(module, init_kwargs) producing objects that pickle like persistence records."""
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")
    for name, mod in [("torch_utils", types.ModuleType("torch_utils")), ("torch_utils.persistence", persistence),
                      ("dnnlib", types.ModuleType("dnnlib")), ("dnnlib.util", util)]:
        monkeypatch.setitem(sys.modules, name, mod)

    def _reconstruct_persistent_obj(meta):  # only its name is pickled
        raise AssertionError("look-alike records are never unpickled with this")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    EasyDict = type("EasyDict", (dict,), {"__module__": "dnnlib.util", "__qualname__": "EasyDict"})
    util.EasyDict = EasyDict

    class Persistent:
        def __init__(self, meta):
            self.meta = meta

        def __reduce__(self):
            return _reconstruct_persistent_obj, (self.meta,)

    def to_record(module: torch.nn.Module, init_kwargs=None):
        state = {"training": False}
        for key, value in vars(module).items():
            if key.startswith("_") or key in _SKIP_ATTRS:
                continue
            state[key] = np.float64(value) if key.endswith("_gain") and isinstance(value, float) else value
        state["_parameters"] = collections.OrderedDict(module._parameters)
        state["_buffers"] = collections.OrderedDict(module._buffers)
        state["_non_persistent_buffers_set"] = set()
        state["_backward_hooks"] = collections.OrderedDict()
        state["_forward_hooks"] = collections.OrderedDict()
        state["_modules"] = collections.OrderedDict((n, to_record(m)) for n, m in module._modules.items())
        state["_init_args"] = ()
        state["_init_kwargs"] = EasyDict(init_kwargs or {})
        return Persistent({"type": "class", "version": 6, "module_src": DUMMY_SRC,
                           "class_name": type(module).__name__, "state": state})

    to_record.EasyDict = EasyDict
    return to_record


def _randomised_generator(**kwargs) -> Generator:
    torch.manual_seed(3)
    G = Generator(**kwargs)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if p.ndim <= 1:  # biases, noise strengths: non-trivial values exercise their paths
                p.add_(torch.randn(p.shape) * 0.3)
        G.mapping.w_avg.copy_(torch.randn(G.w_dim))
    return G.eval().requires_grad_(False)


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def test_protocol_3_and_4_give_identical_state(stylegan_fixtures):
    assert (stylegan_fixtures / "tiny32.pkl").read_bytes()[1] == 4
    assert (stylegan_fixtures / "tiny32_protocol3.pkl").read_bytes()[1] == 3
    g4, info4 = load_generator(stylegan_fixtures / "tiny32.pkl")
    g3, info3 = load_generator(stylegan_fixtures / "tiny32_protocol3.pkl")
    _assert_same_state(g4, g3)
    assert info4["config"] == info3["config"] and info4["sha256"] != info3["sha256"]


def test_info_fields(stylegan_fixtures):
    path = stylegan_fixtures / "tiny32_cond10.pkl"
    _, info = load_generator(path)
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (info["z_dim"], info["c_dim"], info["img_resolution"], info["num_ws"]) == (64, 10, 32, 8)
    syn = info["config"]["synthesis_kwargs"]
    assert syn["conv_clamp"] == 256 and syn["num_fp16_res"] == 2 and syn["channel_base"] == 1024
    json.dumps(info)  # plain data only


@pytest.mark.parametrize("protocol,snapshot", [(4, True), (3, False)])
def test_lookalike_of_fixture_weights(tmp_path, stylegan_fixtures, lookalike, protocol, snapshot):
    G, _ = load_generator(stylegan_fixtures / "tiny32.pkl")
    cfg = G.config
    kwargs = dict(z_dim=cfg["z_dim"], w_dim=cfg["w_dim"], c_dim=0, img_resolution=32, img_channels=3,
                  mapping_kwargs=lookalike.EasyDict(num_layers=2),
                  synthesis_kwargs=lookalike.EasyDict(channel_base=1024, channel_max=64, num_fp16_res=2, conv_clamp=256))
    rec = lookalike(G, kwargs)
    if snapshot:  # training-loop snapshot: five keys, G_ema is the one used
        top = {"training_set_kwargs": {"resolution": 32, "use_labels": False}, "G": rec, "D": None,
               "G_ema": rec, "augment_pipe": None}
    else:  # converted from TF: different key order, None extras
        top = {"G": rec, "D": None, "G_ema": rec, "training_set_kwargs": None, "augment_pipe": None}
    path = tmp_path / "lookalike.pkl"
    path.write_bytes(pickle.dumps(top, protocol=protocol))
    loaded, info = load_generator(path)
    _assert_same_state(G, loaded)
    assert info["config"]["synthesis_kwargs"]["conv_clamp"] == 256


def _globals(data: bytes) -> set:
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def test_lookalike_uses_the_same_globals_as_the_real_files(stylegan_fixtures, lookalike):
    G, _ = load_generator(stylegan_fixtures / "tiny32.pkl")
    rec = lookalike(G, {"z_dim": 64, "mapping_kwargs": lookalike.EasyDict(num_layers=2)})
    ours = pickle.dumps({"G_ema": rec}, protocol=3)
    assert _globals(ours) == _globals((stylegan_fixtures / "tiny32_protocol3.pkl").read_bytes())


def test_lookalike_resnet_flattened_kwargs_from_layer_attributes(tmp_path, lookalike):
    """stylegan3-style flattened kwargs with most options missing: the layers' own attributes
    (conv_clamp 0.5 so the clamp triggers, no noise, 'resnet', fp16 blocks) must win over defaults."""
    G = _randomised_generator(z_dim=8, c_dim=3, w_dim=8, img_resolution=16, img_channels=3,
                              mapping_kwargs={"num_layers": 2, "w_avg_beta": 0.998},
                              synthesis_kwargs={"channel_base": 128, "channel_max": 16, "num_fp16_res": 1,
                                                "conv_clamp": 0.5, "architecture": "resnet", "use_noise": False})
    flat = {"z_dim": 8, "c_dim": 3, "w_dim": 8, "img_resolution": 16, "img_channels": 3, "channel_base": 128,
            "channel_max": 16, "mapping_kwargs": lookalike.EasyDict(num_layers=2), "fused_modconv_default": "inference_only"}
    path = tmp_path / "resnet.pkl"
    path.write_bytes(pickle.dumps({"G_ema": lookalike(G, flat)}, protocol=4))
    loaded, info = load_generator(path)
    syn = info["config"]["synthesis_kwargs"]
    assert (syn["conv_clamp"], syn["architecture"], syn["use_noise"], syn["num_fp16_res"]) == (0.5, "resnet", False, 1)
    assert info["config"]["mapping_kwargs"]["w_avg_beta"] == 0.998
    _assert_same_state(G, loaded)
    z, c = torch.randn(2, 8), torch.eye(3)[:2]
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, c, 0.7, noise_mode="const"), G(z, c, 0.7, noise_mode="const"), atol=0, rtol=0)


def test_wrong_shapes_are_a_model_error(tmp_path, lookalike):
    G = _randomised_generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                              mapping_kwargs={"num_layers": 1}, synthesis_kwargs={"channel_base": 64, "channel_max": 8})
    # Claims channel_max 4: the recorded weights do not fit that network.
    kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                  synthesis_kwargs=lookalike.EasyDict(channel_base=64, channel_max=4))
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps({"G_ema": lookalike(G, kwargs)}, protocol=4))
    with pytest.raises(ModelError, match="do not fit"):
        load_generator(path)


def test_no_g_ema_is_a_model_error(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"G": None, "D": None}, protocol=4))
    with pytest.raises(ModelError, match="G_ema"):
        load_generator(path)


# -- our saved form ---------------------------------------------------------------------------------


def test_saved_form_round_trips_exactly(tmp_path, stylegan_fixtures):
    G, info = load_generator(stylegan_fixtures / "tiny32_cond10.pkl")
    path = save_generator(G, tmp_path / "sub" / "g.pt")
    assert [p.name for p in path.parent.iterdir()] == ["g.pt"]  # no temp files left
    loaded, info2 = load_generator(path)
    assert info2["format"] == OUR_FORMAT and info2["config"] == info["config"]
    assert info2["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    _assert_same_state(G, loaded)
    z, c = torch.randn(2, 64), torch.eye(10)[:2]
    with torch.no_grad():
        assert torch.equal(G(z, c, 0.5, 4, noise_mode="const"), loaded(z, c, 0.5, 4, noise_mode="const"))


def test_saved_form_other_version_refused(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format": OUR_FORMAT, "format_version": 99, "config_json": "{}", "state_dict": {}}, path)
    with pytest.raises(ModelError, match="version 99"):
        load_generator(path)


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_generator(tmp_path / "nope.pkl")


# -- downloads (local HTTP server on 127.0.0.1 only) ------------------------------------------------


def test_download_once_then_verify(tmp_path, http_root):
    root, base, hits = http_root
    payload = b"not really a network" * 100
    (root / "net.pkl").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    cache = tmp_path / "cache"
    first = resolve_network(f"{base}/net.pkl", cache_dir=cache, expected_sha256=digest)
    again = resolve_network(f"{base}/net.pkl", cache_dir=cache)
    assert first == again and first.read_bytes() == payload and len(hits) == 1
    meta = json.loads(first.with_name(first.name + ".json").read_text())
    assert meta["sha256"] == digest and meta["url"] == f"{base}/net.pkl"
    first.write_bytes(payload + b"x")  # damaged cache is refused, not used
    with pytest.raises(SourceError, match="changed since download"):
        resolve_network(f"{base}/net.pkl", cache_dir=cache)


def test_download_checksum_mismatch(tmp_path, http_root):
    root, base, _ = http_root
    (root / "net.pkl").write_bytes(b"abc")
    with pytest.raises(SourceError, match="expected"):
        resolve_network(f"{base}/net.pkl", cache_dir=tmp_path / "c", expected_sha256="0" * 64)
    assert not any((tmp_path / "c").glob("*net.pkl"))


def test_unreachable_url_says_use_local_path(tmp_path, http_root):
    _, base, _ = http_root
    with pytest.raises(SourceError, match="--network"):
        resolve_network(f"{base}/missing.pkl", cache_dir=tmp_path / "c")  # 404
    with pytest.raises(SourceError, match="--network"):
        resolve_network("http://127.0.0.1:9/ffhq.pkl", cache_dir=tmp_path / "c")  # nothing listens on port 9


def test_local_path(tmp_path):
    f = tmp_path / "n.pkl"
    f.write_bytes(b"x")
    assert resolve_network(f, cache_dir=tmp_path / "c") == f
    with pytest.raises(SourceError, match="not found"):
        resolve_network(tmp_path / "missing.pkl", cache_dir=tmp_path / "c")
    assert FFHQ_URL.startswith("https://nvlabs-fi-cdn.nvidia.com/")
