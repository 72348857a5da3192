"""The public entry points: `facebank.anonymize` (photos, folders) and `anonymize_image` (one image).

Colour order: files are files (decoded to RGB inside); arrays are RGB unless `color="bgr"`
(OpenCV's `cv2.imread` order), and the anonymised array comes back in the order it went in.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facebank.anonymize.options import AnonymizeOptions
from facebank.anonymize.report import PhotoReport
from facebank.errors import InputError
from facebank.progress import Progress

__all__ = ["AnonymizedImage", "anonymize", "anonymize_image"]

_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # session -> {options: Anonymizer}
_lock = threading.Lock()


@dataclass(frozen=True)
class AnonymizedImage:
    """An anonymised image (same shape and colour order as given) and what was done to each face."""

    image: np.ndarray
    report: PhotoReport

    @property
    def passed(self) -> bool:
        """No face is left matching its real face (False only with fallback "none", or a fallback that failed)."""
        return self.report.passed

    def to_dict(self) -> dict:
        return self.report.to_dict()


def _options(options: AnonymizeOptions | None, kw: Mapping[str, Any]) -> AnonymizeOptions:
    if options is not None and kw:
        raise InputError(f"give options= or keywords ({', '.join(sorted(kw))}), not both")
    try:
        return (options or AnonymizeOptions(**kw)).check()
    except TypeError as exc:  # an unknown keyword
        raise InputError(str(exc)) from None


def anonymize_image(session, image, *, options: AnonymizeOptions | None = None, key: str | None = None,
                    **kw) -> AnonymizedImage:
    """Anonymise one image (an array in `color` order, a path or bytes) against `session` (a FaceBank).

    Models, swappers and consent embeddings load on the first call with these options and are
    reused by later calls on the same session. `key` makes the picks reproducible (None: random).
    Keywords are AnonymizeOptions' fields (swapper, tries, fallback, result_threshold, detector,
    detector_model, min_face, keep, mode, color, ...).
    """
    from facebank.anonymize.photo import Anonymizer

    opts = _options(options, kw)
    with _lock:
        per = _cache.setdefault(session, {})
        ident = repr(opts)
        anon = per.get(ident)
        if anon is None:
            anon = per[ident] = Anonymizer(session, opts)
    bgr = opts.color == "bgr" and isinstance(image, np.ndarray)
    if bgr:
        if image.ndim != 3 or image.shape[-1] not in (3, 4):
            raise InputError(f"a BGR image must be (H, W, 3), got shape {image.shape}")
        image = np.ascontiguousarray(image[:, :, 2::-1])
    out, report = anon.run(image, key=key)
    return AnonymizedImage(np.ascontiguousarray(out[:, :, ::-1]) if bgr else out, report)


def anonymize(inputs, out: str | os.PathLike | None = None, *, build: str | os.PathLike | None = None,
              bank: str | os.PathLike | None = None, options: AnonymizeOptions | None = None, workers: int = 1,
              progress: Progress | None = None, key: str | None = None, **kw):
    """Anonymise photos into `out`, one image array in memory, or a video file into a video file `out`
    (facebank.anonymize_video).

    inputs: photos, folders (walked recursively) and list files (one path a line); each photo is
        written to `out` at its path relative to its input's folder, with a JSON sidecar of the
        same stem, and a re-run skips the photos already done. Returns a RunSummary (counts,
        failures). Or one image array (RGB, or BGR with color="bgr"): returns an AnonymizedImage
        and writes nothing (`out` must be None).
    build, bank: the index build (default `index_builds/current`) and its bank (default: the build's).
    workers: processes for folders; each opens the build and loads the models once.
    progress: ProgressEvents (photos done of photos listed; frames for a video).
    key: one key for every photo (an album shares its picks); None: each photo's relative path.
    Other keywords: AnonymizeOptions' fields (swapper="classical", tries=3, fallback="blur", ...).
    """
    if isinstance(inputs, np.ndarray):
        from facebank.pick.api import open_facebank

        if out is not None:
            raise InputError("an image array is anonymised in memory: give no out=, or give paths")
        return anonymize_image(open_facebank(build, bank=bank), inputs, options=options, key=key, **kw)
    from facebank.anonymize.video_io import is_video

    if isinstance(inputs, (str, os.PathLike)) and is_video(inputs) and out is not None and is_video(out):
        from facebank.anonymize.video_api import anonymize_video  # a video file to a video file

        return anonymize_video(inputs, out, build=build, bank=bank, options=options, key=key, progress=progress, **kw)
    from facebank.anonymize.run import anonymize as run

    if out is None:
        raise InputError("give out= (the folder the anonymised photos and sidecars go to)")
    opts = _options(options, kw if key is None else {**kw, "key": key})
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not isinstance(inputs, Sequence):
        inputs = list(inputs)
    return run(inputs, out, build=build, bank=bank, options=opts, workers=workers, progress=progress)
