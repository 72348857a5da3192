"""`facebank pick`: targets for an embedding file or for every face of a photo; `--save DIR` exports them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from facebank.cli.choices import Fallback, Mode
from facebank.cli.common import build_option, cli_errors, emit, examples, parse_pairs


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


def _run_folder(save: Path) -> Path:
    """A new folder inside `save` for this run (`<UTC time>`, `-2`, ... when taken): runs never mix."""
    import time

    save.mkdir(parents=True, exist_ok=True)
    base = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for k in range(1, 10_000):
        folder = save / (base if k == 1 else f"{base}-{k}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run folder name in {save}")


def _run_record(session, query: Path, kind: str, seed: int, mode: str, fallback: str, thr, picks: int) -> dict:
    """What made this run, enough to make it again: build, bank and its content hash, the query file, seed, options."""
    import hashlib
    import time

    from facebank._version import __version__

    return {"format": "facebank.pick_run/1", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "facebank": __version__,
            "build": {"path": str(session.build_dir), "build_id": session.manifest.build_id},
            "bank": {"path": str(session.bank.path), "content_hash": session.bank.content_hash},
            kind: {"path": str(query.resolve()), "sha256": hashlib.sha256(query.read_bytes()).hexdigest()},
            "seed": seed, "mode": mode, "fallback": fallback, "thresholds": dict(session.thresholds) if thr is None
            else thr, "threshold_given": thr is not None, "picks": picks}


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
    build: Annotated[Optional[Path], build_option()] = None,
    bank: Annotated[Optional[Path], typer.Option("--bank", "-b", help="Bank (default: the build's).")] = None,
    save: Annotated[Optional[Path], typer.Option(
        "--save", help="Write each target's original image, aligned crop and a JSON sidecar here.")] = None,
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
        # A saved run records its seed, so that it can be made again: draw one when none is given.
        seed_used = seed if seed is not None or save is None else int(np.random.SeedSequence().entropy % 2**32)
        rng = np.random.default_rng(seed_used)
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
            for qi in _queries(embedding):
                t = session.pick_target(qi, space=space, age=age, gender=gender, threshold=thr, mode=mode.value,
                                        rng=rng, fallback=fallback.value, margin=margin, allow_looser=allow_looser)
                rows.append({"face": None, "target": t.to_dict()})
                targets.append(t)
        run_dir = None
        if save is not None:
            run_dir = _run_folder(save)
            run = _run_record(session, image if image is not None else embedding, "photo" if image is not None
                              else "embedding", seed_used, mode.value, fallback.value, thr, len(rows))
            for i, (row, t) in enumerate(zip(rows, targets)):
                row["files"] = _export(run_dir, i, t, {**row, "run": run}, aligned)
            from facebank._io.files import atomic_write_json

            atomic_write_json(run_dir / "run.json", run)
        emit({"build": str(session.build_dir), "picks": rows, "saved": str(run_dir) if run_dir else None},
             as_json=as_json, human=_human(rows, run_dir))


def _queries(embedding: Path) -> np.ndarray:
    """The (B, d) queries of an `--embedding` file: one real .npy array (d,) or (B, d), never unpickled."""
    from facebank.errors import InputError

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
    return q if q.ndim == 2 else q[None, :]


def _human(rows: list[dict], run_dir: Path | None) -> str:
    """One line per pick (the face or query, the target, its group and similarities), then where it was saved."""
    lines = []
    for i, r in enumerate(rows):
        t = r["target"]
        sims = ", ".join(f"{s} {v:.4f} <= {t['thresholds'][s]:.4f}" for s, v in t["similarities"].items())
        face = r.get("face")
        who = f"face {i} {face['box']} {face['gender']} ~{face['age']:.0f}y" if face else f"query {i}"
        lines.append(f"{who} -> {t['id']} ({t['group']}{', ' + t['fallback'] if t['fallback'] else ''}): {sims}")
    if run_dir is not None:
        lines.append(f"saved {len(rows)} target(s) into {run_dir} (the run: {run_dir / 'run.json'})")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command(epilog=examples(
        "facebank pick --image photo.jpg --json",
        "facebank pick --image photo.jpg --save out/ --seed 1",
        "facebank pick --embedding q.npy --age 34 --gender f --mode furthest --threshold dlib=0.9",
    ))(pick)
