"""What the anonymize tests share: a build of real synthetic faces and swappers made of plain functions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest


def unchanged(image, face, target):
    """A swapper that returns the photo as it was: its result must never pass the check."""
    return image.copy()


def paste_target(image, face, target):
    """A swapper that pastes the target's own face, as it is, into the real face's box."""
    t = target.face()
    pixels = t.image()
    x0, y0, x1, y1 = (int(round(v)) for v in t.box)
    src = pixels[max(0, y0):y1, max(0, x0):x1]
    a0, b0 = max(0, int(round(face.box[0]))), max(0, int(round(face.box[1])))
    a1, b1 = min(image.shape[1], int(round(face.box[2]))), min(image.shape[0], int(round(face.box[3])))
    out = image.copy()
    out[b0:b1, a0:a1] = cv2.resize(src, (a1 - a0, b1 - b0), interpolation=cv2.INTER_AREA)
    return out


@pytest.fixture(scope="session")
def anon_build(small_build):
    """The dlib build of 40 real generated.photos faces (read-only)."""
    return small_build[2]


@pytest.fixture(scope="session")
def faces_dir(assets):
    return assets / "deepface_faces"


@pytest.fixture(scope="session")
def swappers():
    """The test swappers by name: `unchanged` and `paste_target`."""
    return {"unchanged": unchanged, "paste_target": paste_target}
