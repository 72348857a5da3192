"""Deprecated path: picking for a real photo lives in `facebank.pick.photo` (re-exported here unchanged)."""

from facebank.pick.photo import PhotoFace, analyse_photo, pick_for_image  # noqa: F401
