"""Module-level picking: `facebank.pick_target(embedding, build=...)` with the session opened once.

The keyword signatures build one PickOptions, which goes through the session to the picker.
Sessions are cached per (build directory, bank path, dtype), so a pipeline that calls
`pick_target` per face pays for opening the bank and loading the vectors only on its first call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
import numpy as np

from facebank.index.build import resolve_build
from facebank.pick.options import Embedding, Embeddings, PickOptions, QueryFace, Threshold
from facebank.pick.session import FaceBank
from facebank.pick.targets import Target, TargetBatch

from facebank.pick.analyse import FaceAnalyser, ImageInput, PhotoFace
from facebank.pick.targets import ImagePick

_sessions: dict[tuple, FaceBank] = {}
_analysers: dict[tuple, FaceAnalyser] = {}
_lock = threading.Lock()


def _evict(session: FaceBank) -> None:
    """Closing a cached session (e.g. leaving `with open_facebank(B):`) drops it from the cache,
    so the next module-level call opens a fresh one instead of using a closed bank."""
    with _lock:
        for k, v in list(_sessions.items()):
            if v is session:
                del _sessions[k]


def open_facebank(build: str | os.PathLike | None = None, *, bank: str | os.PathLike | None = None,
                  dtype: str = "float32", secret: bytes | None = None) -> FaceBank:
    """The cached FaceBank for a build (default `index_builds/current`) and its bank."""
    build_dir = resolve_build(build)
    key = (str(build_dir), str(bank) if bank else None, dtype, secret)
    with _lock:
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = FaceBank(build_dir, bank=bank, dtype=dtype, secret=secret)
            session._on_close = _evict
        return session


def pick_target(embedding: Embedding, *, build: str | os.PathLike | None = None,
                bank: str | os.PathLike | None = None, space: str | None = None, age: float | None = None,
                gender: str | None = None, threshold: Threshold = None, mode: str = "random",
                rng: np.random.Generator | None = None, key: bytes | str | None = None,
                exclude: Iterable[str] = (), fallback: str = "error", margin: float | None = None,
                allow_looser: bool = False, secret: bytes | None = None) -> Target:
    """A random synthetic face guaranteed dissimilar to `embedding` in every space it gives.

    Args:
        embedding: (d,) array for `space` (or the build's only space), or a dict space -> (d,).
        build, bank: which index build (default `index_builds/current`) and bank (default: the
            one the build was made from).
        age, gender: the real face's age in years and gender; the target comes from that group.
        threshold: a cosine, or dict space -> cosine; default: the build's calibrated thresholds.
        mode: "random" (uniform over eligible targets) or "furthest" (the least similar one; with
            an ivf/hnsw build, the least similar of the index's proposals).
        rng / key: a numpy Generator, or a key (e.g. photo id + face index) that makes the pick
            reproducible under `secret` and unlinkable across keys.
        exclude: face ids never to return. fallback: "error" or "widen_age".
        margin: draw only among the furthest `margin` fraction of the candidates (None: the
            build's default; 1: every eligible face); see docs/privacy-margin.md.
        allow_looser: permit a threshold above the build's calibrated one (recorded in the Target).

    Raises:
        NoEligibleTarget, InvalidEmbedding, UnknownSpace, StaleIndex, InputError.
    """
    options = PickOptions(threshold=threshold, mode=mode, rng=rng, key=key, exclude=exclude, fallback=fallback,
                          margin=margin, allow_looser=allow_looser)
    face = QueryFace(embedding, space, age, gender)
    return open_facebank(build, bank=bank, secret=secret).pick_faces([face], options)[0]


def pick_targets(embeddings: Embeddings, *, build: str | os.PathLike | None = None,
                 bank: str | os.PathLike | None = None, space: str | None = None, ages: Sequence | None = None,
                 genders: Sequence | None = None, threshold: Threshold = None, mode: str = "random",
                 rng: np.random.Generator | None = None, keys: Sequence | None = None,
                 exclude: Iterable[str] = (), fallback: str = "error", margin: float | None = None,
                allow_looser: bool = False, secret: bytes | None = None) -> TargetBatch:
    """`pick_target` for a batch: (B, d) or dict space -> (B, d); one Target per row, as a
    TargetBatch (a sequence of Targets made when read, and its columns: rows, ids, ...)."""
    options = PickOptions(threshold=threshold, mode=mode, rng=rng, exclude=exclude, fallback=fallback,
                          margin=margin, allow_looser=allow_looser)
    return open_facebank(build, bank=bank, secret=secret).pick_rows(embeddings, options, space=space, ages=ages,
                                                                    genders=genders, keys=keys)


def pick_for_photo(faces: Sequence[Mapping], *, build: str | os.PathLike | None = None,
                   bank: str | os.PathLike | None = None, threshold: Threshold = None, mode: str = "random",
                   rng: np.random.Generator | None = None, key: bytes | str | None = None,
                   exclude: Iterable[str] = (), fallback: str = "error", margin: float | None = None,
                allow_looser: bool = False, secret: bytes | None = None) -> list[Target]:
    """Distinct targets for every real face of one photo, each dissimilar to all of them.

    `faces`: mappings with `embedding` (array or dict space -> array), optional `space`, `age`, `gender`.
    """
    options = PickOptions(threshold=threshold, mode=mode, rng=rng, key=key, exclude=exclude, fallback=fallback,
                          margin=margin, allow_looser=allow_looser)
    return open_facebank(build, bank=bank, secret=secret).pick_faces(faces, options)


def pick_for_image(image: ImageInput, *, build: str | os.PathLike | None = None, bank: str | os.PathLike | None = None,
                   models: Mapping[str, str | os.PathLike] | None = None, threshold: Threshold = None,
                   mode: str = "random", rng: np.random.Generator | None = None, key: bytes | str | None = None,
                   exclude: Iterable[str] = (), fallback: str = "error", margin: float | None = None,
                   allow_looser: bool = False, secret: bytes | None = None) -> list[ImagePick]:
    """One distinct target per face of a real photo (an RGB uint8 array, a path or encoded bytes).

    Detection, age/gender and embeddings in the build's spaces run with models loaded once per
    cached session; `models` gives the model path of each non-dlib space. Returns
    `ImagePick(face, target)`s ([] for a photo without a face): `face.box`, `face.landmarks`,
    `face.age`, `face.gender`, `face.embeddings`; `target.id`, `target.source_id`,
    `target.crop()`, `target.image()`.
    """
    return open_facebank(build, bank=bank, secret=secret).pick_for_image(
        image, models=models, threshold=threshold, mode=mode, rng=rng, key=key, exclude=exclude, fallback=fallback,
        margin=margin, allow_looser=allow_looser)


def analyse(image: ImageInput, *, spaces: Sequence[str] = ("dlib",), models: Mapping[str, str | os.PathLike] | None = None,
            detector: str = "dlib", detector_path: str | os.PathLike | None = None) -> list[PhotoFace]:
    """Every face of a photo (box, landmarks, age, gender, embeddings in `spaces`), no bank needed.

    The analyser for (spaces, models, detector) is cached: models load on the first call only.
    """
    key = (tuple(spaces), tuple(sorted((s, str(p)) for s, p in (models or {}).items())), detector,
           None if detector_path is None else str(detector_path))
    with _lock:
        analyser = _analysers.get(key)
        if analyser is None:
            analyser = _analysers[key] = FaceAnalyser(spaces, models=models, detector=detector,
                                                      detector_path=detector_path)
    return analyser.get(image)
