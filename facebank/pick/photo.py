"""A real photo -> its faces (box, landmarks, age, gender, embeddings) -> one distinct target per face."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from facebank.errors import InputError
from facebank.pick.analyse import ImageInput
from facebank.pick.options import PickOptions, QueryFace, Threshold
from facebank.pick.session import FaceBank
from facebank.pick.targets import ImagePick


def pick_for_image(session: FaceBank, image: ImageInput, *, models: Mapping[str, str] | None = None,
                   threshold: Threshold = None, mode: str = "random",
                   rng: np.random.Generator | None = None, key: bytes | str | None = None,
                   exclude: Iterable[str] = (), fallback: str = "error", margin: float | None = None,
                   allow_looser: bool = False, require_face: bool = False) -> list[ImagePick]:
    """Distinct targets for all faces of `image`, each dissimilar to every face in it.

    The session's analyser (models loaded once per session and `models`) does the detection;
    a photo without a face gives [] (or an InputError with `require_face`, as the CLI wants).
    """
    # built (and so validated) before any model runs
    options = PickOptions(threshold=threshold, mode=mode, rng=rng, key=key, exclude=exclude, fallback=fallback,
                          margin=margin, allow_looser=allow_looser)
    faces = session.analyse(image, models=models)
    if not faces:
        if require_face:
            raise InputError(f"no face found in {image if not isinstance(image, (np.ndarray, bytes)) else 'the image'}")
        return []
    targets = session.pick_faces([QueryFace(f.embeddings, None, f.age, f.gender) for f in faces], options)
    return [ImagePick(f, t) for f, t in zip(faces, targets)]
