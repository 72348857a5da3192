"""Any folder of synthetic face images (one face per image), read recursively in a stable order."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

from facebank.errors import SourceError
from facebank.sources.base import IMAGE_SUFFIXES, MAX_FILE_BYTES, SourceItem, inside, safe_name

SOURCE = "folder"


def _files(root: Path) -> Iterator[Path]:
    """Every non-hidden file under `root`. A sub-folder removed (or made unreadable) while the tree is
    listed is skipped with one warning line, not the end of the run."""
    def skipped(exc: OSError) -> None:
        sys.stderr.write(f"warning: folder {exc.filename} could not be read ({exc.strerror}); skipped\n")

    for folder, _, names in os.walk(root, onerror=skipped):
        for name in names:
            q = Path(folder) / name
            if not name.startswith(".") and q.is_file():
                yield q


def iter_folder(path: str | Path, *, source: str = SOURCE) -> Iterator[SourceItem]:
    """Every file under `path` with an image suffix; other files are rejected, not skipped silently."""
    root = Path(path)
    if not root.is_dir():
        raise SourceError(f"{root} is not a folder" if root.exists() else f"{root} does not exist")
    for p in sorted(_files(root)):
        rel, ok = safe_name(p.relative_to(root).as_posix())
        if not ok:  # one bad name is a rejection, never the end of the run
            yield SourceItem(source, rel, rejection=("unreadable", "file name is not valid UTF-8"))
            continue
        if not inside(root, p):
            yield SourceItem(source, rel, rejection=("unsafe_path", "a symlink that points outside the folder"))
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            if p.suffix.lower() in (".csv", ".json", ".txt", ".md"):
                continue  # sidecar metadata, not a face
            yield SourceItem(source, rel, rejection=("unsupported_format", f"suffix {p.suffix or '(none)'}"))
            continue
        try:
            if p.stat().st_size > MAX_FILE_BYTES:
                yield SourceItem(source, rel, rejection=("unreadable", f"larger than {MAX_FILE_BYTES >> 20} MiB"))
                continue
            data = p.read_bytes()
        except OSError as exc:
            yield SourceItem(source, rel, rejection=("unreadable", exc.strerror or str(exc)))
            continue
        yield SourceItem(source, rel, data=data)
