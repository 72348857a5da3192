"""The `onnx` swapper: a face-swap network from a local ONNX file, fed as its contract declares.

The real face is cut to the contract's aligned crop, the network puts the target's identity on
it, and the output crop is warped back into the photo through a feathered mask. The target's
identity is either its aligned crop (`identity = "image"`) or an embedding: the bank's stored
vector of the target in a named space, or a named embedder run on the target's aligned crop.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facebank.errors import InputError, ModelError
from facebank.swap.blend import paste_back
from facebank.swap.onnx_contract import SwapContract, resolve_swap_contract
from facebank.vision.align import swapper_matrix
from facebank.vision.model_files import onnx_session

__all__ = ["OnnxSwapper"]


def _dims(shape) -> list:
    return [d if isinstance(d, int) else "N" for d in shape]


class OnnxSwapper:
    """A face-swap network behind the Swapper interface.

    Args:
        model_path: the .onnx file.
        contract: a preset name ("inswapper_128", "simswap_224"), a SwapContract, a .toml/.json file,
            or None (a contract beside the model, else the preset named like the file).
        space: the identity space of the target's embedding (contract.identity = "embedding").
        embedder_path: the ONNX model of `space` (facebank.vision.registry); None: the bank's stored
            vector of the target in `space` is used, no model is run.
        emap: overrides contract.emap (a .npy path or an array (d, identity_dim)).
        border: the feathered frame of the pasted crop, as a fraction of its side.
    """

    name = "onnx"

    def __init__(self, model_path: str | os.PathLike, contract: Any = None, *, space: str | None = None,
                 embedder_path: str | os.PathLike | None = None, emap: Any = None, border: float = 0.1,
                 threads: int | None = None):
        self.model_path = Path(model_path)
        self.contract: SwapContract = resolve_swap_contract(contract, self.model_path)
        self.space, self.border = space, float(border)
        if not 0.0 < self.border < 0.5:
            raise InputError(f"border must be in (0, 0.5), got {border}")
        c = self.contract
        if c.identity == "embedding" and not space:
            raise InputError("an embedding identity needs space= (the bank space or embedder of the target's vector)")
        self._session = onnx_session(self.model_path, what="face swap", threads=threads)
        self._check_model()
        self._emap = self._load_emap(c.emap if emap is None else emap)
        self._embedder = None
        if embedder_path is not None:
            from facebank.vision.registry import load_embedder

            self._embedder = load_embedder(space, embedder_path)
            self._check_dim(int(self._embedder.dim), f"embedder {space!r}")
        self._mean = np.broadcast_to(np.asarray(c.mean, np.float32), (3,)).copy()
        self._std = np.broadcast_to(np.asarray(c.std, np.float32), (3,)).copy()
        self._out_mean = np.broadcast_to(np.asarray(c.output_mean, np.float32), (3,)).copy()
        self._out_std = np.broadcast_to(np.asarray(c.output_std, np.float32), (3,)).copy()

    def __repr__(self) -> str:
        return f"OnnxSwapper({str(self.model_path)!r}, size={self.contract.size}, identity={self.contract.identity})"

    # -- load-time checks: one ModelError line naming what does not match --
    def _fail(self, what: str) -> ModelError:
        return ModelError(f"{self.model_path}: {what}")

    def _check_model(self) -> None:
        c = self.contract
        inputs = {i.name: i for i in self._session.get_inputs()}
        for want in (c.image_input, c.identity_input):
            if want not in inputs:
                raise self._fail(f"the contract's input {want!r} is not among the model's inputs {sorted(inputs)}")
        expect = {c.image_input: [3, c.size, c.size],
                  c.identity_input: [c.identity_dim] if c.identity == "embedding" else [3, c.identity_size, c.identity_size]}
        for name, tail in expect.items():
            shape = inputs[name].shape
            if len(shape) != len(tail) + 1 or any(isinstance(s, int) and s != t for s, t in zip(shape[1:], tail)):
                raise self._fail(f"input {name!r} is {_dims(shape)}, the contract says {['N', *tail]}")
            if "float" not in str(inputs[name].type):
                raise self._fail(f"input {name!r} is {inputs[name].type}, a float tensor is expected")
        outputs = self._session.get_outputs()
        out = [o for o in outputs if c.output_name is None or o.name == c.output_name][:1]
        if not out:
            raise self._fail(f"the contract's output {c.output_name!r} is not among {[o.name for o in outputs]}")
        shape = out[0].shape
        if len(shape) != 4 or any(isinstance(s, int) and s != t for s, t in zip(shape[1:], [3, c.size, c.size])):
            raise self._fail(f"output {out[0].name!r} is {_dims(shape)}, the contract says ['N', 3, {c.size}, {c.size}]")
        self._output = out[0].name

    def _load_emap(self, emap) -> np.ndarray | None:
        if emap is None:
            return None
        if isinstance(emap, (str, os.PathLike)):
            try:
                emap = np.load(emap, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise ModelError(f"cannot read emap {emap}: {exc}") from exc
        emap = np.asarray(emap, np.float64)
        if emap.ndim != 2 or emap.shape[1] != self.contract.identity_dim or not np.isfinite(emap).all():
            raise self._fail(f"emap is {list(emap.shape)}, the contract needs (d, {self.contract.identity_dim}) finite")
        return emap

    def _check_dim(self, dim: int, what: str) -> None:
        want = self._emap.shape[0] if self._emap is not None else self.contract.identity_dim
        if dim != want:
            via = "the emap's rows" if self._emap is not None else "the contract's identity_dim"
            raise self._fail(f"{what} gives {dim}-d vectors, {via} need {want}")

    # -- data flow --
    def _blob(self, crop: np.ndarray) -> np.ndarray:
        pixels = crop[..., ::-1] if self.contract.color_order == "BGR" else crop
        return np.ascontiguousarray(((pixels.astype(np.float32) - self._mean) / self._std).transpose(2, 0, 1)[None])

    def identity_vector(self, vector: np.ndarray) -> np.ndarray:
        """The model's identity input (1, identity_dim) from a target embedding (emap, then L2 norm)."""
        v = np.asarray(vector, np.float64).reshape(-1)
        self._check_dim(v.size, "the target's embedding")
        if self._emap is not None:
            v = v @ self._emap
        if self.contract.normalize_identity:
            norm = float(np.linalg.norm(v))
            if not np.isfinite(norm) or norm == 0.0:
                raise ModelError("the target's identity vector is zero or not finite")
            v = v / norm
        return v.astype(np.float32)[None]

    def identity_of(self, target) -> np.ndarray:
        """The identity input for `target` (a facebank Target) as the contract declares it."""
        c = self.contract
        if c.identity == "image":
            return self._blob(target.aligned(c.identity_size, c.identity_template))
        if self._embedder is not None:
            face = target.face()
            if hasattr(self._embedder, "embed_crops"):
                size = self._embedder.contract.input_size
                return self.identity_vector(self._embedder.embed_crops(target.aligned(size, "arcface")[None])[0])
            from facebank.vision.types import Detection

            det = Detection(box=np.asarray(face.box, np.float32), landmarks=np.asarray(face.landmarks, np.float32),
                            score=1.0)
            return self.identity_vector(self._embedder.embed(face.image(), det))
        vectors = target.face().embeddings
        if self.space not in vectors:
            raise InputError(f"the bank has no {self.space!r} vector for target {target.id}; it has "
                             f"{', '.join(sorted(vectors)) or 'none'}")
        return self.identity_vector(vectors[self.space])

    def run_crop(self, crop: np.ndarray, identity: np.ndarray) -> np.ndarray:
        """The network on one aligned RGB uint8 crop (size, size, 3) and an identity input: RGB uint8 out."""
        size = self.contract.size
        if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8 or crop.shape != (size, size, 3):
            raise InputError(f"crop must be uint8 ({size}, {size}, 3), got {getattr(crop, 'shape', type(crop))}")
        feeds = {self.contract.image_input: self._blob(crop),
                 self.contract.identity_input: np.ascontiguousarray(identity, dtype=np.float32)}
        try:
            out = self._session.run([self._output], feeds)[0]
        except Exception as exc:  # onnxruntime's errors are untyped
            raise ModelError(f"face swap inference failed: {str(exc).splitlines()[0][:300]}") from exc
        pixels = np.asarray(out[0], np.float32).transpose(1, 2, 0) * self._out_std + self._out_mean
        if self.contract.color_order == "BGR":
            pixels = pixels[..., ::-1]
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    def swap(self, image: np.ndarray, face, target) -> np.ndarray:
        """A new RGB uint8 photo with the network's output for `face` pasted back; `image` is not modified."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"image must be RGB uint8 (H, W, 3), got {getattr(image, 'shape', type(image))}")
        c = self.contract
        matrix = swapper_matrix(np.asarray(face.landmarks, np.float64), c.size, c.template)
        crop = cv2.warpAffine(image, matrix, (c.size, c.size), flags=cv2.INTER_LINEAR, borderValue=0.0)
        return paste_back(image, self.run_crop(crop, self.identity_of(target)), matrix, self.border)
