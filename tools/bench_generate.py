"""Images per second of our StyleGAN2-ADA generator, end to end (seeds -> uint8 RGB).

CPU: the tiny64 golden-vector generator, chosen batch vs batch 1.
CUDA (when available): a full-size FFHQ-config generator (1024 px) with random weights,
fp16 blocks as the config says vs force_fp32, and chosen batch vs batch 1; also the mean
|fp16 - fp32| image difference. Every figure is the median of several timed runs after a
warm-up. Last line: RESULT cpu_tiny64_img_per_s=<x> gpu_1024_img_per_s=<y or na>
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facebank.sources.stylegan import generate_images, load_generator  # noqa: E402
from facebank.sources.stylegan.network import Generator  # noqa: E402
from facebank.sources.stylegan.sampling import auto_batch_size  # noqa: E402

FFHQ_CONFIG = dict(
    z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
    mapping_kwargs=dict(num_layers=8),
    synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(G, n_images: int, batch_size: int, device, *, force_fp32=False, runs=5, warmup=1) -> float:
    """Median images/s over `runs` timed passes of n_images seeds through generate_images."""
    device = torch.device(device)
    rates = []
    for i in range(warmup + runs):
        _sync(device)
        start = time.perf_counter()
        for _ in generate_images(G, range(i * n_images, (i + 1) * n_images), batch_size=batch_size,
                                 device=device, force_fp32=force_fp32):
            pass
        _sync(device)
        if i >= warmup:
            rates.append(n_images / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_cpu(fixtures: Path) -> float:
    G, _ = load_generator(fixtures / "tiny64.pkl")
    batch = auto_batch_size(G, torch.device("cpu"))
    chosen = images_per_s(G, 32, batch, "cpu")
    single = images_per_s(G, 16, 1, "cpu")
    print(f"cpu tiny64 (64 px, {torch.get_num_threads()} threads): batch {batch}: {chosen:.1f} img/s | "
          f"batch 1: {single:.1f} img/s | ratio {chosen / single:.2f}x")
    return chosen


def _randomise(G: Generator) -> None:
    """Give the zero-initialised parameters (noise strength, biases, w_avg) non-trivial values."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or (name.endswith("bias") and "affine" not in name):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        G.mapping.w_avg.copy_(torch.randn(G.mapping.w_avg.shape, generator=gen) * 0.1)


def bench_gpu(batch_override: int | None) -> float:
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    torch.manual_seed(0)
    G = Generator(**FFHQ_CONFIG)
    _randomise(G)
    G = G.eval().requires_grad_(False).to(device)
    print(f"gpu: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")

    # fp16 vs fp32 on the same inputs: precision check before the timing.
    z = torch.randn([4, 512], generator=torch.Generator().manual_seed(1)).to(device)
    c = torch.zeros([4, 0], device=device)
    with torch.no_grad():
        ref = G(z, c, noise_mode="const", force_fp32=True)
        half = G(z, c, noise_mode="const")
    diff = (half - ref).abs()
    print(f"fp16 vs fp32 image: mean |diff| {diff.mean().item():.2e}, max {diff.max().item():.2e}, "
          f"fp32 image std {ref.std().item():.3f}, finite {bool(torch.isfinite(half).all())}")

    batch = batch_override or auto_batch_size(G, device)
    n = max(4 * batch, 64)
    fp16 = images_per_s(G, n, batch, device)
    fp32 = images_per_s(G, n, batch, device, force_fp32=True)
    single = images_per_s(G, 16, 1, device, runs=3)
    single32 = images_per_s(G, 16, 1, device, force_fp32=True, runs=3)
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"gpu 1024 px, batch {batch} (peak {peak:.1f} GiB): fp16 {fp16:.1f} img/s | force_fp32 {fp32:.1f} img/s "
          f"| ratio {fp16 / fp32:.2f}x")
    print(f"gpu 1024 px, batch 1: fp16 {single:.1f} img/s | force_fp32 {single32:.1f} img/s | "
          f"chosen batch fp16 vs batch-1 fp32: {fp16 / single32:.2f}x")
    return fp16


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=ROOT.parent / "shared" / "fixtures" / "stylegan2ada")
    parser.add_argument("--gpu-batch", type=int, default=None, help="override the automatic GPU batch size")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU benchmark")
    args = parser.parse_args(argv)
    cpu = "na" if args.skip_cpu else f"{bench_cpu(args.fixtures):.1f}"
    gpu = f"{bench_gpu(args.gpu_batch):.1f}" if torch.cuda.is_available() else "na"
    print(f"RESULT cpu_tiny64_img_per_s={cpu} gpu_1024_img_per_s={gpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
