"""Deprecated path: the atomic writes live in `facebank._io.files` (kept so old imports keep working)."""

from facebank._io.files import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: F401
