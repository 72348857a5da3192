"""Find a network file: a local path as is, or an http(s) URL downloaded once into a cache.

The generic part (cache, sha256 record checked on every later use, atomic download) lives in
facebank._io.download; this module keeps the StyleGAN names and the `--network` advice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from facebank._io.download import _download, fetch, sha256_file

__all__ = ["FFHQ_URL", "resolve_network", "sha256_file"]

# Official StyleGAN2-ADA FFHQ 1024 generator (NVIDIA Source Code License, non-commercial).
# Its sha256 is not known here; the cache records it on first download.
FFHQ_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl"


def resolve_network(path_or_url: Union[str, Path], *, cache_dir: Union[str, Path, None] = None,
                    expected_sha256: Optional[str] = None) -> Path:
    """Local path -> that path (SourceError if missing). URL -> the cached copy, downloading it once.

    expected_sha256, when given, must match (for a local path too). A cached file whose content
    no longer matches its recorded sha256 raises SourceError naming the file to delete.
    """
    # `_download` is looked up here at call time so that tests can stand in for the network.
    return fetch(path_or_url, cache_dir=cache_dir, expected_sha256=expected_sha256, what="network",
                 default_name="network.pkl", download=_download,
                 offline_hint="if offline, download it elsewhere and pass the local path with --network")
