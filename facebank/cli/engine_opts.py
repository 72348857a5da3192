"""`--engine local|ray` and `--ray-address`: the options every compute command shares (facebank.engine)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from facebank.config import ENGINE_KINDS, EngineConfig

EngineOpt = Annotated[str, typer.Option(
    "--engine", help="Where the work runs: local (worker processes, default) or ray (a Ray cluster; "
                     "pip install 'facebank\\[ray]').")]  # \\[: Rich would read [ray] as markup and drop it
RayAddressOpt = Annotated[Optional[str], typer.Option(
    "--ray-address", help="Ray cluster to join: auto (the running one), HOST:PORT or ray://HOST:10001; "
                          "default: start a local one for this command.")]


def engine_config(kind: str, address: str | None, base: EngineConfig | None = None) -> EngineConfig:
    """The engine of a command: its options over `base` (a build config's [engine]); a bad kind is one line."""
    from facebank.errors import ConfigError

    if kind not in ENGINE_KINDS:
        raise ConfigError(f"--engine takes {' or '.join(ENGINE_KINDS)}, got {kind!r}")
    base = base or EngineConfig()
    return EngineConfig(**{**base.__dict__, "kind": kind, "address": address or base.address})
