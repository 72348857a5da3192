"""Shared fixtures: where the real test assets are, and when their absence is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _assets_dir() -> Path:
    return Path(os.environ.get("FACEBANK_ASSETS", ROOT.parent / "shared" / "assets")).resolve()


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("FACEBANK_REQUIRE_ASSETS") == "1":
            pytest.fail(f"required test asset missing: {path}")
        pytest.skip(f"test asset not available: {path}")
    return path


@pytest.fixture(scope="session")
def assets() -> Path:
    """The shared real assets folder (FACEBANK_ASSETS, default ../shared/assets)."""
    return _require(_assets_dir())


@pytest.fixture(scope="session")
def stylegan_fixtures() -> Path:
    """Golden vectors for our StyleGAN2-ADA generator (../shared/fixtures/stylegan2ada)."""
    default = ROOT.parent / "shared" / "fixtures" / "stylegan2ada"
    return _require(Path(os.environ.get("FACEBANK_STYLEGAN_FIXTURES", default)).resolve())
