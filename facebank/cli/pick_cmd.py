"""`facebank pick`: targets for an embedding file or for every face of a photo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from facebank.cli.common import cli_errors, emit, parse_pairs
from facebank.config import DEFAULT_BUILDS


def pick(
    embedding: Annotated[Optional[Path], typer.Option(help="A .npy query embedding (d,) or batch (B, d).")] = None,
    image: Annotated[Optional[Path], typer.Option(help="A photo: one target per face, dissimilar to all of them.")] = None,
    space: Annotated[Optional[str], typer.Option(help="Space of --embedding (default: the build's only space).")] = None,
    age: Annotated[Optional[float], typer.Option(help="Age of the real face in years.")] = None,
    gender: Annotated[Optional[str], typer.Option(help="Gender of the real face: f or m.")] = None,
    mode: Annotated[str, typer.Option(help="random (uniform among eligible) or furthest.")] = "random",
    fallback: Annotated[str, typer.Option(help="When the group has none: error or widen_age.")] = "error",
    threshold: Annotated[Optional[float], typer.Option(help="Override the build's threshold (single space).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for a reproducible pick.")] = None,
    model: Annotated[list[str], typer.Option("--model", help="SPACE=PATH of a non-dlib embedder for --image.")] = [],
    build: Annotated[Optional[Path], typer.Option(help=f"Index build (default: {DEFAULT_BUILDS}/current).")] = None,
    bank: Annotated[Optional[Path], typer.Option("--bank", "-b", help="Bank (default: the build's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Pick synthetic targets guaranteed dissimilar to a query embedding or to the faces of a photo."""
    from facebank.pick.api import open_facebank
    from facebank.errors import InputError

    with cli_errors():
        if (embedding is None) == (image is None):
            raise InputError("give exactly one of --embedding or --image")
        session = open_facebank(build, bank=bank)
        rng = np.random.default_rng(seed)
        rows = []
        if image is not None:
            from facebank.pick.photo import pick_for_image

            models = parse_pairs(model, "--model", shape="SPACE=PATH", must_exist=True)
            for p in pick_for_image(session, image, models=models, mode=mode, rng=rng, fallback=fallback,
                                    require_face=True):
                rows.append(p.to_dict())
        else:
            if not embedding.is_file():
                raise InputError(f"embedding file {embedding} does not exist")
            try:
                q = np.load(embedding, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise InputError(f"{embedding} is not a .npy array ({exc})") from exc
            queries = q if q.ndim == 2 else q[None, :]
            for qi in queries:
                t = session.pick_target(qi, space=space, age=age, gender=gender, threshold=threshold, mode=mode,
                                        rng=rng, fallback=fallback)
                rows.append({"target": t.to_dict()})
        lines = []
        for i, r in enumerate(rows):
            t = r["target"]
            sims = ", ".join(f"{s} {v:.4f} <= {t['thresholds'][s]:.4f}" for s, v in t["similarities"].items())
            face = r.get("face")
            who = f"face {i} {face['box']} {face['gender']} ~{face['age']:.0f}y" if face else f"query {i}"
            lines.append(f"{who} -> {t['id']} ({t['group']}{', ' + t['fallback'] if t['fallback'] else ''}): {sims}")
        emit({"build": str(session.build_dir), "picks": rows}, as_json=as_json, human="\n".join(lines))


def register(app: typer.Typer) -> None:
    app.command()(pick)
