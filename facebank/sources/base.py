"""What every face source yields: one synthetic face image with where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MAX_FILE_BYTES = 64 << 20  # no face image (nor an export's CSV/JSON) is near this; a larger file is refused


def safe_name(name: str) -> tuple[str, bool]:
    """(a name that HDF5 can store, whether `name` was valid UTF-8): undecodable bytes become \\xNN."""
    try:
        name.encode("utf-8")
        return name, True
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), False


def inside(root, path) -> bool:
    """Whether `path`, symlinks resolved, stays inside `root` (a link out of a source is refused)."""
    from pathlib import Path

    try:
        Path(path).resolve().relative_to(Path(root).resolve())
        return True
    except (ValueError, OSError, RuntimeError):
        return False


@dataclass
class SourceItem:
    """One candidate face. `data` holds encoded bytes; generated faces may give `pixels` instead."""

    source: str  # "generated_photos" | "folder" | "stylegan"
    source_id: str  # stable within the source: a relative path, an API id, "seed=42"
    data: bytes | None = None
    metadata: dict = field(default_factory=dict)  # the source's own labels (age category, gender, ...)
    pixels: np.ndarray | None = None  # RGB uint8 (H, W, 3), when the source made the image itself
    rejection: tuple[str, str] | None = None  # (reason, detail) when the source itself could not read it
