"""A real photo -> its faces (box, age, gender, embeddings per space) -> one target per face."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebank.errors import FaceRejected, InputError
from facebank.pick.options import PickOptions
from facebank.pick.session import FaceBank, Target
from facebank.vision.image_io import decode_image
from facebank.vision.registry import load_attribute_model, load_detector, load_embedder


@dataclass
class PhotoFace:
    box: list[float]
    age: float
    gender: str
    embeddings: dict[str, np.ndarray]


def analyse_photo(image: np.ndarray, *, spaces: list[str], models: dict[str, str] | None = None,
                  detector: str = "dlib", min_face_px: int = 20) -> list[PhotoFace]:
    """Every face of an RGB photo with its age, gender and an embedding in each of `spaces`.

    `models` gives the ONNX path of each non-dlib space (for example {"arcface": "buffalo_l/"}).
    """
    models = models or {}
    det = load_detector(detector)
    attr = load_attribute_model()
    embedders = {}
    for s in spaces:
        if s != "dlib" and s not in models:
            raise InputError(f"space {s!r} needs its model: pass --model {s}=PATH")
        embedders[s] = load_embedder(s, models.get(s))
    faces = []
    for d in det.detect(image):
        box = np.asarray(d.box, dtype=float)
        if min(box[2] - box[0], box[3] - box[1]) < min_face_px:
            continue
        a = attr.estimate(image, d)
        faces.append(PhotoFace(box=[round(float(v), 1) for v in box], age=float(a.age), gender=a.gender,
                               embeddings={s: e.embed(image, d) for s, e in embedders.items()}))
    return faces


def pick_for_image(session: FaceBank, path: str | Path, *, models: dict[str, str] | None = None,
                   mode: str = "random", rng=None, key=None, fallback: str = "error") -> list[tuple[PhotoFace, Target]]:
    """Distinct targets for all faces of the photo at `path`, each dissimilar to every face in it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"photo {path} does not exist")
    try:
        image = decode_image(path.read_bytes(), name=str(path))
    except FaceRejected as exc:
        raise InputError(f"cannot read photo {path}: {exc.detail or exc.reason}") from exc
    faces = analyse_photo(image, spaces=session.spaces, models=models)
    if not faces:
        raise InputError(f"no face found in {path}")
    targets = session.pick_faces([{"embedding": f.embeddings, "age": f.age, "gender": f.gender} for f in faces],
                                 PickOptions(mode=mode, rng=rng, key=key, fallback=fallback))
    return list(zip(faces, targets))
