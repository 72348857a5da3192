"""Find a network file: a local path as is, or an http(s) URL downloaded once into a cache.

Every cached file has a small JSON beside it recording its URL and sha256; the checksum is
verified on every later use, so a damaged or swapped cache file is never loaded silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional, Union

from facebank.errors import SourceError

__all__ = ["FFHQ_URL", "resolve_network", "sha256_file"]

log = logging.getLogger(__name__)

# Official StyleGAN2-ADA FFHQ 1024 generator (NVIDIA Source Code License, non-commercial).
# Its sha256 is not known here; the cache records it on first download.
FFHQ_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl"

_URL_SCHEMES = ("http", "https", "file")  # file:// is handy for mirrors and tests
_CHUNK = 1 << 20
_TIMEOUT_S = 60


def sha256_file(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_name(url: str) -> str:
    """A readable, collision-free file name: the URL's base name plus a short hash of the URL."""
    base = os.path.basename(urllib.parse.urlparse(url).path) or "network.pkl"
    base = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in base)
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base}"


def _check_expected(actual: str, expected: Optional[str], what: str) -> None:
    if expected is not None and actual != expected.lower():
        raise SourceError(f"{what} has sha256 {actual}, expected {expected.lower()}")


def _download(url: str, target: Path) -> str:
    """Stream url into a temp file beside target, then os.replace; returns the sha256."""
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def resolve_network(path_or_url: Union[str, Path], *, cache_dir: Union[str, Path],
                    expected_sha256: Optional[str] = None) -> Path:
    """Local path -> that path (SourceError if missing). URL -> the cached copy, downloading it once.

    expected_sha256, when given, must match (for a local path too). A cached file whose content
    no longer matches its recorded sha256 raises SourceError naming the file to delete.
    """
    text = str(path_or_url)
    scheme = urllib.parse.urlparse(text).scheme.lower()
    if scheme not in _URL_SCHEMES:
        path = Path(text).expanduser()
        if not path.is_file():
            raise SourceError(f"network file not found: {path}")
        if expected_sha256 is not None:
            _check_expected(sha256_file(path), expected_sha256, str(path))
        return path

    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / _cache_name(text)
    meta_path = target.with_name(target.name + ".json")
    if target.is_file() and meta_path.is_file():
        try:
            recorded = json.loads(meta_path.read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"cache record {meta_path} is unreadable; delete it and {target.name}") from exc
        actual = sha256_file(target)
        if actual != recorded:
            raise SourceError(f"cached network {target} changed since download (sha256 {actual}, recorded "
                              f"{recorded}); delete it to download again")
        _check_expected(actual, expected_sha256, f"cached network {target}")
        return target

    log.info("downloading %s to %s", text, target)
    try:
        digest = _download(text, target)
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SourceError(f"cannot download {text} ({reason}); if offline, download it elsewhere and pass "
                          "the local path with --network") from exc
    try:
        _check_expected(digest, expected_sha256, f"download of {text}")
    except SourceError:
        target.unlink(missing_ok=True)
        raise
    _write_json(meta_path, {"url": text, "sha256": digest, "size": target.stat().st_size,
                            "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return target
