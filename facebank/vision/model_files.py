"""What the model modules share: model checksums (cached), ONNX sessions, model files in a directory.

A leaf of facebank.vision: it imports no model module, so the registry (which imports the model
modules lazily) and the model modules (which import these helpers) form no cycle.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from facebank._io.download import sha256_file
from facebank.errors import ModelError

__all__ = ["file_sha256", "find_model_file", "onnx_session"]


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)  # size and mtime only key the cache


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a model file, computed once per process (re-done if the file changes)."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
        return _sha256_cached(str(resolved), stat.st_size, stat.st_mtime_ns)
    except OSError as exc:
        raise ModelError(f"cannot read model file {resolved}: {exc.strerror or exc}") from exc


def onnx_session(path: str | os.PathLike[str], *, what: str, threads: int | None = None):
    """An onnxruntime CPU session for `path`; any load failure becomes a one-line ModelError."""
    import onnxruntime as ort

    model_path = Path(path)
    if not model_path.is_file():
        raise ModelError(f"{what} model not found: {model_path}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime warnings are noise for callers
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    # Idle pool threads sleep instead of spinning: a busy-wait burns a core the caller (decoding,
    # dlib) or another process needs, and made SCRFD slower, not faster, on 2 shared cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{model_path} is not a loadable ONNX {what} model: {first[:300]}") from exc


def find_model_file(path: str | os.PathLike[str] | None, patterns: tuple[str, ...], *, what: str) -> Path:
    """`path` itself if it is a file, else the first match of `patterns` inside the directory `path`."""
    if path is None:
        raise ModelError(f"{what} needs a model path (a file or an InsightFace model directory)")
    model_path = Path(path).expanduser()
    if model_path.is_file():
        return model_path
    if model_path.is_dir():
        for pattern in patterns:
            matches = sorted(model_path.glob(pattern))
            if matches:
                return matches[0]
        found = ", ".join(sorted(p.name for p in model_path.glob("*.onnx"))) or "no .onnx files"
        raise ModelError(f"no {what} model ({' or '.join(patterns)}) in {model_path} ({found})")
    raise ModelError(f"{what} model not found: {model_path}")
