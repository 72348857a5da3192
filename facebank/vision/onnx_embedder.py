"""Any ONNX face recogniser behind a declared contract: how to feed it and what it returns.

A contract is a small TOML or JSON file beside the model (`<model>.contract.toml`, `.json`)
or a preset. The model's input and output shapes are checked against it when loading, so a
model that does not match its declaration is refused before it writes a single vector.
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

from facebank.errors import ConfigError, InputError, ModelError
from facebank.vision.align import align_face
from facebank.vision.model_files import file_sha256, onnx_session
from facebank.vision.types import Detection, ModelInfo

__all__ = ["PRESETS", "EmbedderContract", "OnnxEmbedder", "resolve_contract"]


@dataclass(frozen=True)
class EmbedderContract:
    """How an ONNX face recogniser is fed, and what it returns."""

    space: str  # identity space name the vectors are stored under
    input_size: int = 112  # square aligned crop side in pixels
    color_order: str = "RGB"  # channel order the network expects: 'RGB' or 'BGR'
    mean: float | tuple[float, float, float] = 127.5  # subtracted per channel (in color_order)
    std: float | tuple[float, float, float] = 128.0  # divided per channel after the mean
    alignment: str = "arcface_112"  # only the ArcFace 5-point template (scaled to input_size)
    output_dim: int | None = None  # declared embedding size; None = read from the model
    input_name: str | None = None  # None = the model's only input
    output_name: str | None = None  # None = the model's only (or first) output
    batch_fixed: int | None = None  # batch size the graph is fixed to; None = read from the model
    name: str | None = None  # model name for provenance; None = the file's stem

    def __post_init__(self) -> None:
        if not self.space or not isinstance(self.space, str):
            raise ConfigError("contract.space must be a non-empty string")
        if self.color_order not in ("RGB", "BGR"):
            raise ConfigError(f"contract.color_order must be 'RGB' or 'BGR', got {self.color_order!r}")
        if self.alignment != "arcface_112":
            raise ConfigError(f"contract.alignment {self.alignment!r} is not supported (only 'arcface_112')")
        if not isinstance(self.input_size, int) or self.input_size < 16:
            raise ConfigError(f"contract.input_size must be an integer >= 16, got {self.input_size!r}")
        for field in ("mean", "std"):
            values = np.broadcast_to(np.asarray(getattr(self, field), dtype=np.float64), (3,))
            if not np.isfinite(values).all() or (field == "std" and (values == 0).any()):
                raise ConfigError(f"contract.{field} must be finite{' and non-zero' if field == 'std' else ''}")
            if isinstance(getattr(self, field), list):  # keep the dataclass hashable
                object.__setattr__(self, field, tuple(float(v) for v in getattr(self, field)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmbedderContract":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown contract keys: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"invalid contract: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "EmbedderContract":
        """Read a contract from .toml or .json (keys as the dataclass fields)."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
            data = json.loads(text) if file.suffix.lower() == ".json" else tomllib.loads(text)
        except (OSError, ValueError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
            raise ConfigError(f"cannot read embedder contract {file}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"embedder contract {file} must be a table/object")
        return cls.from_dict(data)


PRESETS: dict[str, EmbedderContract] = {
    # A MobileFaceNet (ArcFace-family), 128-d, batch fixed at 1.
    "mobilefacenet_128d": EmbedderContract(space="mobilefacenet", mean=127.5, std=128.0, output_dim=128),
    # InsightFace w600k_r50 (buffalo_l): its runner swaps BGR to RGB and uses (x - 127.5) / 127.5.
    "arcface": EmbedderContract(space="arcface", mean=127.5, std=127.5, output_dim=512, name="arcface_w600k_r50"),
}


def resolve_contract(contract: Any, model_path: Path, space: str) -> EmbedderContract:
    """An EmbedderContract from an instance, a preset name, a contract file, or what lies beside the model."""
    resolved = _find_contract(contract, model_path, space)
    if resolved is None:
        raise ModelError(
            f"no contract for {model_path}: pass one, name a preset ({', '.join(PRESETS)}), "
            f"or put {model_path.stem}.contract.toml beside the model"
        )
    # A preset name may stand for its space; any other name must be the contract's space,
    # or vectors would be stored under a name the contract does not declare.
    if space not in PRESETS and space != resolved.space:
        raise ConfigError(f"embedder space {space!r} does not match its contract's space {resolved.space!r}")
    return resolved


def _find_contract(contract: Any, model_path: Path, space: str) -> EmbedderContract | None:
    if isinstance(contract, EmbedderContract):
        return contract
    if isinstance(contract, str) and contract in PRESETS:
        return PRESETS[contract]
    if contract is not None:
        return EmbedderContract.from_file(contract)
    for suffix in (".contract.toml", ".contract.json"):
        beside = model_path.with_name(model_path.stem + suffix)
        if beside.is_file():
            return EmbedderContract.from_file(beside)
    if space in PRESETS:
        return PRESETS[space]
    by_space = [c for c in PRESETS.values() if c.space == space]
    return by_space[0] if len(by_space) == 1 else None


class OnnxEmbedder:
    """Embeds 5-point-aligned crops with an ONNX model under an EmbedderContract."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],  # the .onnx file
        contract: EmbedderContract,  # how to feed it (see PRESETS)
        *,
        threads: int | None = None,  # onnxruntime intra-op threads; None = its default
    ):
        self.contract = contract
        self.space = contract.space
        self._mean = np.broadcast_to(np.asarray(contract.mean, dtype=np.float32), (3,)).copy()
        self._std = np.broadcast_to(np.asarray(contract.std, dtype=np.float32), (3,)).copy()
        self._session = onnx_session(model_path, what=f"{contract.space} embedder", threads=threads)
        self._input_name, self.batch_fixed = self._check_input(model_path)
        self._output_name, self.dim = self._check_output(model_path)
        name = contract.name or Path(model_path).stem
        self.info = ModelInfo(name=name, sha256=file_sha256(model_path), version="onnx")

    def __repr__(self) -> str:
        return f"OnnxEmbedder({self.info.name!r}, space={self.space!r}, dim={self.dim})"

    def _check_input(self, model_path) -> tuple[str, int | None]:
        inputs = self._session.get_inputs()
        wanted = self.contract.input_name
        chosen = [i for i in inputs if wanted is None or i.name == wanted]
        if len(chosen) != 1:
            names = [i.name for i in inputs]
            raise ModelError(f"{model_path}: contract input {wanted!r} does not match model inputs {names}")
        shape = chosen[0].shape
        size = self.contract.input_size
        if len(shape) != 4 or shape[1] != 3 or any(isinstance(s, int) and s != size for s in shape[2:]):
            raise ModelError(f"{model_path}: model input {list(shape)} does not match contract (N, 3, {size}, {size})")
        model_batch = shape[0] if isinstance(shape[0], int) else None
        declared = self.contract.batch_fixed
        if declared is not None and model_batch is not None and declared != model_batch:
            raise ModelError(f"{model_path}: model batch is fixed at {model_batch}, contract says {declared}")
        return chosen[0].name, model_batch or declared

    def _check_output(self, model_path) -> tuple[str, int]:
        outputs = self._session.get_outputs()
        wanted = self.contract.output_name
        chosen = [o for o in outputs if wanted is None or o.name == wanted][:1]
        if not chosen:
            names = [o.name for o in outputs]
            raise ModelError(f"{model_path}: contract output {wanted!r} not among model outputs {names}")
        shape = chosen[0].shape
        if len(shape) != 2:
            raise ModelError(f"{model_path}: model output {list(shape)} is not (N, dim)")
        dim = shape[1] if isinstance(shape[1], int) else None
        if dim is None:  # symbolic: learn it from one blank crop
            probe = np.zeros((self.batch_fixed or 1, self.contract.input_size, self.contract.input_size, 3), np.uint8)
            dim = int(self._run(probe, chosen[0].name).shape[1])
        declared = self.contract.output_dim
        if declared is not None and declared != dim:
            raise ModelError(f"{model_path}: model output dim {dim} does not match contract output_dim {declared}")
        return chosen[0].name, dim

    def _run(self, crops: np.ndarray, output_name: str) -> np.ndarray:
        pixels = crops[..., ::-1] if self.contract.color_order == "BGR" else crops
        blob = ((pixels.astype(np.float32) - self._mean) / self._std).transpose(0, 3, 1, 2)
        try:
            return self._session.run([output_name], {self._input_name: np.ascontiguousarray(blob)})[0]
        except Exception as exc:  # onnxruntime's errors are untyped
            raise ModelError(f"{self.space} embedder inference failed: {str(exc).splitlines()[0][:300]}") from exc

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Unit-norm float32 (N, dim) embeddings of aligned uint8 crops (N, S, S, 3) in RGB.

        Batched through the model; chunked to the model's fixed batch size when it has one.
        """
        size = self.contract.input_size
        if not isinstance(crops, np.ndarray) or crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
            raise InputError(f"crops must be uint8 (N, {size}, {size}, 3), got {getattr(crops, 'shape', type(crops))}")
        step = self.batch_fixed or max(len(crops), 1)
        chunks = []
        for start in range(0, len(crops), step):
            chunk = crops[start : start + step]
            missing = step - len(chunk) if self.batch_fixed else 0
            if missing:  # a fixed batch must be full: pad, then drop the padding's outputs
                chunk = np.concatenate([chunk, np.zeros((missing, size, size, 3), np.uint8)])
            out = np.asarray(self._run(chunk, self._output_name), dtype=np.float32)
            chunks.append(out[: step - missing])
        vectors = np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)
        if vectors.shape != (len(crops), self.dim):
            raise ModelError(f"{self.space} embedder returned {vectors.shape}, expected ({len(crops)}, {self.dim})")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.isfinite(vectors).all() or (norms == 0).any():
            raise ModelError(f"{self.space} embedder returned NaN, infinity or a zero vector")
        return (vectors / norms).astype(np.float32)

    def embed(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """Unit-norm float32 (dim,) embedding of the face, aligned on its 5 landmarks."""
        return self.embed_many(image, [detection])[0]

    def embed_many(self, image: np.ndarray, detections: list[Detection]) -> np.ndarray:
        """Unit-norm float32 (N, dim) embeddings of the faces of one image, batched through the model."""
        size = self.contract.input_size
        crops = np.stack([align_face(image, d.landmarks, size=size) for d in detections]) if detections \
            else np.zeros((0, size, size, 3), np.uint8)
        return self.embed_crops(crops)
