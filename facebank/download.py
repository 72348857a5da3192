"""Deprecated path: downloads and checksums live in `facebank._io.download` (kept so old imports keep working)."""

from facebank._io.download import cache_record, check_sha256_hex, fetch, is_url, sha256_file  # noqa: F401
