"""The bank's content hash: what an index build binds to, and what `index verify` checks."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np

_BLOCK = 65536  # rows per read, so that hashing a large bank does not load it whole


def compute_content_hash(f: h5py.File) -> str:
    """sha256 over face ids, ages, genders, statuses and every space's vectors, in row order.

    Images and crops are covered through the ids (an id is the image's content hash).
    """
    h = hashlib.sha256(b"facebank-bank-content-v1")
    faces = f["faces"]
    n = faces["id"].shape[0]
    h.update(n.to_bytes(8, "little"))
    for name in ("id", "age", "gender", "status"):  # status: dedupe and annotation change eligibility
        for start in range(0, n, _BLOCK):
            h.update(np.ascontiguousarray(faces[name][start:start + _BLOCK]).tobytes())
    for space in sorted(f["embeddings"]):
        g = f["embeddings"][space]
        info = json.loads(g.attrs["info"])
        h.update(json.dumps({"space": space, "sha256": info.get("sha256"), "dim": info["dim"]}, sort_keys=True).encode())
        for start in range(0, n, _BLOCK):
            h.update(np.ascontiguousarray(g["present"][start:start + _BLOCK]).tobytes())
            h.update(np.ascontiguousarray(g["vectors"][start:start + _BLOCK]).tobytes())
    return h.hexdigest()
