"""Where the stages run: local processes (facebank.ingest, the default) or a Ray cluster.

Each function takes the local stage's arguments plus `engine` (an EngineConfig) and calls the
local stage or its Ray driver (`ray_jobs`, imported only for `kind = "ray"`, so the local engine
never loads Ray). Both give the same bank: the same rows in the same order, bit for bit.
"""

from __future__ import annotations

import contextlib

from facebank.config import EngineConfig, check_workers
from facebank.ingest import annotate_bank, embed_bank, generate_to_bank, ingest

__all__ = ["EngineConfig", "engine_session", "run_annotate", "run_embed", "run_generate", "run_ingest"]

_LOCAL_ONLY = ("workers",)  # process counts of the local engine; Ray sizes its actor pools itself


def _ray_kwargs(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k not in _LOCAL_ONLY}


def engine_session(engine: EngineConfig):
    """A context for several stages: one Ray connection for all of them (nothing for the local engine)."""
    if engine.kind == "ray":
        from facebank.engine.ray_cluster import ray_session

        return ray_session(engine)
    return contextlib.nullcontext()


def run_generate(bank_path: str, cfg, *, engine: EngineConfig = EngineConfig(), **kwargs):
    check_workers(kwargs.get("workers", 0), "workers")
    if engine.kind == "ray":
        from facebank.engine.ray_jobs import ray_generate

        return ray_generate(bank_path, cfg, engine=engine, **_ray_kwargs(kwargs))
    return generate_to_bank(bank_path, cfg, **kwargs)


def run_ingest(bank_path: str, items, *, engine: EngineConfig = EngineConfig(), **kwargs):
    check_workers(kwargs.get("workers", 0), "workers")
    if engine.kind == "ray":
        from facebank.engine.ray_jobs import ray_ingest

        return ray_ingest(bank_path, items, engine=engine, **_ray_kwargs(kwargs))
    return ingest(bank_path, items, **kwargs)


def run_annotate(bank_path: str, vision=None, *, engine: EngineConfig = EngineConfig(), **kwargs):
    check_workers(kwargs.get("workers", 0), "workers")
    from facebank.config import VisionConfig

    vision = vision or VisionConfig()
    if engine.kind == "ray":
        from facebank.engine.ray_jobs import ray_annotate

        return ray_annotate(bank_path, vision, engine=engine, **_ray_kwargs(kwargs))
    return annotate_bank(bank_path, vision, **kwargs)


def run_embed(bank_path: str, space, *, engine: EngineConfig = EngineConfig(), **kwargs):
    check_workers(kwargs.get("workers", 0), "workers")
    if engine.kind == "ray":
        from facebank.engine.ray_jobs import ray_embed

        return ray_embed(bank_path, space, engine=engine, **_ray_kwargs(kwargs))
    return embed_bank(bank_path, space, **kwargs)
