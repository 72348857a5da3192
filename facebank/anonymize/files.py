"""Photos in, photos and sidecars out: which photos, where each one goes, and whether it is done.

Inputs are photos, folders (walked recursively) or list files (one photo or folder a line).
Each photo goes to OUT/<its path relative to its input's folder>, with a JSON sidecar of the same
stem beside it. The image is written first and the sidecar last, both atomically, so a sidecar
that reads back complete means the photo is done and a re-run skips it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebank._io.files import atomic_write_bytes, atomic_write_json
from facebank.anonymize.consent import PHOTO_SUFFIXES
from facebank.anonymize.report import SIDECAR_FORMAT
from facebank.errors import InputError

__all__ = ["Job", "clear_leftovers", "collect", "encode_like", "is_done", "write_result"]

LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass(frozen=True)
class Job:
    """One photo to anonymise: where it is, and its path relative to the output folder."""

    src: Path
    rel: str  # posix, e.g. "a/b.jpg"

    def image_out(self, out: Path) -> Path:
        return out / self.rel

    def sidecar(self, out: Path) -> Path:
        return (out / self.rel).with_suffix(".json")


def _walk(folder: Path, skip: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (Path(root) / d).resolve() != skip)
        found += [Path(root) / f for f in sorted(files) if Path(f).suffix.lower() in PHOTO_SUFFIXES]
    return found


def _list_file(path: Path) -> list[Path]:
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            items.append(p if p.is_absolute() else path.parent / p)
    if not items:
        raise InputError(f"list file {path} names no photo")
    return items


def collect(inputs: list[str | os.PathLike], out: Path) -> list[Job]:
    """Every photo of `inputs`, each with its relative output path; two photos with one path are refused."""
    out_resolved = out.resolve()
    jobs: dict[str, Job] = {}
    queue = [Path(p) for p in inputs]
    if not queue:
        raise InputError("give at least one photo, folder or list file")
    listed = 0
    while queue:
        p = queue.pop(0)
        if p.is_dir():
            pairs = [(q, q.relative_to(p).as_posix()) for q in _walk(p, out_resolved)]
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            listed += 1
            if listed > 100:
                raise InputError("list files nest more than 100 deep")
            queue[:0] = _list_file(p)
            continue
        elif p.is_file():
            pairs = [(p, p.name)]
        else:
            raise InputError(f"input {p} does not exist")
        for src, rel in pairs:
            if rel in jobs and jobs[rel].src.resolve() != src.resolve():
                raise InputError(f"two inputs write {out / rel}: {jobs[rel].src} and {src}")
            jobs.setdefault(rel, Job(src, rel))
    stems = {}
    for rel in jobs:
        stem = Path(rel).with_suffix("").as_posix()
        if stem in stems:
            raise InputError(f"{stems[stem]} and {rel} would share the sidecar {stem}.json")
        stems[stem] = rel
    return list(jobs.values())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_done(job: Job, out: Path, data: bytes) -> bool:
    """The photo's sidecar reads back complete, it passed, it was made from these bytes, and its image is there."""
    try:
        side = json.loads(job.sidecar(out).read_text())
        image = job.image_out(out)
        return (side.get("format") == SIDECAR_FORMAT and side.get("status") == "ok"
                and side.get("input_sha256") == sha256(data) and image.stat().st_size == side.get("output_bytes"))
    except (OSError, ValueError, AttributeError):
        return False


def clear_leftovers(job: Job, out: Path) -> None:
    """Remove the temporary files a killed run left for this photo (atomic writes' `.NAME.*.tmp`)."""
    for final in (job.image_out(out), job.sidecar(out)):
        if final.parent.is_dir():
            for tmp in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
                tmp.unlink(missing_ok=True)


def encode_like(pixels: np.ndarray, fmt: str, jpeg_quality: int = 95) -> bytes:
    """`pixels` (RGB) encoded in the input's own format ('jpeg', 'png', 'webp', 'bmp', 'tiff')."""
    import cv2

    from facebank.vision.image_encode import ImageFormat, encode_image

    if fmt == "jpeg":
        return encode_image(pixels, ImageFormat("jpeg", jpeg_quality))
    if fmt in ("png", "webp"):
        return encode_image(pixels, ImageFormat(fmt, 6 if fmt == "png" else 101))
    ok, buf = cv2.imencode(".tiff" if fmt == "tiff" else f".{fmt}", np.ascontiguousarray(pixels[:, :, ::-1]))
    if not ok:
        raise InputError(f"could not encode the result as {fmt}")
    return buf.tobytes()


def write_result(job: Job, out: Path, data: bytes, encoded: bytes, sidecar: dict) -> None:
    """The image, then the sidecar (its presence marks the photo done), each atomically."""
    atomic_write_bytes(job.image_out(out), encoded)
    atomic_write_json(job.sidecar(out), {**sidecar, "input": job.rel, "input_sha256": sha256(data),
                                         "output": Path(job.rel).name, "output_bytes": len(encoded)})
