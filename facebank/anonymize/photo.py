"""One photo: detect every face, keep the consenting, pick, swap, check, retry, fall back.

`Anonymizer` holds what loads once (the session's bank and build, the analyser, the swappers,
the consent set, the thresholds) and anonymises photo after photo.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from facebank.anonymize.check import check_result, cosine, iou
from facebank.anonymize.consent import KeepSet, load_keep
from facebank.anonymize.options import AnonymizeOptions
from facebank.anonymize.report import Attempt, FaceReport, PhotoReport
from facebank.anonymize.thresholds import result_thresholds
from facebank.errors import FacebankError, InputError, NoEligibleTarget
from facebank.index import groups as G
from facebank.pick.analyse import FaceAnalyser, PhotoFace, as_rgb
from facebank.pick.options import PickOptions
from facebank.pick.session import FaceBank
from facebank.pick.targets import Target
from facebank.swap import get_swapper

__all__ = ["Anonymizer", "build_models"]

# A coarse pass for large faces and a fine one for small faces (facebank.vision.multiscale): one
# input size either loses 40 px faces in 1080p or close-up portraits; see docs/anonymize.md.
_DETECTOR_OPTIONS = {"scrfd": {"fine_size": 1280}, "yunet": {"fine_size": 1920}}


def build_models(session: FaceBank, given) -> dict[str, str]:
    """The model file of each non-dlib space: `given`, else the path the build was made with."""
    import json

    models = {s: str(p) for s, p in (given or {}).items()}
    cfg = session.build_dir / "build_config.json"
    if cfg.is_file():
        try:
            spaces = json.loads(cfg.read_text()).get("pipeline", {}).get("spaces", [])
        except (ValueError, AttributeError):
            spaces = []
        for sp in spaces if isinstance(spaces, list) else []:
            if isinstance(sp, dict) and sp.get("space") in session.spaces and sp.get("model_path"):
                models.setdefault(sp["space"], sp["model_path"])
    return {s: p for s, p in models.items() if s != "dlib"}


def _validate(out, image: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(out, np.ndarray) or out.shape != image.shape or out.dtype != np.uint8:
        raise InputError(f"swapper {name!r} returned {getattr(out, 'dtype', type(out).__name__)} "
                         f"{getattr(out, 'shape', '')}, expected uint8 {image.shape}")
    return out


class Anonymizer:
    """Anonymise photos against one build; models, swappers and thresholds load once."""

    def __init__(self, session: FaceBank, options: AnonymizeOptions):
        self.session, self.options = session, options.check()
        self.encoded: bytes | None = None  # the bytes the last run(encode=...) checked
        self.swapper = get_swapper(options.swapper, **dict(options.swapper_options))
        self.fallback = None if options.fallback == "none" else get_swapper(options.fallback)
        self.thresholds = result_thresholds(session, options.result_threshold)
        self.result_t = {s: v["value"] for s, v in self.thresholds.items()}
        sha = {s: m.model_sha256 for s, m in session.manifest.spaces.items()}
        # min_face_px=0: small faces are seen and reported as missed rather than silently dropped.
        self.analyser = FaceAnalyser(session.spaces, models=build_models(session, options.models),
                                     detector=options.detector, detector_path=options.detector_model, min_face_px=0,
                                     expected_sha256=sha, detector_options=_DETECTOR_OPTIONS.get(options.detector))
        self.keep = KeepSet()
        if options.keep:
            dims = {s: session.manifest.spaces[s].dim for s in session.spaces}
            self.keep = load_keep(options.keep, spaces=session.spaces, dims=dims, analyser=self.analyser)

    def provenance(self, key: str | None) -> dict:
        m = self.session.manifest
        return {"build_id": m.build_id, "build": str(self.session.build_dir),
                "bank_content_hash": m.bank.content_hash, "key": key, **self.options.describe(),
                "swapper": self.swapper.name, "kept_people": len(self.keep),
                "result_thresholds": self.thresholds, "pick_thresholds": dict(self.session.thresholds)}

    # -- picking --
    def _pick(self, faces: list[PhotoFace], key: str | None, exclude: set[str], mode: str | None = None) -> list[Target]:
        o = self.options
        options = PickOptions(threshold=o.threshold, mode=mode or o.mode, key=key, exclude=sorted(exclude),
                              fallback=o.pick_fallback)
        return self.session.pick_faces([{"embedding": f.embeddings, "age": f.age, "gender": f.gender}
                                        for f in faces], options)

    def _repick(self, faces, i: int, key: str | None, n: int, exclude: set[str]) -> Target | None:
        """Face i's n-th target: another one, none of `exclude`, still dissimilar to every face."""
        try:
            return self._pick(faces, None if key is None else f"{key}|face{i}|try{n}", exclude)[i]
        except NoEligibleTarget:
            return None

    # -- the photo --
    def run(self, image, key: str | None = None, encode=None) -> tuple[np.ndarray, PhotoReport]:
        """(anonymised RGB image, report) for an RGB array, a path or bytes.

        `encode` (RGB -> file bytes): the whole-photo re-check then runs on the photo as written,
        decoded again (JPEG's rounding moves a similarity by up to ~1e-3), and `self.encoded`
        holds the bytes that passed it."""
        rgb = as_rgb(image)
        faces = self.analyser.get(rgb)
        out = rgb.copy()
        reports: dict[int, FaceReport] = {}
        todo = []
        for i, f in enumerate(faces):
            if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) < self.options.min_face:
                reports[i] = FaceReport(i, f.to_dict(), "missed", reason=f"smaller than min_face "
                                                                         f"{self.options.min_face} px: left as it is")
                continue
            kept = self.keep.match(f, self.session.thresholds)
            if kept is not None:
                reports[i] = FaceReport(i, f.to_dict(), "kept", kept=kept, reason="matches a kept (consenting) person")
                continue
            todo.append(i)
        targets: list[Target | None] = [None] * len(faces)
        why = ""
        if todo:
            try:
                targets = list(self._pick(faces, key, set()))  # every face checked against every face
            except NoEligibleTarget as exc:
                why = f"no eligible target: {exc}"
        for i in todo:
            out, reports[i] = self._face(out, faces, i, targets, key, why)
        if todo:
            out = self._recheck(out, faces, todo, reports)
        self.encoded = None
        if todo and encode is not None:
            for _ in range(2):  # a face the written photo still shows gets the fallback, then once more
                data = encode(out)
                decoded = as_rgb(data)
                checked = self._recheck(decoded, faces, todo, reports)
                if checked is decoded:
                    self.encoded, out = data, decoded
                    break
                out = checked
        report = PhotoReport(tuple(reports[i] for i in range(len(faces))), self.provenance(key))
        return out, report

    def _face(self, image: np.ndarray, faces: list[PhotoFace], i: int, targets: list, key, why: str):
        face, target = faces[i], targets[i]
        tried: set[str] = set()
        attempts = []
        for n in range(self.options.tries):
            if target is None:
                why = why or "no other eligible target"
                break
            tried.add(target.id)
            try:
                result = _validate(self.swapper.swap(image, face, target), image, self.swapper.name)
            except FacebankError as exc:  # a swapper that cannot do this face: the next target, then the fallback
                why = f"the swapper failed: {type(exc).__name__}: {exc}"
                attempts.append(Attempt(target.to_dict(), None, error=why))
                result = None
            if result is not None:
                chk = check_result(self.analyser, result, face, self.result_t)
                match = None
                if chk.age is not None:
                    match = f"{G.age_group(chk.age)}/{chk.gender}" == target.group
                attempts.append(Attempt(target.to_dict(), chk, group_match=match))
                if chk.passed:
                    targets[i] = target
                    return result, FaceReport(i, face.to_dict(), "swapped", swapper=self.swapper.name,
                                              attempts=tuple(attempts))
                why = "the result still matches the real face" if chk.redetected else "no face re-detected in the result"
            others = {t.id for j, t in enumerate(targets) if t is not None and j != i}
            target = self._repick(faces, i, key, n + 1, tried | others) if n + 1 < self.options.tries else None
        return self._fall_back(image, face, i, tuple(attempts), why)

    def _recheck(self, image: np.ndarray, faces: list[PhotoFace], todo: list[int], reports: dict) -> np.ndarray:
        """The finished photo analysed whole, as a recogniser would see it: a treated face found there
        above a result threshold (the crop's detection differs a little, and a later swap may overlap
        an earlier face) gets the fallback, or fails."""
        found = self.analyser.get(image)
        for i in todo:
            r = reports[i]
            if r.action not in ("swapped", "fallback"):
                continue
            sims = [{s: cosine(g.embeddings[s], faces[i].embeddings[s]) for s in self.result_t}
                    for g in found if iou(g.box, faces[i].box) >= 0.3]
            worst = {s: max((m[s] for m in sims), default=None) for s in self.result_t}
            still = [m for m in sims if any(m[s] > t for s, t in self.result_t.items())]
            reports[i] = replace(r, recheck={s: None if v is None else round(v, 4) for s, v in worst.items()})
            if not still:
                continue
            why = "the whole-photo re-check still matches the real face"
            if r.action == "fallback" or self.fallback is None:
                reports[i] = replace(reports[i], action="failed", reason=f"{why}; {r.reason}".strip("; "))
                continue
            image, fixed = self._fall_back(image, faces[i], i, r.attempts, why)
            reports[i] = replace(fixed, recheck=reports[i].recheck)
        return image

    def _fall_back(self, image, face: PhotoFace, i: int, attempts: tuple, why: str):
        base = FaceReport(i, face.to_dict(), "failed", swapper=self.swapper.name, attempts=attempts)
        if self.fallback is None:
            return image, replace(base, reason=f"{why}; fallback none: the face is left as it is")
        result = _validate(self.fallback.swap(image, face, None), image, self.fallback.name)
        chk = check_result(self.analyser, result, face, self.result_t, need_face=False)
        if not chk.passed:
            return result, replace(base, fallback=self.fallback.name, fallback_check=chk,
                                   reason=f"{why}; the {self.fallback.name} fallback still matches the real face")
        return result, replace(base, action="fallback", fallback=self.fallback.name, fallback_check=chk, reason=why)
