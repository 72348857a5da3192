"""The ingest stage: source items -> bank faces (annotate, embed, worker processes, generated faces).

`ingest` stores what the sources yield (detect, align, attributes, embeddings); `generate_to_bank`
stores generated faces before annotation; `annotate_bank` and `embed_bank` complete the bank's
faces. All of them are resumable: a re-run skips what the bank already holds. Their worker
processes are one pool (`pool`); the work of one face is a named job and result (`workers`).
"""

from facebank.config import SpaceConfig, VisionConfig
from facebank.ingest.annotator import Annotator, combine_attributes
from facebank.ingest.generate import GenerateSummary, generate_to_bank
from facebank.ingest.stages import Summary, annotate_bank, embed_bank, ingest

__all__ = ["Annotator", "GenerateSummary", "SpaceConfig", "Summary", "VisionConfig", "annotate_bank",
           "combine_attributes", "embed_bank", "generate_to_bank", "ingest"]
