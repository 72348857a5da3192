"""Deprecated path: the ingest stage now lives in `facebank.ingest` (the configs in `facebank.config`).

Kept as a plain re-export so that `from facebank.pipeline import ingest, SpaceConfig, ...` keeps working.
"""

from facebank.config import SpaceConfig, VisionConfig  # noqa: F401
from facebank.ingest import Annotator, Summary, annotate_bank, combine_attributes, embed_bank, ingest  # noqa: F401
from facebank.ingest.stages import Progress  # noqa: F401
