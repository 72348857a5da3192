"""What a face-swap network takes and returns: a declared contract, checked against the model at load.

A contract is a preset name ("inswapper_128", "simswap_224"), a frozen `SwapContract`, or a TOML /
JSON file with its fields. docs/swappers.md says how to write one for a model of your own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facebank.errors import ConfigError
from facebank.vision.align import TEMPLATES

__all__ = ["PRESETS", "SwapContract", "resolve_swap_contract"]


@dataclass(frozen=True)
class SwapContract:
    """How a face-swap network is fed (the real face's crop and the target's identity) and what it returns."""

    size: int = 128  # side of the aligned crop of the real face, in and out
    template: str = "arcface"  # facebank.vision.align template: arcface (128: inswapper's shift), simswap, ffhq
    color_order: str = "RGB"  # channel order of the input and output tensors: RGB or BGR
    mean: float | tuple[float, float, float] = 0.0  # input = (pixel - mean) / std, per channel in color_order
    std: float | tuple[float, float, float] = 255.0
    output_mean: float | tuple[float, float, float] = 0.0  # pixel = output * output_std + output_mean
    output_std: float | tuple[float, float, float] = 255.0
    image_input: str = "target"  # input name of the real face's crop (N, 3, size, size)
    identity_input: str = "source"  # input name of the target's identity
    output_name: str | None = None  # None: the model's first output (N, 3, size, size)
    identity: str = "embedding"  # "embedding": (N, identity_dim) vector; "image": the target's aligned crop
    identity_dim: int = 512  # the identity vector's size as the model takes it (after emap)
    identity_size: int = 112  # identity "image": the target crop's side (normalised as the input)
    identity_template: str = "arcface"
    emap: str | None = None  # .npy (d, identity_dim) the embedding is multiplied by (inswapper's emap)
    normalize_identity: bool = True  # L2-normalise the identity vector after emap
    name: str | None = None  # model name for provenance; None: the file's stem

    def __post_init__(self) -> None:
        if self.color_order not in ("RGB", "BGR"):
            raise ConfigError(f"contract.color_order must be 'RGB' or 'BGR', got {self.color_order!r}")
        for f in ("template", "identity_template"):
            if getattr(self, f) not in TEMPLATES:
                raise ConfigError(f"contract.{f} must be one of {', '.join(TEMPLATES)}, got {getattr(self, f)!r}")
        if self.identity not in ("embedding", "image"):
            raise ConfigError(f"contract.identity must be 'embedding' or 'image', got {self.identity!r}")
        for f in ("size", "identity_size", "identity_dim"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < (16 if f != "identity_dim" else 1):
                raise ConfigError(f"contract.{f} must be a positive integer (sizes >= 16), got {v!r}")
        for f in ("mean", "std", "output_mean", "output_std"):
            values = np.broadcast_to(np.asarray(getattr(self, f), dtype=np.float64), (3,))
            if not np.isfinite(values).all() or (f.endswith("std") and (values == 0).any()):
                raise ConfigError(f"contract.{f} must be finite{' and non-zero' if f.endswith('std') else ''}")
            if isinstance(getattr(self, f), list):  # keep the dataclass hashable
                object.__setattr__(self, f, tuple(float(v) for v in getattr(self, f)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SwapContract:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown swap contract keys: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"invalid swap contract: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SwapContract:
        """A contract from a .toml or .json file (keys as the fields); a relative `emap` is beside the file."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
            data = json.loads(text) if file.suffix.lower() == ".json" else tomllib.loads(text)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read swap contract {file}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"swap contract {file} must be a table/object")
        if isinstance(data.get("emap"), str) and not Path(data["emap"]).is_absolute():
            data["emap"] = str(file.parent / data["emap"])
        return cls.from_dict(data)


PRESETS: dict[str, SwapContract] = {
    # InsightFace inswapper_128: RGB in [0, 1] at InsightFace's shifted 128 template; the target
    # identity is the ArcFace (w600k_r50) embedding times the model's emap, L2-normalised; RGB in [0, 1] out.
    # The emap is the graph's last initializer: save it as .npy and pass emap= (docs/swappers.md).
    "inswapper_128": SwapContract(size=128, template="arcface", name="inswapper_128"),
    # SimSwap-style exports at 224: the crop on SimSwap's own five templates, [0, 1] in and out, a
    # 512-d L2-normalised ArcFace identity. Input names differ between exports: check yours.
    "simswap_224": SwapContract(size=224, template="simswap", name="simswap_224"),
}


def resolve_swap_contract(contract: Any, model_path: Path) -> SwapContract:
    """A SwapContract from an instance, a preset name, a file, or `<model>.contract.toml|json` beside the model."""
    if isinstance(contract, SwapContract):
        return contract
    if isinstance(contract, str) and contract in PRESETS:
        return PRESETS[contract]
    if contract is not None:
        if not Path(contract).is_file():
            raise ConfigError(f"swap contract {contract!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
        return SwapContract.from_file(contract)
    for suffix in (".contract.toml", ".contract.json"):
        beside = model_path.with_name(model_path.stem + suffix)
        if beside.is_file():
            return SwapContract.from_file(beside)
    if model_path.stem in PRESETS:
        return PRESETS[model_path.stem]
    raise ConfigError(f"no swap contract for {model_path}: pass contract= (a preset: {', '.join(PRESETS)}, or a "
                      f"file), or put {model_path.stem}.contract.toml beside the model")
