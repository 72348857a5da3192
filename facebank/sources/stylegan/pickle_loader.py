"""Read StyleGAN2-ADA network pickles without running any code from them, and our own saved form.

Official `*.pkl` files are plain pickles whose network objects are rebuilt by
`torch_utils.persistence._reconstruct_persistent_obj(meta)`, which would `exec` the module
source stored in the file. Here every global the pickle names is looked up in an explicit
allow-list of harmless stand-ins (docs/STYLEGAN2_ADA_FORMAT.md §1.5); anything else raises
UnsafePickle before it is called. The opcodes that call things (REDUCE, NEWOBJ, BUILD, ...)
are checked too, so only those stand-ins are ever called. `module_src` is never read. A file is
one pickle: bytes after its STOP (a second pickle appended) are refused, not ignored.

The restricted unpicklers and the legacy `torch.save` storage-blob parser are in `unpickler`.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import logging
import os
import pickle
import struct
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from facebank.errors import ModelError, UnsafePickle
from facebank.sources.stylegan.network import Generator
from facebank.sources.stylegan.unpickler import _OUTER_GLOBALS, _Record, _RestrictedUnpickler

__all__ = ["load_generator", "load_network_pickle", "save_generator"]

log = logging.getLogger(__name__)

OUR_FORMAT = "facebank.stylegan2"
OUR_FORMAT_VERSION = 1
_MAPPING_KEYS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta"}
_SYNTHESIS_KEYS = {"channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture",
                   "resample_filter", "use_noise", "activation", "kernel_size", "fp16_channels_last", "channels_last"}
_IGNORED_KEYS = {"fused_modconv_default"}  # stylegan3 repo: a speed default, same maths
_TOP_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")


# ------------------------------------------------------------------------------------------------
# From records to a Generator.


def _state_dict(record: _Record, prefix: str = "", out: Optional[dict] = None) -> dict:
    """Parameters, then buffers, then children: the order of Module.state_dict()."""
    out = collections.OrderedDict() if out is None else out
    state = record.state
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if tensor is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise ModelError(f"network pickle: {prefix}{name} is not a tensor")
            out[prefix + name] = tensor
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _Record):
            raise ModelError(f"network pickle: module {prefix}{name} is not a network object")
        _state_dict(child, f"{prefix}{name}.", out)
    return out


def _children(record: _Record) -> dict:
    return {k: v for k, v in (record.state.get("_modules") or {}).items() if isinstance(v, _Record)}


def _plain(value):
    """numpy scalars / tuples -> JSON-friendly Python values."""
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _generator_config(g: _Record) -> dict:
    """Constructor arguments from `_init_kwargs`, corrected by the attributes each layer recorded."""
    state = g.state
    kwargs = dict(state.get("_init_kwargs") or {})
    for name, value in zip(_TOP_KEYS, tuple(state.get("_init_args") or ())):
        kwargs.setdefault(name, value)
    mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
    synthesis = dict(kwargs.pop("synthesis_kwargs", None) or {})
    config = {}
    for key in _TOP_KEYS[:5]:
        value = kwargs.pop(key, state.get(key))
        if not isinstance(value, int) or isinstance(value, bool):
            raise ModelError(f"network pickle: generator {key} is missing or not an integer")
        config[key] = value
    for key, value in kwargs.items():  # stylegan3 repo: synthesis kwargs arrive flattened
        if key not in _IGNORED_KEYS:
            synthesis[key] = value
    for key in _IGNORED_KEYS:
        synthesis.pop(key, None)
    unknown = (set(mapping) - _MAPPING_KEYS) | (set(synthesis) - _SYNTHESIS_KEYS)
    if unknown:
        raise ModelError(f"network pickle: unsupported generator options {sorted(unknown)}")

    children = _children(g)
    if "mapping" not in children or "synthesis" not in children:
        raise ModelError("network pickle: generator has no mapping or synthesis network")
    m = children["mapping"].state
    for key in ("num_layers", "w_avg_beta"):
        if key in m:
            mapping[key] = m[key]
    fc0 = _children(children["mapping"]).get("fc0")
    if fc0 is not None:
        mapping["activation"] = fc0.state.get("activation", mapping.get("activation", "lrelu"))
        mapping["lr_multiplier"] = fc0.state.get("bias_gain", mapping.get("lr_multiplier", 0.01))

    blocks = [b for name, b in _children(children["synthesis"]).items() if name.startswith("b")]
    layers = [layer for b in blocks for name, layer in _children(b).items() if name in ("conv0", "conv1")]
    if blocks:
        synthesis["architecture"] = blocks[-1].state.get("architecture", synthesis.get("architecture", "skip"))
        synthesis["num_fp16_res"] = sum(1 for b in blocks if b.state.get("use_fp16"))
    if layers:
        clamps = {_plain(layer.state.get("conv_clamp")) for layer in layers}
        if len(clamps) != 1:
            raise ModelError(f"network pickle: layers disagree on conv_clamp {sorted(map(str, clamps))}")
        synthesis["conv_clamp"] = clamps.pop()
        synthesis["use_noise"] = bool(layers[0].state.get("use_noise", synthesis.get("use_noise", True)))
        synthesis["activation"] = layers[0].state.get("activation", synthesis.get("activation", "lrelu"))
    config["mapping_kwargs"] = _plain(mapping)
    config["synthesis_kwargs"] = _plain(synthesis)
    return config


def _copy_layer_attributes(G: Generator, g: _Record) -> None:
    """Each layer's recorded conv_clamp wins (the resnet skip's is not a constructor argument)."""
    records = {"": g}
    stack = [("", g)]
    while stack:
        prefix, rec = stack.pop()
        for name, child in _children(rec).items():
            records[prefix + name] = child
            stack.append((prefix + name + ".", child))
    for name, module in G.named_modules():
        rec = records.get(name)
        if rec is not None and "conv_clamp" in rec.state and hasattr(module, "conv_clamp"):
            module.conv_clamp = _plain(rec.state["conv_clamp"])


def _build(config: dict, state_dict: dict, where: str) -> Generator:
    try:
        G = Generator(**config)
        G.load_state_dict(state_dict, strict=True)
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{where}: weights do not fit the recorded generator config: {first}") from exc
    return G.eval().requires_grad_(False)


def load_network_pickle(data: bytes, where: str = "network pickle") -> tuple[Generator, dict]:
    """Official-format pickle bytes -> (G_ema as our Generator on the CPU, resolved config)."""
    try:
        unpickler = _RestrictedUnpickler(data, _OUTER_GLOBALS, "")
        top = unpickler.load()
        # A network pickle is one pickle: bytes past its STOP (a second, concatenated pickle) are
        # what a loader that reads on would run, so they are refused rather than ignored.
        if unpickler.consumed() != len(data):
            raise UnsafePickle(f"{where}: {len(data) - unpickler.consumed()} bytes follow the pickle's STOP "
                               "(a second pickle?); refused before they were read")
    except ModelError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            RuntimeError, struct.error, OverflowError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelError(f"{where}: not a readable network pickle (truncated or corrupt: "
                         f"{type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(top, dict) or not isinstance(top.get("G_ema"), _Record):
        raise ModelError(f"{where}: pickle has no G_ema network (not a StyleGAN2-ADA network pickle)")
    g = top["G_ema"]
    if g.class_name != "Generator":
        raise ModelError(f"{where}: G_ema is a {g.class_name!r}, not a Generator")
    config = _generator_config(g)
    G = _build(config, _state_dict(g), where)
    _copy_layer_attributes(G, g)
    return G, config


# ------------------------------------------------------------------------------------------------
# Our own saved form: one torch.save zip holding the state dict and the config as JSON text.


def save_generator(G: Generator, path) -> Path:
    """Write G (config + weights) to `path` atomically; read back with load_generator."""
    path = Path(path)
    payload = {
        "format": OUR_FORMAT,
        "format_version": OUR_FORMAT_VERSION,
        "writer": f"facebank torch-{torch.__version__}",
        "config_json": json.dumps(G.config, sort_keys=True),
        "state_dict": collections.OrderedDict((k, v.detach().cpu()) for k, v in G.state_dict().items()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _load_ours(data: bytes, where: str) -> tuple[Generator, dict]:
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad zip; all mean "unreadable"
        raise ModelError(f"{where}: not a readable facebank generator file ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != OUR_FORMAT:
        raise ModelError(f"{where}: not a facebank generator file")
    if payload.get("format_version") != OUR_FORMAT_VERSION:
        raise ModelError(f"{where}: generator file format version {payload.get('format_version')!r}, "
                         f"this facebank reads {OUR_FORMAT_VERSION}")
    try:
        config = json.loads(payload["config_json"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where}: generator file has no readable config") from exc
    return _build(config, payload.get("state_dict") or {}, where), config


def load_generator(path, device="cpu") -> tuple[Generator, dict]:
    """An official network pickle or our saved form -> (Generator in eval mode on `device`, info).

    info: sha256 (of the file), config (constructor arguments), format, z_dim, c_dim, w_dim,
    img_resolution, img_channels, num_ws, path.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"network file not found: {path}") from exc
    except OSError as exc:
        raise ModelError(f"cannot read network file {path}: {exc.strerror or exc}") from exc
    if data[:4] == b"PK\x03\x04":
        G, config = _load_ours(data, str(path))
        fmt = OUR_FORMAT
    else:
        G, config = load_network_pickle(data, str(path))
        fmt = "stylegan2-ada-pickle"
    G = G.to(device)
    info = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "config": config,
        "format": fmt,
        "path": str(path),
        "num_ws": G.num_ws,
        **{key: config[key] for key in _TOP_KEYS[:5]},
    }
    log.info("loaded generator %s (%s, %dpx, c_dim %d)", path.name, fmt, G.img_resolution, G.c_dim)
    return G, info
