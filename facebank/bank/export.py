"""A bank face as files a swapper opens: its original image, its aligned crop and a JSON sidecar.

One exporter for `facebank pick --save` and `facebank show --out`, so both write the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facebank._io.files import atomic_write_bytes, atomic_write_json
from facebank.bank.store import Face

SIDECAR_FORMAT = "facebank.face/1"  # the sidecar's version: bump it when its keys change meaning
_EXT = {"jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp", "tiff": "tif"}


def face_record(face: Face) -> dict:
    """Everything the bank holds about a face except pixels and vectors, JSON-safe (missing: None)."""
    return {
        "id": face.id, "row": int(face.row), "source": face.source, "source_id": face.source_id,
        "attributes": {"age": _num(face.age), "gender": face.gender, "age_confidence": _num(face.age_confidence),
                       "gender_confidence": _num(face.gender_confidence), "age_source": face.age_source or None,
                       "gender_source": face.gender_source or None},
        "box": _points(face.box), "landmarks": _points(face.landmarks),
        "spaces": sorted(face.embeddings), "provenance": face.provenance,
    }


def export_face(folder: str | os.PathLike, stem: str, face: Face, extra: dict | None = None, *,
                names_prefix: str | None = None) -> dict:
    """Write `stem.image.<ext>` (the original bytes), `stem.crop.png` (the stored 112 crop) and
    `stem.json` (`extra`, the face's record and the file names) into `folder`; returns their paths.

    `names_prefix` also puts the file names at the sidecar's top level (`<prefix>image`, `<prefix>crop`),
    as the first pick sidecars had them."""
    from facebank.vision.image_io import encode_png, image_format

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = face.image_bytes()
    image_path = folder / f"{stem}.image.{_EXT.get(image_format(data, name=face.id), 'img')}"
    crop_path = folder / f"{stem}.crop.png"
    json_path = folder / f"{stem}.json"
    atomic_write_bytes(image_path, data)
    atomic_write_bytes(crop_path, encode_png(np.ascontiguousarray(face.crop)))
    sidecar = {**(extra or {}), "format": SIDECAR_FORMAT, "bank_face": face_record(face),
               "files": {"image": image_path.name, "crop": crop_path.name}}
    if names_prefix is not None:
        sidecar.update({f"{names_prefix}image": image_path.name, f"{names_prefix}crop": crop_path.name})
    atomic_write_json(json_path, sidecar)
    return {"image": str(image_path), "crop": str(crop_path), "json": str(json_path)}


def _num(value) -> float | None:
    v = float(value)
    return v if np.isfinite(v) else None


def _points(values) -> list | None:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0 or not np.isfinite(a).all():
        return None
    return a.round(2).tolist()
