"""What every face source yields: one synthetic face image with where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class SourceItem:
    """One candidate face. `data` holds encoded bytes; generated faces may give `pixels` instead."""

    source: str  # "generated_photos" | "folder" | "stylegan"
    source_id: str  # stable within the source: a relative path, an API id, "seed=42"
    data: bytes | None = None
    metadata: dict = field(default_factory=dict)  # the source's own labels (age category, gender, ...)
    pixels: np.ndarray | None = None  # RGB uint8 (H, W, 3), when the source made the image itself
    rejection: tuple[str, str] | None = None  # (reason, detail) when the source itself could not read it
