"""How to anonymise, as one frozen object built from the public keywords and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from facebank.errors import InputError

__all__ = ["AnonymizeOptions", "COLORS", "DETECTORS", "FALLBACKS"]

FALLBACKS = ("blur", "pixelate", "none")
DETECTORS = ("dlib", "scrfd", "yunet")
COLORS = ("rgb", "bgr")


@dataclass(frozen=True)
class AnonymizeOptions:
    """Everything `anonymize` and `anonymize_image` take besides the photos and the build.

    swapper: a registered name ("classical", "onnx", "blur", ...), a Swapper or a callable
        f(image, face, target) -> image; swapper_options go to the named swapper's factory.
    tries: swaps tried per face (each with a new target) before the fallback.
    fallback: "blur", "pixelate" or "none" (the face is left and the photo fails).
    result_threshold: cosine, or space -> cosine, that the swapped face must stay at or below
        against the real face in every space; None: each space's FAR 1e-2 point where known
        (never above the build's threshold), else the build's threshold.
    detector / detector_model / min_face: the face detector, its model file, and the size in
        pixels under which a face is not swapped (reported as missed).
    keep: .npy embedding files (SPACE=FILE.npy, or FILE.npy with a one-space build) or folders of
        photos of people who agreed to be shown: their faces are left as they are.
    key: one key for every photo (an album); None: each photo's key is its relative path.
    mode, pick_fallback, threshold: how targets are picked (facebank.pick_target).
    models: the model path of each non-dlib space; None: the paths the build was made with.
    color: the channel order of arrays passed in and returned ("rgb" or "bgr"); files are files.
    """

    swapper: Any = "classical"
    swapper_options: Mapping[str, Any] = field(default_factory=dict)
    tries: int = 3
    fallback: str = "blur"
    result_threshold: float | Mapping[str, float] | None = None
    detector: str = "dlib"
    detector_model: str | os.PathLike | None = None
    min_face: int = 20
    keep: tuple = ()
    key: str | None = None
    mode: str = "random"
    pick_fallback: str = "widen_age"
    threshold: float | Mapping[str, float] | None = None
    models: Mapping[str, str | os.PathLike] | None = None
    color: str = "rgb"
    jpeg_quality: int = 95

    def check(self) -> AnonymizeOptions:
        """Refuse bad values in one line before any model loads."""
        from facebank.pick.options import FALLBACKS as PICK_FALLBACKS
        from facebank.pick.options import MODES

        if isinstance(self.tries, bool) or not isinstance(self.tries, int) or not 1 <= self.tries <= 20:
            raise InputError(f"tries must be an integer in 1..20, got {self.tries!r}")
        if self.fallback not in FALLBACKS:
            raise InputError(f"fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}")
        if self.detector not in DETECTORS:
            raise InputError(f"detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}")
        if self.detector != "dlib" and self.detector_model is None:
            raise InputError(f"detector {self.detector!r} needs its model file (CLI: --detector-model PATH)")
        if isinstance(self.min_face, bool) or not isinstance(self.min_face, int) or not 0 <= self.min_face <= 10_000:
            raise InputError(f"min_face must be an integer number of pixels in 0..10000, got {self.min_face!r}")
        if self.color not in COLORS:
            raise InputError(f"color must be 'rgb' or 'bgr', got {self.color!r}")
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.pick_fallback not in PICK_FALLBACKS:
            raise InputError(f"pick_fallback must be one of {', '.join(PICK_FALLBACKS)}, got {self.pick_fallback!r}")
        if self.key is not None and (not isinstance(self.key, str) or not self.key):
            raise InputError(f"key must be a non-empty string, got {self.key!r}")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise InputError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        return self

    def describe(self) -> dict:
        """JSON-ready, for the sidecar (a callable swapper by its name)."""
        sw = self.swapper if isinstance(self.swapper, str) else getattr(self.swapper, "name", None) or getattr(
            self.swapper, "__name__", type(self.swapper).__name__)
        return {"swapper": sw, "tries": self.tries, "fallback": self.fallback, "detector": self.detector,
                "detector_model": None if self.detector_model is None else os.path.basename(str(self.detector_model)),
                "min_face": self.min_face, "mode": self.mode, "pick_fallback": self.pick_fallback}
