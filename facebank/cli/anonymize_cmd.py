"""`facebank anonymize`: photos and folders in, anonymised photos and JSON sidecars out, every result checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facebank.cli.choices import Mode, PhotoDetector, SwapFallback
from facebank.cli.common import cli_errors, emit, examples, parse_pairs, progress_bars
from facebank.config import DEFAULT_BUILDS

_COUNTS = (("faces_found", "faces found"), ("passed_first_try", "swapped, passing at the first try"),
           ("passed_after_retries", "swapped, passing after retries"), ("fallen_back", "fallen back"),
           ("kept", "kept (consent)"), ("missed", "missed (below --min-face)"), ("failed", "left matching (failed)"))


def _result_threshold(items: list[str]):
    from facebank.errors import InputError

    if len(items) == 1 and "=" not in items[0]:
        try:
            return float(items[0])
        except ValueError:
            raise InputError(f"--result-threshold takes SPACE=COS (or one COS), got {items[0]!r}") from None
    return parse_pairs(items, "--result-threshold", shape="SPACE=COS", kind=float) or None


def anonymize(
    inputs: Annotated[list[Path], typer.Argument(help="Photos, folders (recursive) or list files (.txt, a path a line); "
                                                      "or one video (.mp4 .avi .mov .mkv .webm).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the anonymised photos and their JSON sidecars; "
                                                          "for a video, the output video (its sidecar: OUT.json).")],
    build: Annotated[Optional[Path], typer.Option(help=f"Index build (default: {DEFAULT_BUILDS}/current).")] = None,
    bank: Annotated[Optional[Path], typer.Option("--bank", "-b", help="Bank (default: the build's).")] = None,
    swapper: Annotated[str, typer.Option(help="classical, onnx, blur, pixelate, or a registered name.")] = "classical",
    swapper_model: Annotated[Optional[Path], typer.Option(help="The onnx swapper's model file.")] = None,
    tries: Annotated[int, typer.Option(help="Swaps per face (each with a new target) before the fallback.")] = 3,
    fallback: Annotated[SwapFallback, typer.Option(
        help="When no swap passes: blur, pixelate, or none (the face is left and the photo fails).")] = SwapFallback.blur,
    result_threshold: Annotated[list[str], typer.Option(
        "--result-threshold", help="SPACE=COS the swapped face must stay at or below against the real face "
                                   "(repeatable; default: each space's FAR 1e-2 point where calibrated).")] = [],
    detector: Annotated[PhotoDetector, typer.Option(help="Face detector: dlib, scrfd or yunet.")] = PhotoDetector.dlib,
    detector_model: Annotated[Optional[Path], typer.Option(help="The scrfd or yunet .onnx file (or its folder).")] = None,
    min_face: Annotated[int, typer.Option(help="Faces smaller than this (pixels) are left and counted as missed.")] = 20,
    keep: Annotated[list[Path], typer.Option(
        "--keep", help="[SPACE=]EMB.npy or a folder of photos: people who agreed to be shown (repeatable).")] = [],
    key: Annotated[Optional[str], typer.Option(
        help="One key for every photo (an album); default: each photo's relative path.")] = None,
    mode: Annotated[Mode, typer.Option(help="Target pick: random or furthest.")] = Mode.random,
    model: Annotated[list[str], typer.Option(
        "--model", help="SPACE=PATH of a non-dlib embedder (default: the path the build was made with).")] = [],
    workers: Annotated[int, typer.Option(help="Worker processes (each loads the models once).")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts and failures as JSON on stdout.")] = False,
    max_gap: Annotated[int, typer.Option(help="Video: frames a tracked face may go undetected (filled).")] = 15,
    fill: Annotated[str, typer.Option(help="Video: fill those frames with the track's swap or its fallback.")] = "swap",
) -> None:
    """Swap every face of the photos with a picked synthetic target and check that the result no longer matches."""
    from facebank.anonymize import AnonymizeOptions, anonymize as run
    from facebank.cli.anonymize_video_cmd import is_video_run, run_video
    from facebank.errors import InputError

    with cli_errors():
        if out.exists() and not out.is_dir() and not is_video_run(inputs):
            raise InputError(f"--out {out} exists and is not a folder")
        if swapper_model is not None and swapper != "onnx":
            raise InputError("--swapper-model goes with --swapper onnx")
        options = AnonymizeOptions(
            swapper=swapper, swapper_options={"model": str(swapper_model)} if swapper_model else {}, tries=tries,
            fallback=fallback.value, result_threshold=_result_threshold(result_threshold), detector=detector.value,
            detector_model=None if detector_model is None else str(detector_model), min_face=min_face,
            keep=tuple(str(k) for k in keep), key=key, mode=mode.value,
            models=parse_pairs(model, "--model", shape="SPACE=PATH", must_exist=True) or None)
        if is_video_run(inputs):
            return run_video(inputs[0], out, options=options, build=build, bank=bank, max_gap=max_gap, fill=fill,
                             as_json=as_json)
        with progress_bars(unit="photos") as progress:
            summary = run(inputs, out, build=build, bank=bank, options=options, workers=workers, progress=progress)
        c = summary.counts
        lines = [f"{c.photos} photo(s) written, {c.photos_skipped} already done, {c.photos_failed} failed -> {out}"]
        lines += [f"  {label}: {getattr(c, name)}" for name, label in _COUNTS]
        lines += [f"  FAILED {rel}: {why}" for rel, why in sorted(summary.failures.items())]
        emit(summary.to_dict(), as_json=as_json, human="\n".join(lines))
        if not summary.ok:
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command(epilog=examples(
        "facebank anonymize photos/ --out anon/ --build out/current --detector yunet --detector-model yunet_s_dynamic.onnx",
        "facebank anonymize album/ --out anon/ --key my-album --keep consent/ --json",
        "facebank anonymize list.txt --out anon/ --fallback pixelate --workers 4",
        "facebank anonymize clip.mp4 --out anon/clip.mp4 --max-gap 15 --json",
    ))(anonymize)
