"""Seeded sampling from a generator, the way the official generate.py does it.

One numpy RandomState per seed gives z, so an image depends only on (network, seed, psi,
cutoff, class, noise_mode), never on batching or on other seeds.
"""

from __future__ import annotations

import logging
import re
from typing import Iterable, Iterator, Optional, Union

import numpy as np
import torch

from facebank.errors import InputError
from facebank.seeds import MAX_SEED

__all__ = ["auto_batch_size", "generate_images", "resolve_batch_size", "resolve_device", "to_uint8",
           "z_from_seed"]

log = logging.getLogger(__name__)

CPU_BATCH = 8  # modest: larger batches do not speed up CPU inference much


def z_from_seed(seed: int, z_dim: int) -> np.ndarray:
    """[1, z_dim] float64 from numpy's legacy Gaussian sampler, as generate.py draws it."""
    return np.random.RandomState(seed).randn(1, z_dim)


def to_uint8(img: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
    """NCHW float in about [-1, 1] -> NHWC uint8: x * 127.5 + 128, clamp to [0, 255], truncate."""
    x = torch.as_tensor(img)
    if x.ndim != 4:
        raise InputError(f"image batch must be NCHW, got shape {list(x.shape)}")
    x = (x.detach().to(torch.float32).permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255)
    return x.to(torch.uint8).cpu().numpy()


def resolve_device(text: Union[str, torch.device]) -> torch.device:
    """'auto' -> CUDA when torch sees a GPU, else the CPU; 'cpu', 'cuda', 'cuda:N' checked here.

    A typo or a missing GPU is bad input with one line, not a torch traceback later.
    """
    if isinstance(text, torch.device):
        text = str(text)
    name = str(text).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {text!r}")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {text!r}: torch sees no CUDA GPU here (use --device auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {text!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def auto_batch_size(G: torch.nn.Module, device: torch.device) -> int:
    """A batch that fits: half of the free CUDA memory over a rough per-image peak; fixed on CPU."""
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    res = G.img_resolution
    channels = getattr(G.synthesis, f"b{res}").conv1.weight.shape[0]
    # Peak is in the last block: about 8 float32 maps of [channels, res, res] alive at once.
    per_image = 8 * 4 * channels * res * res + (1 << 20)
    return int(max(1, min(64, (free // 2) // per_image)))


def resolve_batch_size(batch_size: Union[int, str], G: Optional[torch.nn.Module], device: torch.device) -> int:
    """A positive batch size checked, or 'auto' resolved (`auto_batch_size`; CPU_BATCH on CPU, where G is unused)."""
    if batch_size == "auto":
        return auto_batch_size(G, device)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    return batch_size


def _validate_class(G: torch.nn.Module, class_idx: Optional[int]) -> Optional[int]:
    if G.c_dim == 0:
        if class_idx is not None:
            raise InputError("class_idx was given but this network is unconditional (c_dim 0)")
        return None
    if class_idx is None:
        raise InputError(f"this network is class-conditional (c_dim {G.c_dim}); pass class_idx")
    if isinstance(class_idx, bool) or not isinstance(class_idx, (int, np.integer)) or not 0 <= class_idx < G.c_dim:
        raise InputError(f"class_idx must be an integer in [0, {G.c_dim}), got {class_idx!r}")
    return int(class_idx)


def generate_images(
    G: torch.nn.Module,
    seeds: Iterable[int],
    *,
    psi: float = 1.0,
    cutoff: Optional[int] = None,
    class_idx: Optional[int] = None,
    noise_mode: str = "const",
    batch_size: Union[int, str] = "auto",
    device: Union[str, torch.device] = "cpu",
    force_fp32: bool = False,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (seed, uint8 [R, R, 3] RGB image, ws [num_ws, w_dim] float32) per seed, in order.

    psi/cutoff: truncation (psi 1 = none; cutoff None = every w row). noise_mode 'const' is
    deterministic; 'random' is not. G is moved to `device`; batches are `batch_size` seeds,
    or 'auto' (from free memory on CUDA, a small fixed batch on CPU).
    """
    if noise_mode not in ("const", "random", "none"):
        raise InputError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
    if not np.isfinite(psi):
        raise InputError(f"psi must be finite, got {psi!r}")
    if cutoff is not None and (isinstance(cutoff, bool) or not isinstance(cutoff, int) or cutoff < 0):
        raise InputError(f"cutoff must be a non-negative integer or None, got {cutoff!r}")
    if G.img_channels != 3:
        raise InputError(f"generate_images makes RGB images; this network has {G.img_channels} channels")
    class_idx = _validate_class(G, class_idx)
    device = torch.device(device)
    batch_size = resolve_batch_size(batch_size, G, device)
    G = G.to(device).eval()

    pending: list[int] = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
            raise InputError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
        pending.append(int(seed))
        if len(pending) == batch_size:
            yield from _run_batch(G, pending, psi, cutoff, class_idx, noise_mode, device, force_fp32)
            pending = []
    if pending:
        yield from _run_batch(G, pending, psi, cutoff, class_idx, noise_mode, device, force_fp32)


def _run_batch(G, seeds, psi, cutoff, class_idx, noise_mode, device, force_fp32):
    z = torch.from_numpy(np.concatenate([z_from_seed(s, G.z_dim) for s in seeds])).to(device)
    c = torch.zeros([len(seeds), G.c_dim], device=device)
    if class_idx is not None:
        c[:, class_idx] = 1
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
        img = G.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32)
    images = to_uint8(img)
    ws_np = ws.to(torch.float32).cpu().numpy()
    for i, seed in enumerate(seeds):
        yield seed, images[i], ws_np[i]
