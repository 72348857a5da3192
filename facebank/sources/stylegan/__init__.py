"""Our own StyleGAN2-ADA generator, a loader for official network pickles that runs no code
from them, seeded sampling, and a cached downloader for network files."""

from __future__ import annotations

from facebank._io.deps import require

require("torch")  # the `stylegan` extra: without it, one MissingDependency line naming it

from facebank.sources.stylegan.download import FFHQ_URL, resolve_network
from facebank.sources.stylegan.network import Generator
from facebank.sources.stylegan.pickle_loader import load_generator, save_generator
from facebank.sources.stylegan.sampling import (generate_images, resolve_batch_size, resolve_device,
                                                to_uint8, z_from_seed)

__all__ = [
    "FFHQ_URL",
    "Generator",
    "generate_images",
    "load_generator",
    "resolve_batch_size",
    "resolve_device",
    "resolve_network",
    "save_generator",
    "to_uint8",
    "z_from_seed",
]
