"""What a pick returns: a `Target` (the synthetic face and the exact similarities that admitted it)
and an `ImagePick` (one real face of a photo with its target).

A target reads its face through the session that picked it, so a bank replaced on disk is
reopened (or refused) and a closed session refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from facebank.bank import Face
from facebank.pick.analyse import PhotoFace


@dataclass(frozen=True)
class Target:
    """A synthetic face picked for a query, with the exact similarity in every space."""

    id: str
    row: int  # bank row
    source_id: str  # the face's id in its source (file name, seed, generated.photos id)
    similarities: dict[str, float]
    thresholds: dict[str, float]
    age: float
    gender: str
    group: str  # the target's own age/gender group
    requested_group: str  # what the query asked for ("any" when unconstrained)
    fallback: str | None  # None, or what the fallback policy did ("widen_age:20-29")
    mode: str
    method: str  # rejection | scan | furthest | index_furthest (proposed by an ivf/hnsw index)
    margin: float = 1.0  # the privacy margin the pick was drawn with (1: every eligible face)
    cut: dict | None = None  # the margin's cut (MarginCut.to_dict: tau per space, share, sample, exact, relaxed)
    looser: bool = False  # a threshold above the build's was allowed (allow_looser=True)
    _session: object = field(default=None, repr=False, compare=False)

    # Reads go through the session, not a bank handle kept here: the session reopens a bank that
    # was replaced on disk (and refuses one whose content changed), and refuses once it is closed.
    def face(self) -> Face:
        """Everything the bank holds about the target (crop, landmarks, attributes, vectors)."""
        return self._session.live_bank().face(self.row)

    def crop(self) -> np.ndarray:
        """The aligned 112x112 RGB crop."""
        return self._session.live_bank().crop(self.row)

    def image_bytes(self) -> bytes:
        """The target's original encoded image, as it entered the bank."""
        return self._session.live_bank().image_bytes(self.row)

    def image(self) -> np.ndarray:
        """The target's original image decoded to RGB uint8 (H, W, 3)."""
        return self.face().image()

    def aligned(self, size: int = 112, template: str | None = None) -> np.ndarray:
        """The target's original image warped to the crop a swapper takes, RGB uint8 (size, size, 3):
        112 ArcFace, 128 inswapper (InsightFace's shifted template), 224 SimSwap, 256 FFHQ-style.
        `template` ("arcface", "simswap", "ffhq") overrides the size's default (facebank.vision.align)."""
        from facebank.vision.align import align_to_swapper

        face = self.face()
        return align_to_swapper(face.image(), face.landmarks, size, template)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass(frozen=True)
class ImagePick:
    """One real face of a photo and the synthetic target picked for it.

    Unpacks as `(face, target)`, as the private pick_for_image's tuples did.
    """

    face: PhotoFace
    target: Target

    def __iter__(self) -> Iterator:
        return iter((self.face, self.target))

    def to_dict(self) -> dict:
        return {"face": self.face.to_dict(), "target": self.target.to_dict()}
