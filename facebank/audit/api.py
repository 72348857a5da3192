"""The public audit API for scripts and notebooks: `calibrate` labelled folders, run an `audit`.

    from facebank import audit
    report = audit.calibrate("labelled_aligned112", aligned=True, spaces=("dlib",), conservative=True)
    report.spaces["dlib"].at_far(1e-4)          # threshold, n_above, ci_low, ci_high, supported
    audit.audit(bank="bank.h5", build="index_builds/current", out="report/", labelled=...)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from facebank.audit.calibration import DEFAULT_FARS
from facebank.audit.calibration_report import CalibrationReport
from facebank.audit.calibration import calibrate as calibrate_embeddings
from facebank.audit.labelled import LabelledSet, fingerprint, load_labelled, read_identities
from facebank.errors import InputError
from facebank.progress import Progress

__all__ = ["LabelledSet", "audit", "calibrate", "load_embedders"]


def load_embedders(spaces: Sequence[str], models: Mapping[str, str] | None = None) -> dict[str, Any]:
    """space -> embedder: dlib needs no model; every other space needs `models[space]` (an ONNX path)."""
    from facebank.vision.registry import load_embedder

    models = dict(models or {})
    missing = [s for s in spaces if s != "dlib" and s not in models]
    if missing:
        raise InputError(f"space {missing[0]!r} needs its model: pass models={{{missing[0]!r}: PATH}}")
    return {s: load_embedder(s, None if s == "dlib" else models.get(s)) for s in spaces}


def _sets(labelled: Any, identities: Any, aligned: bool) -> list[LabelledSet]:
    if isinstance(labelled, LabelledSet):
        return [labelled]
    if isinstance(labelled, (str, os.PathLike)):
        return [LabelledSet(Path(labelled), Path(identities) if identities else None, aligned)]
    sets = list(labelled)
    if not sets or not all(isinstance(s, LabelledSet) for s in sets):
        raise InputError("labelled must be a folder or a non-empty list of LabelledSet")
    return sets


def calibrate(
    labelled: str | os.PathLike | LabelledSet | Sequence[LabelledSet],
    *,
    identities: str | os.PathLike | None = None,
    aligned: bool = False,
    spaces: Sequence[str] = ("dlib",),
    models: Mapping[str, str] | None = None,
    embedders: Mapping[str, Any] | None = None,
    fars: Sequence[float] = DEFAULT_FARS,
    conservative: bool | str = False,  # True/'far' | 'privacy' (facebank.audit.calibration)
    progress: Progress | None = None,
) -> CalibrationReport:
    """Calibrate thresholds on one or more labelled folders (photos, or aligned crops).

    Several sets are pooled, scoring only pairs inside each set (two sets labelled apart may
    hold one person under two ids). The report's `data` lists every set's counts and checksum.
    """
    sets = _sets(labelled, identities, aligned)
    emb = dict(embedders) if embedders is not None else load_embedders(spaces, models)
    vecs: dict[str, list[np.ndarray]] = {s: [] for s in emb}
    labels, subsets, data = [], [], []
    for k, ls in enumerate(sets):
        faces = load_labelled(ls, emb, progress=progress)
        if not faces.files:
            raise InputError(f"no face found in {ls.folder}")
        for s in emb:
            vecs[s].append(faces.embeddings[s])
        labels += [f"{k}:{w}" for w in faces.labels]  # ids are per set
        subsets += [k] * len(faces.files)
        fp = fingerprint(read_identities(Path(ls.folder), ls.csv), ls.csv)
        data.append({**fp, "aligned": ls.aligned, "faces_used": len(faces.files), "skipped": len(faces.skipped)})
    report = calibrate_embeddings({s: np.concatenate(v) for s, v in vecs.items()}, np.array(labels), fars=fars,
                                  conservative=conservative, subsets=np.array(subsets),
                                  source="; ".join(f"{d['folder']} ({d['faces_used']} faces)" for d in data))
    return dataclasses.replace(report, data=tuple(data))


def audit(**kwargs: Any) -> Path:
    """Write an audit report folder; the keywords of `facebank.audit.run.run_audit`. Returns report.md."""
    from facebank.audit.run import run_audit

    return run_audit(**kwargs)
