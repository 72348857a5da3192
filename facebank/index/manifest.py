"""The build manifest (`index_builds/<build>/manifest.json`): what a build is and what it binds to.

Documented in MANIFEST.md beside this file. A reader refuses other kinds and unknown versions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from facebank.errors import IndexBuildError

KIND = "facebank.index_build"
FORMAT_VERSION = 1


def read_manifest(build_dir: str | os.PathLike) -> dict:
    path = Path(build_dir) / "manifest.json"
    if not path.is_file():
        raise IndexBuildError(f"{build_dir} is not an index build (no manifest.json)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexBuildError(f"{path} is not valid JSON ({exc})") from exc
    if data.get("kind") != KIND:
        raise IndexBuildError(f"{path} is not a facebank index build manifest (kind {data.get('kind')!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise IndexBuildError(
            f"{path} has manifest format version {data.get('format_version')}; this facebank reads {FORMAT_VERSION}"
        )
    return data
