"""`facebank pick`: targets for an embedding file or for every face of a photo; `--save DIR` exports them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from facebank.cli.choices import Fallback, Mode
from facebank.cli.common import cli_errors, emit, examples, parse_pairs
from facebank.config import DEFAULT_BUILDS


def _thresholds(items: list[str]):
    """`--threshold SPACE=COS` (repeatable), or one bare COS for a single-space query."""
    from facebank.errors import InputError

    if len(items) == 1 and "=" not in items[0]:
        try:
            return float(items[0])
        except ValueError:
            raise InputError(f"--threshold takes SPACE=COS (or one COS), got {items[0]!r}") from None
    return parse_pairs(items, "--threshold", shape="SPACE=COS", kind=float) or None


def _export(folder: Path, i: int, target, row: dict, aligned: list[int]) -> dict:
    """The target's files (facebank.bank.export), with the pick and the target's landmarks in the sidecar."""
    from facebank.bank.export import export_face

    face = target.face()
    return export_face(folder, f"{i:02d}_{target.id}", face, {
        **row, "target_landmarks": np.asarray(face.landmarks).round(2).tolist(),
        "target_box": np.asarray(face.box).round(2).tolist(), "target_source": face.source},
        aligned=aligned, names_prefix="target_")


def pick(
    embedding: Annotated[Optional[Path], typer.Option(help="A .npy query embedding (d,) or batch (B, d).")] = None,
    image: Annotated[Optional[Path], typer.Option(help="A photo: one target per face, dissimilar to all of them.")] = None,
    space: Annotated[Optional[str], typer.Option(help="Space of --embedding (default: the build's only space).")] = None,
    age: Annotated[Optional[float], typer.Option(help="Age of the real face in years.")] = None,
    gender: Annotated[Optional[str], typer.Option(help="Gender of the real face: f or m.")] = None,
    mode: Annotated[Mode, typer.Option(help="random (uniform among eligible) or furthest.")] = Mode.random,
    fallback: Annotated[Fallback, typer.Option(help="When the group has none: error or widen_age.")] = Fallback.error,
    threshold: Annotated[list[str], typer.Option(
        "--threshold", help="SPACE=COS overriding the build's threshold (repeatable; a bare COS with one space).")] = [],
    margin: Annotated[Optional[float], typer.Option(
        help="Draw among the furthest MARGIN fraction of candidates (0 < MARGIN <= 1; 1: every eligible face; "
             "default: the build's).")] = None,
    allow_looser: Annotated[bool, typer.Option(
        "--allow-looser", help="Permit a --threshold above the build's calibrated one (weakens the guarantee).")] = False,
    seed: Annotated[Optional[int], typer.Option(help="Seed for a reproducible pick.")] = None,
    model: Annotated[list[str], typer.Option("--model", help="SPACE=PATH of a non-dlib embedder for --image.")] = [],
    build: Annotated[Optional[Path], typer.Option(help=f"Index build (default: {DEFAULT_BUILDS}/current).")] = None,
    bank: Annotated[Optional[Path], typer.Option("--bank", "-b", help="Bank (default: the build's).")] = None,
    save: Annotated[Optional[Path], typer.Option(
        "--save", "--export", help="Write each target's original image, aligned crop and a JSON sidecar here.")] = None,
    aligned: Annotated[list[int], typer.Option(
        "--aligned", help="With --save: also each target's crop a swapper takes at this size (112, 128, 224, 256; "
                          "repeatable).")] = [],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Pick synthetic targets guaranteed dissimilar to a query embedding or to the faces of a photo."""
    from facebank.pick.api import open_facebank
    from facebank.errors import InputError

    with cli_errors():
        if (embedding is None) == (image is None):
            raise InputError("give exactly one of --embedding or --image")
        if seed is not None and seed < 0:
            raise InputError(f"--seed must be >= 0, got {seed}")
        if aligned and save is None:
            raise InputError("--aligned needs --save DIR")
        thr = _thresholds(threshold)
        if margin is not None:
            from facebank.index.margin import check_margin

            check_margin(margin)  # before the session opens or a model loads
        session = open_facebank(build, bank=bank)
        rng = np.random.default_rng(seed)
        rows, targets = [], []
        if image is not None:
            from facebank.pick.photo import pick_for_image

            models = parse_pairs(model, "--model", shape="SPACE=PATH", must_exist=True)
            for p in pick_for_image(session, image, models=models, threshold=thr, mode=mode.value, rng=rng,
                                    fallback=fallback.value, margin=margin, allow_looser=allow_looser,
                                    require_face=True):
                rows.append(p.to_dict())
                targets.append(p.target)
        else:
            if not embedding.is_file():
                raise InputError(f"embedding file {embedding} does not exist")
            try:
                q = np.load(embedding, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise InputError(f"{embedding} is not a .npy array ({exc})") from exc
            if not isinstance(q, np.ndarray):  # an .npz archive
                q.close()
                raise InputError(f"{embedding} is an .npz archive; give one .npy array (d,) or (B, d)")
            if q.ndim not in (1, 2) or q.dtype.kind not in "fiu":
                raise InputError(f"{embedding} must hold a real (d,) or (B, d) array, got {q.dtype} {q.shape}")
            queries = q if q.ndim == 2 else q[None, :]
            for qi in queries:
                t = session.pick_target(qi, space=space, age=age, gender=gender, threshold=thr, mode=mode.value,
                                        rng=rng, fallback=fallback.value, margin=margin, allow_looser=allow_looser)
                rows.append({"face": None, "target": t.to_dict()})
                targets.append(t)
        if save is not None:
            for i, (row, t) in enumerate(zip(rows, targets)):
                row["files"] = _export(save, i, t, dict(row), aligned)
        lines = []
        for i, r in enumerate(rows):
            t = r["target"]
            sims = ", ".join(f"{s} {v:.4f} <= {t['thresholds'][s]:.4f}" for s, v in t["similarities"].items())
            face = r.get("face")
            who = f"face {i} {face['box']} {face['gender']} ~{face['age']:.0f}y" if face else f"query {i}"
            lines.append(f"{who} -> {t['id']} ({t['group']}{', ' + t['fallback'] if t['fallback'] else ''}): {sims}")
        if save is not None:
            lines.append(f"saved {len(rows)} target(s) into {save}")
        emit({"build": str(session.build_dir), "picks": rows}, as_json=as_json, human="\n".join(lines))


def register(app: typer.Typer) -> None:
    app.command(epilog=examples(
        "facebank pick --image photo.jpg --json",
        "facebank pick --image photo.jpg --save out/ --seed 1",
        "facebank pick --embedding q.npy --age 34 --gender f --mode furthest --threshold dlib=0.9",
    ))(pick)
