"""Find a file by local path or URL; URLs are downloaded once into a cache and checked on every use.

Every cached file has a small JSON beside it recording its URL and sha256 (trust on first use,
or the caller's pinned `expected_sha256`); the checksum is verified on every later use, so a
damaged or swapped cache file is never used silently. Downloads land in a temporary file beside
the target and are moved into place with `os.replace`, so a cut download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Union

from facebank.errors import InputError, SourceError
from facebank._io.files import atomic_write_json

__all__ = ["cache_record", "check_sha256_hex", "fetch", "is_url", "sha256_file"]

log = logging.getLogger(__name__)

URL_SCHEMES = ("http", "https", "file")  # file:// is handy for mirrors, offline copies and tests
_CHUNK = 1 << 20
_TIMEOUT_S = 60


def sha256_file(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_url(text: Union[str, Path]) -> bool:
    return urllib.parse.urlparse(str(text)).scheme.lower() in URL_SCHEMES


def check_sha256_hex(value: Optional[str]) -> Optional[str]:
    """None, or `value` as 64 lower-case hex digits (InputError otherwise)."""
    if value is None:
        return None
    text = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise InputError(f"a sha256 is 64 hex digits, got {value!r}")
    return text


def _cache_name(url: str, default: str) -> str:
    """A readable, collision-free file name: the URL's base name plus a short hash of the URL."""
    base = os.path.basename(urllib.parse.urlparse(url).path) or default
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


def cache_record(target: Path) -> Path:
    """The JSON record kept beside a cached file."""
    return target.with_name(target.name + ".json")


def fetch(path_or_url: Union[str, Path], *, cache_dir: Union[str, Path], expected_sha256: Optional[str] = None,
          what: str = "file", offline_hint: str = "", default_name: str = "download",
          download: Optional[Callable[[str, Path], str]] = None) -> Path:
    """Local path -> that path (SourceError if missing). URL -> the cached copy, downloading it once.

    Args:
        path_or_url: a local file, or an http(s)/file URL.
        cache_dir: where downloads are kept (created if missing).
        expected_sha256: hex digest the file must have (for a local path too); None = trust the
            first download and check the recorded sha256 from then on.
        what: a word for messages ("network", "model pack").
        offline_hint: appended to the message when the download fails (what to do instead).
        default_name: the cached file's base name when the URL's path has none.
        download: (url, target) -> sha256, used in place of the built-in downloader.

    A pinned mismatch on download removes the file; a cached file whose content no longer
    matches its record raises SourceError naming the file to delete.
    """
    text = str(path_or_url)
    if not is_url(text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise SourceError(f"{what} file not found: {path}")
        if expected_sha256 is not None:
            _check_expected(sha256_file(path), expected_sha256, str(path))
        return path

    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / _cache_name(text, default=default_name)
    meta_path = cache_record(target)
    if target.is_file() and meta_path.is_file():
        try:
            recorded = json.loads(meta_path.read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"cache record {meta_path} is unreadable; delete it and {target.name}") from exc
        actual = sha256_file(target)
        if actual != recorded:
            raise SourceError(f"cached {what} {target} changed since download (sha256 {actual}, recorded "
                              f"{recorded}); delete it to download again")
        _check_expected(actual, expected_sha256, f"cached {what} {target}")
        return target

    log.info("downloading %s to %s", text, target)
    try:
        digest = (download or _download)(text, target)
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        hint = f"; {offline_hint}" if offline_hint else ""
        raise SourceError(f"cannot download {text} ({reason}){hint}") from exc
    try:
        _check_expected(digest, expected_sha256, f"download of {text}")
    except SourceError:
        target.unlink(missing_ok=True)
        raise
    atomic_write_json(meta_path, {"url": text, "sha256": digest, "size": target.stat().st_size,
                            "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return target
