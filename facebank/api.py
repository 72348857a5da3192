"""Deprecated path: module-level picking lives in `facebank.pick.api` (re-exported here unchanged)."""

from facebank.pick.api import open_facebank, pick_for_photo, pick_target, pick_targets  # noqa: F401
