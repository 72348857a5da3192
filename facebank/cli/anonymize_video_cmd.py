"""`facebank anonymize VIDEO --out OUT.mp4`: the video branch of `facebank anonymize` (one video in, one out)."""

from __future__ import annotations

from pathlib import Path

import typer

from facebank.cli.common import emit, progress_bars

_TRACK_COUNTS = (("swapped", "swapped"), ("filled", "filled (gaps)"), ("fallen_back", "fallen back"),
                 ("check_failures", "result-check failures"))


def is_video_run(inputs: list[Path]) -> bool:
    from facebank.anonymize.video_io import is_video

    return len(inputs) == 1 and is_video(inputs[0])


def run_video(src: Path, out: Path, *, options, build, bank, max_gap: int, fill: str, as_json: bool) -> None:
    """Anonymise one video; prints the per-track figures (or the sidecar as JSON); exits 1 when a frame failed."""
    from facebank.anonymize.video_api import anonymize_video
    from facebank.errors import InputError

    if out.is_dir():
        raise InputError(f"--out {out} is a folder: a video goes to a video file (e.g. --out {out / src.name})")
    with progress_bars(unit="frames") as progress:
        result = anonymize_video(src, out, build=build, bank=bank, options=options, max_gap=max_gap, fill=fill,
                                 progress=progress)
    r = result.report
    lines = [f"{r.frames} frame(s), {len(r.tracks)} track(s), {r.rounds} round(s)"
             + (" (already done)" if result.skipped else "") + f" -> {result.out} (+ {result.sidecar.name}); "
             "no audio"]
    for t in r.tracks:
        counts = t.to_dict()["counts"]
        target = f"target {t.target['id']}" if t.target else t.reason
        lines.append(f"  track {t.id} frames {t.first}-{t.last} ({t.frames}): {t.action}, {target}; "
                     + ", ".join(f"{label} {counts[k]}" for k, label in _TRACK_COUNTS)
                     + ("" if t.pooled is None else f"; pooled check {'passed' if t.pooled['passed'] else 'FAILED'}"))
    emit(result.to_dict(), as_json=as_json, human="\n".join(lines))
    if not result.passed:
        raise typer.Exit(1)
