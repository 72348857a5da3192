"""Find a file by local path or URL; URLs are downloaded once into a cache and checked on every use.

Every cached file has a small JSON beside it recording its URL and sha256 (trust on first use,
or the caller's pinned `expected_sha256`); the checksum is verified on every later use, so a
damaged or swapped cache file is never used silently. Downloads land in a `.part` file beside
the target and are moved into place with `os.replace`, so a cut download never looks complete;
failed connections are retried with backoff, resuming the `.part` file where the server allows
(HTTP Range), and a progress bar goes to stderr on a terminal.

The cache is per user, not relative to the working directory: `--cache-dir` / `cache_dir=`,
else $FACEBANK_CACHE, else the platform's user cache folder (platformdirs; ~/.cache/facebank).

Why not pooch: its cache is keyed by a known hash given up front, while facebank trusts the
first download of an unpinned URL and records its sha256 beside it (then checks it on every
use); the rest (streaming, retries, Range) is a few lines of urllib here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Union

from facebank.errors import InputError, SourceError
from facebank._io.files import atomic_write_json

__all__ = ["cache_record", "check_sha256_hex", "default_cache_dir", "fetch", "is_url", "sha256_file"]

log = logging.getLogger(__name__)

URL_SCHEMES = ("http", "https", "file")  # file:// is handy for mirrors, offline copies and tests
_CHUNK = 1 << 20
_TIMEOUT_S = 60
ATTEMPTS = 4  # one try and three retries, waiting BACKOFF_S * 2**k between them
BACKOFF_S = 1.0


def default_cache_dir() -> Path:
    """$FACEBANK_CACHE, else the user cache folder (platformdirs), else ~/.cache/facebank."""
    env = os.environ.get("FACEBANK_CACHE")
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs
    except ImportError:  # a leaner install: the XDG default
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "facebank"
    return Path(platformdirs.user_cache_dir("facebank", appauthor=False))


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


def check_url(url: str) -> None:
    """SourceError for a URL that cannot be fetched as written (no host, a port that is not a number
    from 1 to 65535, a file:// path that is missing or a folder), before any connection is tried."""
    try:
        parsed = urllib.parse.urlparse(url)
        port = parsed.port  # ValueError for "host:abc" or "host:70000"
    except ValueError as exc:
        raise SourceError(f"invalid URL {url!r}: {exc}") from None
    if parsed.scheme.lower() in ("http", "https"):
        if not parsed.hostname:
            raise SourceError(f"invalid URL {url!r}: it names no host")
        if port == 0:
            raise SourceError(f"invalid URL {url!r}: port 0")
    elif parsed.scheme.lower() == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        if path.is_dir():
            raise SourceError(f"{url} is a folder, not a file")
        if not path.is_file():
            raise SourceError(f"{url}: file not found: {path}")


def _retryable(exc: BaseException) -> bool:
    """A dropped connection, a timeout or a server-side error is worth another try; a 404 is not."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in (408, 429) or exc.code >= 500
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (ConnectionRefusedError, socket.gaierror)):  # nothing listens, no such host
        return False
    return isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError, OSError))


def _progress(what: str, total: int | None, start: int):
    """A rich bar on stderr when it is a terminal (or FACEBANK_PROGRESS=1); None otherwise."""
    if not (sys.stderr.isatty() or os.environ.get("FACEBANK_PROGRESS") == "1"):
        return None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True))
    bar.start()
    bar.add_task(what, total=total, completed=start)
    return bar


def _attempt(url: str, part: Path) -> None:
    """One try: append to `part` from where it ends (Range), or start over when the server ignores Range."""
    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is complete, or stale
            part.unlink()
        raise
    with resp:
        resumed = have and resp.status == 206
        length = resp.headers.get("Content-Length")
        total = (int(length) + (have if resumed else 0)) if length and length.isdigit() else None
        bar = _progress(os.path.basename(urllib.parse.urlparse(url).path) or "download", total,
                        have if resumed else 0)
        try:
            with open(part, "ab" if resumed else "wb") as out:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
                    if bar is not None:
                        bar.advance(0, len(chunk))
        finally:
            if bar is not None:
                bar.stop()
        if total is not None and part.stat().st_size != total:
            raise ConnectionError(f"connection closed after {part.stat().st_size} of {total} bytes")


def _download(url: str, target: Path) -> str:
    """Download url into `target.part` (retries with backoff, resumed by Range), then os.replace
    it onto target; returns the sha256. A failed download keeps the part for the next run."""
    part = target.with_name(target.name + ".part")
    local = urllib.parse.urlparse(url).scheme.lower() == "file"  # a local file: another try reads the same
    for k in range(ATTEMPTS):
        try:
            _attempt(url, part)
            break
        except Exception as exc:
            if local or k == ATTEMPTS - 1 or not _retryable(exc):
                raise
            log.warning("download of %s failed (%s); retry %d of %d", url, exc, k + 1, ATTEMPTS - 1)
            time.sleep(BACKOFF_S * 2 ** k)
    digest = sha256_file(part)
    os.replace(part, target)
    return digest


def cache_record(target: Path) -> Path:
    """The JSON record kept beside a cached file."""
    return target.with_name(target.name + ".json")


def _local(path: Path, expected_sha256: Optional[str], what: str) -> Path:
    if path.is_dir():
        raise SourceError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise SourceError(f"{what} file not found: {path}")
    if expected_sha256 is not None:
        _check_expected(sha256_file(path), expected_sha256, str(path))
    return path


def _cached(target: Path, meta_path: Path, expected_sha256: Optional[str], what: str) -> Path:
    """A cached download, checked against the sha256 recorded when it was downloaded."""
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


def fetch(path_or_url: Union[str, Path], *, cache_dir: Union[str, Path, None] = None, expected_sha256: Optional[str] = None,
          what: str = "file", offline_hint: str = "", default_name: str = "download",
          download: Optional[Callable[[str, Path], str]] = None) -> Path:
    """Local path -> that path (SourceError if missing). URL -> the cached copy, downloading it once.

    Args:
        path_or_url: a local file, or an http(s)/file URL.
        cache_dir: where downloads are kept (created if missing); None: default_cache_dir().
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
        return _local(Path(text).expanduser(), expected_sha256, what)

    check_url(text)
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    if cache_dir.exists() and not cache_dir.is_dir():
        raise SourceError(f"cache folder {cache_dir} is a file, not a folder")
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / _cache_name(text, default=default_name)
    meta_path = cache_record(target)
    if target.is_file() and meta_path.is_file():
        return _cached(target, meta_path, expected_sha256, what)

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
