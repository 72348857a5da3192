"""Consent: people who agreed to be shown, as embeddings or photos; their faces are left as they are.

A face is kept when it matches one kept person *above the build threshold in every space the keep
gives* (a recogniser at the build's operating point would say "same person" in each): the
privacy side, since a face wrongly kept is shown, a face wrongly swapped is only anonymised.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facebank.errors import InputError, UnknownSpace
from facebank.pick.analyse import FaceAnalyser, PhotoFace

__all__ = ["KeepSet", "load_keep", "PHOTO_SUFFIXES"]

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class KeepSet:
    """Unit embeddings of the kept people: space -> (n, d), with one label per row."""

    vectors: Mapping[str, np.ndarray] = field(default_factory=dict)
    labels: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def match(self, face: PhotoFace, thresholds: Mapping[str, float]) -> dict | None:
        """The best kept person that `face` matches above the threshold in every given space, or None."""
        if not self.labels:
            return None
        spaces = list(self.vectors)
        sims = {}
        for s in spaces:
            q = np.asarray(face.embeddings[s], np.float64)
            sims[s] = self.vectors[s] @ (q / max(np.linalg.norm(q), 1e-12))  # NaN: the row has no vector here
        table = np.array([sims[s] for s in spaces])
        given = ~np.isnan(table)
        over = np.array([sims[s] > thresholds[s] for s in spaces])
        above = np.all(over | ~given, axis=0) & given.any(axis=0)
        if not above.any():
            return None
        i = int(np.argmax(np.where(above, np.where(given, table, np.inf).min(axis=0), -np.inf)))
        spaces = [s for k, s in enumerate(spaces) if given[k, i]]
        return {"label": self.labels[i], "similarities": {s: round(float(sims[s][i]), 4) for s in spaces},
                "thresholds": {s: round(float(thresholds[s]), 6) for s in spaces}}


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _from_npy(item: str, spaces: list[str], dims: Mapping[str, int]) -> tuple[dict, list[str]]:
    space, sep, path = item.partition("=")
    if not sep:
        path, space = item, None
        if len(spaces) != 1:
            raise InputError(f"keep {item}: give SPACE={item} (the build has {', '.join(spaces)})")
        space = spaces[0]
    if space not in spaces:
        raise UnknownSpace(f"keep {item}: space {space!r} is not in this build; it has: {', '.join(spaces)}")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"keep {path} is not a .npy array ({exc})") from exc
    a = np.atleast_2d(a) if isinstance(a, np.ndarray) else None
    if a is None or a.ndim != 2 or a.dtype.kind not in "fiu" or a.shape[1] != dims[space] or not np.isfinite(a).all():
        raise InputError(f"keep {path}: expected a finite ({dims[space]},) or (n, {dims[space]}) array of {space} "
                         "embeddings")
    return {space: _unit(a)}, [f"{Path(path).name}[{i}]" for i in range(len(a))]


def _from_photos(folder: Path, analyser: FaceAnalyser, spaces: list[str]) -> tuple[dict, list[str]]:
    """The largest face of each photo in `folder` (a consent photo shows its person biggest)."""
    rows: dict[str, list] = {s: [] for s in spaces}
    labels = []
    for p in sorted(q for q in folder.rglob("*") if q.suffix.lower() in PHOTO_SUFFIXES and q.is_file()):
        faces = analyser.get(p)
        if not faces:
            raise InputError(f"keep photo {p} has no face the detector finds")
        f = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        for s in spaces:
            rows[s].append(f.embeddings[s])
        labels.append(str(p.relative_to(folder)))
    if not labels:
        raise InputError(f"keep folder {folder} holds no photo ({', '.join(PHOTO_SUFFIXES)})")
    return {s: _unit(np.stack(v)) for s, v in rows.items()}, labels


def load_keep(items: Iterable[str | os.PathLike], *, spaces: list[str], dims: Mapping[str, int],
              analyser: FaceAnalyser) -> KeepSet:
    """A KeepSet from .npy files (SPACE=FILE.npy) and folders of photos; several sources add up.

    Rows from different sources are different people, so every source must give the same spaces
    (a person is kept on all of them): .npy files of several spaces are taken one space each.
    """
    parts: list[tuple[dict, list[str]]] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text.partition("=")[2] if "=" in text and not Path(text).exists() else text)
        if path.is_dir():
            parts.append(_from_photos(path, analyser, spaces))
        elif path.is_file():
            parts.append(_from_npy(text, spaces, dims))
        else:
            raise InputError(f"keep {text}: no such file or folder")
    if not parts:
        return KeepSet()
    # A person given in one space only is matched in that space: group the rows by their spaces.
    given = sorted({s for v, _ in parts for s in v})
    vectors: dict[str, np.ndarray] = {}
    labels: list[str] = []
    for s in given:
        vectors[s] = np.concatenate([v[s] if s in v else np.full((len(lab), dims[s]), np.nan) for v, lab in parts])
    for _, lab in parts:
        labels += lab
    return KeepSet(vectors, tuple(labels))
