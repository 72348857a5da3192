"""StyleGAN2-ADA faces into the bank: one face per seed, resumable at the first missing seed.

Generated images are stored as they come out of the generator (PNG), with the seed, psi, class,
noise mode, the network's sha256 and the w vector; detection, alignment and attributes follow
in `facebank annotate` like for every other source.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facebank.bank import BankWriter, FaceRecord, open_bank
from facebank.bank.schema import CROP_SIZE, STATUS_GENERATED
from facebank.errors import InputError
from facebank.vision.image_io import encode_png

SOURCE = "stylegan"


@dataclass(frozen=True)
class GenerateConfig:
    network: str  # local .pkl / our saved form, or a URL (downloaded once into cache_dir)
    seeds: str = "0-9999"
    psi: float = 0.7
    cutoff: int | None = None
    class_idx: int | None = None
    noise_mode: str = "const"
    batch_size: int | str = "auto"
    device: str = "cpu"
    cache_dir: str = "data/cache"
    sha256: str | None = None  # expected network checksum


@dataclass
class GenerateSummary:
    generated: int = 0
    already_in_bank: int = 0
    network_sha256: str = ""
    seeds: str = ""
    seconds: float = 0.0
    faces_per_s: float = 0.0
    extra: dict = field(default_factory=dict)


def source_id(network_sha256: str, psi: float, class_idx: int | None, seed: int) -> str:
    cls = "" if class_idx is None else f":class{class_idx}"
    return f"{network_sha256[:12]}:psi{psi:g}{cls}:seed{seed:04d}"


def encode_w(w: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(w, dtype="<f4").tobytes()).decode()


def decode_w(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def generate_to_bank(
    bank_path: str,
    cfg: GenerateConfig,
    *,
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
) -> GenerateSummary:
    """Generate the faces of `cfg.seeds` that the bank does not hold yet and store them."""
    from facebank.sources.stylegan import generate_images, load_generator, parse_seeds, resolve_network

    start = time.perf_counter()
    seeds = parse_seeds(cfg.seeds)
    if not math.isfinite(cfg.psi):
        raise InputError(f"psi must be finite, got {cfg.psi}")
    path = resolve_network(cfg.network, cache_dir=cfg.cache_dir, expected_sha256=cfg.sha256)
    G, info = load_generator(path, device=cfg.device)
    summary = GenerateSummary(network_sha256=info["sha256"], seeds=cfg.seeds)
    with BankWriter(bank_path) as writer:  # opening it first applies what a killed run left pending
        with open_bank(bank_path) as bank:
            have = set(bank.column("source_id")[bank.column("source") == SOURCE])
        todo = [s for s in seeds if source_id(info["sha256"], cfg.psi, cfg.class_idx, s) not in have]
        summary.already_in_bank = len(seeds) - len(todo)
        if total:
            total(len(todo))
        writer.log("generate_start", network=str(cfg.network), network_sha256=info["sha256"], seeds=cfg.seeds,
                   psi=cfg.psi, todo=len(todo))
        nan = np.full
        for seed, image, ws in generate_images(G, todo, psi=cfg.psi, cutoff=cfg.cutoff, class_idx=cfg.class_idx,
                                               noise_mode=cfg.noise_mode, batch_size=cfg.batch_size,
                                               device=cfg.device):
            data = encode_png(image)
            rows_equal = bool(np.all(ws == ws[:1]))
            provenance = {
                "source": SOURCE, "seed": int(seed), "psi": cfg.psi, "cutoff": cfg.cutoff,
                "class_idx": cfg.class_idx, "noise_mode": cfg.noise_mode, "network": str(cfg.network),
                "network_sha256": info["sha256"], "z": "np.random.RandomState(seed).randn(1, z_dim)",
                # w: the first row; all num_ws rows are equal unless a truncation cutoff applies.
                "w": encode_w(ws[0]), "w_dim": int(ws.shape[1]), "num_ws": int(ws.shape[0]),
                "w_rows_equal": rows_equal, "models": {"generator": info["sha256"][:16]},
            }
            writer.add_face(FaceRecord(
                source=SOURCE, source_id=source_id(info["sha256"], cfg.psi, cfg.class_idx, seed), image=data,
                image_format="png", width=image.shape[1], height=image.shape[0],
                box=nan(4, np.nan, np.float32), landmarks=nan((5, 2), np.nan, np.float32), detector="",
                crop=np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8), provenance=provenance, status=STATUS_GENERATED,
            ))
            summary.generated += 1
            if progress:
                progress(1)
        writer.log("generate_end", generated=summary.generated)
    summary.seconds = time.perf_counter() - start
    summary.faces_per_s = summary.generated / summary.seconds if summary.seconds else 0.0
    return summary
