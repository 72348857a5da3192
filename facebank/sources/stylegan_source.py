"""StyleGAN2-ADA faces as source items: one face per seed, each with a stable source id.

`StyleGanSource` resolves and loads the network once on its device ("auto": CUDA when there is
one), names every seed's face (`source_id(network sha256, psi, class, seed)`) before generating
it, and yields the seeds it is asked for as `SourceItem`s like every other source: the pixels the
generator made (encoding them is the writer's job, done in worker processes off the generator's
critical path) and as metadata the face's provenance (seed, psi, class, noise mode, the network's
sha256 and the w vector). `facebank.ingest.generate` stores them, skipping the source ids the
bank already holds, so a killed run resumes at the first missing seed. `grid_items` makes them
in the fixed batches of `sources.seed_grid`, so a resumed run stores what an uninterrupted one would.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from facebank.errors import InputError
from facebank.sources.base import SourceItem
from facebank.sources.seed_grid import GridBatch

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
    device: str = "auto"  # auto (CUDA when available, else CPU) | cpu | cuda | cuda:N
    image_format: str = "png"  # how generated pixels are stored: png | png:LEVEL | webp | jpeg[:Q]
    cache_dir: str | None = None  # None: the per-user cache (FACEBANK_CACHE, else the platform's)
    sha256: str | None = None  # expected network checksum


def source_id(network_sha256: str, psi: float, class_idx: int | None, seed: int) -> str:
    cls = "" if class_idx is None else f":class{class_idx}"
    return f"{network_sha256[:12]}:psi{psi:g}{cls}:seed{seed:04d}"


def encode_w(w: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(w, dtype="<f4").tobytes()).decode()


def decode_w(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


class StyleGanSource:
    """The faces of `cfg.seeds` from one network, loaded once (the checksum names every face)."""

    def __init__(self, cfg: GenerateConfig):
        from facebank.seeds import parse_seeds
        from facebank.sources.stylegan import load_generator, resolve_batch_size, resolve_device, resolve_network

        self.cfg = cfg
        self.seeds = parse_seeds(cfg.seeds)
        if not math.isfinite(cfg.psi):
            raise InputError(f"psi must be finite, got {cfg.psi}")
        self.device = resolve_device(cfg.device)  # checked before any download or load
        path = resolve_network(cfg.network, cache_dir=cfg.cache_dir, expected_sha256=cfg.sha256)
        self.generator, info = load_generator(path, device=self.device)
        self.network_sha256 = info["sha256"]
        self.batch_size = resolve_batch_size(cfg.batch_size, self.generator, self.device)  # the grid's batch

    def source_id(self, seed: int) -> str:
        return source_id(self.network_sha256, self.cfg.psi, self.cfg.class_idx, seed)

    def grid_items(self, batches: Iterable[GridBatch]) -> Iterator[SourceItem]:
        """The kept seeds' items, in order, each grid batch made whole as one generator batch.

        Whole whenever the grid's batch size is this source's, as on the CPU and with a fixed size;
        a Ray GPU actor with "auto" and less memory than the driver assumed splits it rather than fail.
        """
        for batch in batches:
            made = self.items(batch.seeds, batch_size=min(len(batch.seeds), self.batch_size))
            yield from (item for item, keep in zip(made, batch.keep) if keep)

    def items(self, seeds: Iterable[int], batch_size: int | None = None) -> Iterator[SourceItem]:
        """One item per seed, in order: the pixels (not yet encoded), the provenance as metadata.

        Batches of `batch_size` consecutive seeds (None: this source's); `grid_items` fixes them.
        """
        from facebank.sources.stylegan import generate_images

        cfg, sha = self.cfg, self.network_sha256
        for seed, image, ws in generate_images(self.generator, list(seeds), psi=cfg.psi, cutoff=cfg.cutoff,
                                               class_idx=cfg.class_idx, noise_mode=cfg.noise_mode,
                                               batch_size=batch_size or self.batch_size, device=self.device):
            provenance = {
                "source": SOURCE, "seed": int(seed), "psi": cfg.psi, "cutoff": cfg.cutoff,
                "class_idx": cfg.class_idx, "noise_mode": cfg.noise_mode, "network": str(cfg.network),
                "network_sha256": sha, "z": "np.random.RandomState(seed).randn(1, z_dim)",
                # w: the first row; all num_ws rows are equal unless a truncation cutoff applies.
                "w": encode_w(ws[0]), "w_dim": int(ws.shape[1]), "num_ws": int(ws.shape[0]),
                "w_rows_equal": bool(np.all(ws == ws[:1])), "models": {"generator": sha[:16]},
            }
            yield SourceItem(SOURCE, self.source_id(seed), metadata=provenance, pixels=image)
