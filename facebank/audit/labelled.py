"""Identity-labelled real faces for calibration: folders of photos or of aligned 112 crops.

A labelled folder holds images and a CSV `file,identity_id`. Photos are detected with dlib and
the largest face is the labelled person (as `facebank audit` has always done). With
`aligned=True` every image already is a 5-point aligned crop (the ArcFace 112 template) and is
embedded as it is, without detection:

- ONNX recognisers take the crop directly (resized to their input size if it differs);
- dlib aligns itself (5-point shape predictor, then its own 150 px chip), so it is given the
  crop with a 32 px replicated border and a fixed face rectangle, DLIB_CROP_BOX: the mean of
  dlib's HOG detection boxes of the 61 `deepface_faces` photos mapped into their aligned crops.
  dlib's shape predictor then runs on the crop inside that rectangle. Measured on those 61
  photos, the crop's descriptor has cosine 0.995 (median; minimum 0.982) with the descriptor of
  the photo itself (`tests/audit/test_labelled.py` checks it), so calibrating dlib on aligned
  crops measures the same recogniser as on photos. (The border keeps dlib's chip, which reaches
  past the tight crop, from reading black pixels.)
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from facebank.errors import FaceRejected, InputError
from facebank.progress import Progress, ProgressEvent
from facebank.vision.dlib_models import DLIB_BOX_112

__all__ = ["DLIB_CROP_BOX", "LabelledFaces", "LabelledSet", "embed_crop", "fingerprint", "load_labelled",
           "read_identities"]

# left, top, right, bottom in the 112 crop's pixels (measured; see the module docstring).
DLIB_CROP_BOX = DLIB_BOX_112
DLIB_CROP_PAD = 32


@dataclass(frozen=True)
class LabelledSet:
    """One labelled folder: images + `identities` CSV; `aligned` when they are aligned crops."""

    folder: Path
    identities: Path | None = None  # default: folder/identities.csv
    aligned: bool = False

    @property
    def csv(self) -> Path:
        return Path(self.identities) if self.identities else Path(self.folder) / "identities.csv"


@dataclass
class LabelledFaces:
    """Embedded labelled faces: one row per face kept, in CSV order."""

    files: list[str]
    labels: list[str]
    embeddings: dict[str, np.ndarray]  # space -> (n, d)
    crops: list[np.ndarray]  # aligned 112 RGB
    skipped: list[dict] = field(default_factory=list)


def read_identities(folder: Path, identities: Path) -> list[tuple[Path, str]]:
    """(image path, identity) rows of a `file,identity_id` CSV; every file must exist."""
    try:
        with open(identities, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"file", "identity_id"} <= set(reader.fieldnames):
                raise InputError(f"{identities} needs the columns file,identity_id (has {reader.fieldnames})")
            rows = [(Path(folder) / r["file"], r["identity_id"]) for r in reader]
    except OSError as exc:
        raise InputError(f"cannot read identities CSV {identities}: {exc.strerror or exc}") from exc
    missing = [p.name for p, _ in rows if not p.is_file()]
    if missing:
        raise InputError(f"{identities} lists {len(missing)} files not in {folder}: {', '.join(missing[:5])}")
    return rows


def fingerprint(rows: Sequence[tuple[Path, str]], identities: Path) -> dict[str, Any]:
    """Provenance of a labelled set: counts and a sha256 over every (file, identity, file sha256)."""
    h = hashlib.sha256()
    for path, who in sorted(rows, key=lambda r: r[0].name):
        h.update(f"{path.name}\t{who}\t{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return {"folder": Path(identities).parent.name, "files": len(rows), "identities": len({w for _, w in rows}),
            "sha256": h.hexdigest(), "identities_csv_sha256": hashlib.sha256(Path(identities).read_bytes()).hexdigest()}


def embed_crop(crop: np.ndarray, space: str, embedder: Any) -> np.ndarray:
    """Embedding of an aligned RGB crop in `space` (module docstring: what dlib is given)."""
    from facebank.vision.types import Detection

    if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] != crop.shape[1]:
        raise InputError(f"an aligned crop must be square RGB, got {crop.shape}")
    s = crop.shape[0] / 112.0  # the box is in 112 px; larger aligned crops scale it
    if hasattr(embedder, "embed_crops"):
        size = embedder.contract.input_size
        if crop.shape[0] != size:
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR)
        return embedder.embed_crops(np.ascontiguousarray(crop)[None])[0]
    pad = round(DLIB_CROP_PAD * s)
    padded = np.ascontiguousarray(cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
    box = np.array(DLIB_CROP_BOX, dtype=np.float32) * s + pad
    return embedder.embed(padded, Detection(box=box, landmarks=np.zeros((5, 2), np.float32), score=1.0))


def _photo_faces(path: Path, detector: Any, embedders: Mapping[str, Any]):
    """(embeddings, crop) of the largest face of a photo, or None."""
    from facebank.vision.align import align_face
    from facebank.vision.image_io import decode_image

    image = decode_image(path.read_bytes(), name=path.name)
    dets = detector.detect(image)
    if not dets:
        return None
    d = max(dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
    return {s: e.embed(image, d) for s, e in embedders.items()}, align_face(image, d.landmarks, 112)


def load_labelled(labelled: LabelledSet, embedders: Mapping[str, Any], *, detector: Any = None,
                  progress: Progress | None = None) -> LabelledFaces:
    """Embed every face of a labelled set in every space of `embedders` (space -> embedder)."""
    from facebank.vision.image_io import decode_image

    rows = read_identities(Path(labelled.folder), labelled.csv)
    if not labelled.aligned and detector is None:
        from facebank.vision.registry import load_detector

        detector = load_detector("dlib")
    out = LabelledFaces([], [], {s: [] for s in embedders}, [])
    for k, (path, who) in enumerate(rows):
        if progress is not None:
            progress(ProgressEvent("calibration faces", k, len(rows)))
        try:
            if labelled.aligned:
                crop = decode_image(path.read_bytes(), name=path.name)
                got = {s: embed_crop(crop, s, e) for s, e in embedders.items()}, crop
            else:
                got = _photo_faces(path, detector, embedders)
        except FaceRejected as exc:
            out.skipped.append({"photo": path.name, "reason": exc.reason, "detail": exc.detail})
            continue
        if got is None:
            out.skipped.append({"photo": path.name, "reason": "no_face"})
            continue
        for s, v in got[0].items():
            out.embeddings[s].append(v)
        out.crops.append(got[1])
        out.files.append(path.name)
        out.labels.append(who)
    if progress is not None:
        progress(ProgressEvent("calibration faces", len(rows), len(rows)))
    out.embeddings = {s: np.stack(v) if v else np.zeros((0, 1), np.float32) for s, v in out.embeddings.items()}
    return out
