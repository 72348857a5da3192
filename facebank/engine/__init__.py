"""Where the stages run: local processes (facebank.ingest, the default) or a Ray cluster.

Each function takes the local stage's arguments (by keyword, each named: a misspelt option is a
TypeError) plus `engine` (an EngineConfig) and calls the local stage or its Ray driver (`ray_jobs`,
imported only for `kind = "ray"`, so the local engine never loads Ray). Both give the same bank:
the same rows in the same order, bit for bit. `workers` counts the local engine's processes
(0 = one per CPU, 1 = in this process); Ray sizes its actor pools from the EngineConfig instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from facebank.config import EngineConfig, SpaceConfig, VisionConfig, check_workers
from facebank.ingest import GenerateSummary, Summary, annotate_bank, embed_bank, generate_to_bank, ingest
from facebank.progress import Progress
from facebank.sources.base import SourceItem

__all__ = ["EngineConfig", "engine_session", "run_annotate", "run_embed", "run_generate", "run_ingest"]

def engine_session(engine: EngineConfig):
    """A context for several stages: one Ray connection for all of them (nothing for the local engine)."""
    if engine.kind == "ray":
        from facebank.engine.ray_cluster import ray_session

        return ray_session(engine)
    return contextlib.nullcontext()


def run_generate(bank_path: str, cfg, *, engine: EngineConfig = EngineConfig(), vision: VisionConfig | None = None,
                 spaces: tuple[SpaceConfig, ...] = (), workers: int = 0, progress: Progress | None = None,
                 pending_every: int = 64, say: Callable[[str], None] | None = None) -> GenerateSummary:
    """generate_to_bank (`cfg`: a sources.stylegan_source.GenerateConfig) on `engine`."""
    check_workers(workers, "workers")
    if engine.kind == "ray":
        from facebank.engine.ray_jobs import ray_generate

        return ray_generate(bank_path, cfg, engine=engine, vision=vision, spaces=spaces, progress=progress,
                            pending_every=pending_every, say=say)
    return generate_to_bank(bank_path, cfg, vision=vision, spaces=spaces, workers=workers, progress=progress,
                            pending_every=pending_every, say=say)


def run_ingest(bank_path: str, items: Iterable[SourceItem], *, engine: EngineConfig = EngineConfig(),
               vision: VisionConfig = VisionConfig(), spaces: Iterable[SpaceConfig] = (), workers: int = 1,
               progress: Progress | None = None, batch_size: int = 64, commit_every: int = 2048) -> Summary:
    """ingest on `engine`."""
    check_workers(workers, "workers")
    if engine.kind == "ray":
        from facebank.engine.ray_jobs import ray_ingest

        return ray_ingest(bank_path, items, engine=engine, vision=vision, spaces=spaces, progress=progress,
                          batch_size=batch_size, commit_every=commit_every)
    return ingest(bank_path, items, vision=vision, spaces=spaces, workers=workers, progress=progress,
                  batch_size=batch_size, commit_every=commit_every)


def run_annotate(bank_path: str, vision: VisionConfig | None = None, *, engine: EngineConfig = EngineConfig(),
                 force: bool = False, workers: int = 1, progress: Progress | None = None) -> Summary:
    """annotate_bank on `engine`."""
    check_workers(workers, "workers")
    vision = vision or VisionConfig()
    if engine.kind == "ray":
        from facebank.engine.ray_jobs import ray_annotate

        return ray_annotate(bank_path, vision, engine=engine, force=force, progress=progress)
    return annotate_bank(bank_path, vision, force=force, workers=workers, progress=progress)


def run_embed(bank_path: str, space: SpaceConfig, *, engine: EngineConfig = EngineConfig(), workers: int = 1,
              progress: Progress | None = None) -> Summary:
    """embed_bank on `engine`."""
    check_workers(workers, "workers")
    if engine.kind == "ray":
        from facebank.engine.ray_jobs import ray_embed

        return ray_embed(bank_path, space, engine=engine, progress=progress)
    return embed_bank(bank_path, space, workers=workers, progress=progress)
