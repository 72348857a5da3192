"""`facebank generate`: StyleGAN2-ADA faces into the bank, resumable, encoded and annotated in worker processes."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from facebank.cli.choices import NoiseMode
from facebank.cli.common import bank_option, cli_errors, emit, examples, progress_bars
from facebank.cli.engine_opts import EngineOpt, RayAddressOpt, engine_config


def generate(
    network: Annotated[str, typer.Option(help="Network pickle (path or URL; URLs are cached once, checksummed).")],
    bank: Annotated[Path, bank_option("The bank file; created if missing.")] = None,
    seeds: Annotated[str, typer.Option(help="Seeds, e.g. 0-9999 or 1,5,10-20.")] = "0-9999",
    psi: Annotated[float, typer.Option(help="Truncation psi (1 = none).")] = 0.7,
    cutoff: Annotated[Optional[int], typer.Option(help="Truncate only the first CUTOFF w rows.")] = None,
    class_idx: Annotated[Optional[int], typer.Option("--class", help="Class of a conditional network.")] = None,
    noise_mode: Annotated[NoiseMode, typer.Option(help="const (deterministic), random or none.")] = NoiseMode.const,
    batch: Annotated[str, typer.Option(help="Batch size, or auto.")] = "auto",
    device: Annotated[str, typer.Option(help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N.")] = "auto",
    image_format: Annotated[str, typer.Option(
        help="How images are stored: png (lossless, Huffman-only, the default), png:LEVEL, webp (lossless) or jpeg[:QUALITY].")
    ] = "png",
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Where downloaded networks are kept (default: $FACEBANK_CACHE, else the user cache folder).")] = None,
    sha256: Annotated[Optional[str], typer.Option(help="Expected sha256 of the network file.")] = None,
    annotate: Annotated[bool, typer.Option(help="Detect, align and annotate the new faces in the same pass.")] = True,
    workers: Annotated[int, typer.Option(help="Encoding/annotation processes (0 = one per CPU, 1 = none).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """Generate one face per seed with our StyleGAN2-ADA generator and store it with its seed and w."""
    from facebank._io.deps import require
    from facebank.cli.common import err
    from facebank.config import VisionConfig, check_workers
    from facebank.errors import InputError

    with cli_errors():
        check_workers(workers)
        require("torch")  # the `stylegan` extra: one line now, before any progress bar
        from facebank.engine import engine_session, run_annotate, run_generate
        from facebank.sources.stylegan_source import GenerateConfig

        if batch != "auto" and not batch.isdigit():
            raise InputError(f"--batch takes a positive integer or auto, got {batch!r}")
        cfg = GenerateConfig(network=network, seeds=seeds, psi=psi, cutoff=cutoff, class_idx=class_idx,
                             noise_mode=noise_mode.value, batch_size=batch if batch == "auto" else int(batch),
                             device=device, image_format=image_format, cache_dir=None if cache_dir is None else str(cache_dir), sha256=sha256)
        eng = engine_config(engine, ray_address)
        with engine_session(eng):  # one Ray session for both passes (nothing for the local engine)
            with progress_bars("generate") as progress:
                summary = run_generate(str(bank), cfg, engine=eng, vision=VisionConfig() if annotate else None,
                                       workers=workers, progress=progress, say=err.print)
            result = asdict(summary)
            result["rejected"] = dict(summary.rejected)
            if annotate:  # faces an earlier --no-annotate run left unannotated
                with progress_bars("annotate earlier faces") as progress:
                    earlier = run_annotate(str(bank), VisionConfig(), engine=eng, progress=progress, workers=workers)
                summary.annotated += earlier.added
                summary.rejected += earlier.rejected
                result.update(annotated=summary.annotated, rejected=dict(summary.rejected))
        human = (f"generated {summary.generated} faces ({summary.faces_per_s:.1f} faces/s) on {summary.device}, "
                 f"stored as {summary.image_format}; {summary.already_in_bank} already in the bank; "
                 f"network sha256 {summary.network_sha256[:16]}")
        if annotate:
            human += f"\nannotated {summary.annotated}, rejected: " + (
                ", ".join(f"{k}={v}" for k, v in summary.rejected.items()) or "none")
        emit(result, as_json=as_json, human=human)


def register(app: typer.Typer) -> None:
    app.command(epilog=examples(
        "facebank generate --network ffhq.pkl --seeds 0-9999 --psi 0.7 --bank data/bank.h5",
        "facebank generate --network https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl "
        "--seeds 0-99 --device cuda --bank data/bank.h5",
    ))(generate)
