"""The bank's on-disk schema: names, dtypes and the version. Documented in SCHEMA.md beside this file.

A reader refuses a file whose `format` is not ours or whose `schema_version` it does not know,
and refuses any `required_features` it does not implement (rather than guessing).
"""

from __future__ import annotations

import h5py
import numpy as np

from facebank import labels

FORMAT = "facebank-bank"
SCHEMA_VERSION = 2  # 1: one file copied whole on every commit (its frozen writer: tests/fixtures/bank_v1_frozen); 2: fragments
# Required features this reader understands. `fragment-refs`: a fragment's virtual datasets read
# batch files linked beside it (its `refs`): a commit references the images it adds instead of copying them.
KNOWN_FEATURES: frozenset[str] = frozenset({"fragment-refs"})

CROP_SIZE = 112
GENDERS = labels.GENDERS  # stored as int8 codes 0, 1; -1 = unknown
GENDER_UNKNOWN = labels.GENDER_UNKNOWN

STR = h5py.string_dtype("utf-8")
BYTES = h5py.vlen_dtype(np.uint8)

# Per-face columns of /faces: name -> (dtype, shape of one row). Every column has n rows.
FACE_COLUMNS: dict[str, tuple[object, tuple[int, ...]]] = {
    "id": ("S16", ()),
    "content_sha256": ("S64", ()),
    "source": (STR, ()),
    "source_id": (STR, ()),
    "provenance": (STR, ()),  # JSON: seed, psi, network sha256, export metadata, ...
    "image": (BYTES, ()),  # the original encoded bytes, as received or as generated (PNG)
    "image_format": ("S8", ()),
    "width": (np.int32, ()),
    "height": (np.int32, ()),
    "box": (np.float32, (4,)),  # left, top, right, bottom in image pixels
    "landmarks": (np.float32, (5, 2)),  # ArcFace 5 points in image pixels
    "detector": (STR, ()),
    "crop": (np.uint8, (CROP_SIZE, CROP_SIZE, 3)),  # aligned to the ArcFace template, RGB
    # The combined attributes the picker groups by (see SCHEMA.md, "Age and gender").
    "age": (np.float32, ()),
    "age_confidence": (np.float32, ()),
    "age_source": (STR, ()),
    "gender": (np.int8, ()),
    "gender_confidence": (np.float32, ()),
    "gender_source": (STR, ()),
    # Both inputs are kept: the model's estimate and the source's metadata.
    "model_age": (np.float32, ()),
    "model_age_confidence": (np.float32, ()),
    "model_gender": (np.int8, ()),
    "model_gender_confidence": (np.float32, ()),
    "attribute_model": (STR, ()),
    "meta_age_category": (STR, ()),
    "meta_gender": (np.int8, ()),
    "meta_gender_confidence": (np.float32, ()),
    "added_at": (np.float64, ()),  # unix time
    "status": (np.int8, ()),  # STATUS_*: only annotated faces enter index builds
}

STATUS_GENERATED = 0  # generated, not yet detected/aligned/annotated (`facebank annotate` does it)
STATUS_ANNOTATED = 1  # one face found, aligned, age and gender known: usable as a target
STATUS_REJECTED = 2  # annotation rejected it (reason in the rejection log); kept for its seed
STATUS_REMOVED = 3  # dropped by `facebank dedupe` (recorded in the log); never picked again

REJECTION_COLUMNS: dict[str, tuple[object, tuple[int, ...]]] = {
    "source": (STR, ()),
    "source_id": (STR, ()),
    "content_sha256": ("S64", ()),
    "reason": (STR, ()),
    "detail": (STR, ()),
    "stage": (STR, ()),  # decode | detect | annotate | embed:<space>
    "at": (np.float64, ()),
}

# Chunk shapes. A crop chunk is one face, so reading a face by id costs one chunk read;
# vectors are chunked in blocks of rows so that bulk reads for an index build stay fast.
VECTOR_CHUNK_ROWS = 64
ROW_CHUNK = 1024


def chunk_rows(name: str) -> int:
    return 1 if name in ("crop",) else ROW_CHUNK


def gender_code(value: str | None) -> int:
    """'female'/'f'/'w'/'woman' -> 0, 'male'/'m'/'man' -> 1, anything else -> -1 (see facebank.labels)."""
    return labels.gender_code(value)


def gender_name(code: int) -> str:
    return labels.gender_name(code)
