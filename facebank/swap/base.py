"""The swapper interface and its registry (names -> factories), like the embedders' registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from facebank.errors import InputError

__all__ = ["Swapper", "get_swapper", "register_swapper", "swapper_names"]


@runtime_checkable
class Swapper(Protocol):
    """Puts `target`'s face onto `face` in `image`.

    image: the whole photo, RGB uint8 (H, W, 3), never modified in place.
    face: the real face (facebank.pick.analyse.PhotoFace: box, 5 landmarks, embeddings).
    target: the synthetic face picked for it (facebank.pick.targets.Target: image(), face(), aligned()).
    Returns a new RGB uint8 array of the same shape.
    """

    name: str

    def swap(self, image: np.ndarray, face, target) -> np.ndarray: ...


class _CallableSwapper:
    """A plain function `f(image, face, target) -> image` behind the Swapper interface."""

    def __init__(self, fn: Callable, name: str | None = None):
        self._fn = fn
        self.name = name or getattr(fn, "__name__", "callable")

    def swap(self, image: np.ndarray, face, target) -> np.ndarray:
        return self._fn(image, face, target)


_FACTORIES: dict[str, Callable[..., Swapper]] = {}
# The built-in swappers, imported on first use (OpenCV and ONNX Runtime load only when asked for).
_BUILTIN = {
    "classical": ("facebank.swap.classical", "ClassicalSwapper"),
    "onnx": ("facebank.swap.onnx_swapper", "OnnxSwapper"),
    "blur": ("facebank.swap.fallbacks", "BlurSwapper"),
    "pixelate": ("facebank.swap.fallbacks", "PixelateSwapper"),
}


def register_swapper(name: str, factory: Callable[..., Swapper]) -> None:
    """Make `get_swapper(name, **options)` return `factory(**options)`."""
    if not isinstance(name, str) or not name:
        raise InputError(f"a swapper name must be a non-empty string, got {name!r}")
    _FACTORIES[name] = factory


def swapper_names() -> list[str]:
    """Registered and built-in swapper names, sorted."""
    return sorted(set(_FACTORIES) | set(_BUILTIN))


def get_swapper(spec, **options) -> Swapper:
    """A Swapper from a registered name, a Swapper instance or a callable `f(image, face, target)`."""
    if isinstance(spec, str):
        factory = _FACTORIES.get(spec)
        if factory is None and spec in _BUILTIN:
            import importlib

            module, attr = _BUILTIN[spec]
            factory = getattr(importlib.import_module(module), attr)
        if factory is None:
            raise InputError(f"unknown swapper {spec!r}; choose one of {', '.join(swapper_names()) or '(none)'} "
                             "or pass a callable f(image, face, target) -> image")
        return factory(**options)
    if isinstance(spec, Swapper):
        return spec
    if callable(spec):
        return _CallableSwapper(spec)
    raise InputError(f"a swapper is a name, a Swapper or a callable, got {type(spec).__name__}")
