"""The main job at real size, measured side by side with the path a user has today.

    python tools/bench_build.py [--e2e-faces 6] [--store-faces 48] [--max-faces 30000] [--quick]

1. Image formats: ms and MB per 1024-px face for PNG at several zlib levels (PIL and OpenCV),
   WebP lossless and JPEG q95, on the 12 real FFHQ samples in ../shared/assets.
2. Storage of 1024-px faces (encode + write): our path (spawned workers encode png while this
   process writes, schema-2 writer) against today's (PIL PNG level 6 in the writing process,
   the schema-1 writer that copies the bank at each commit). Rounds alternate; medians.
3. The whole main job at 1024 px: a full-size FFHQ-config generator with random weights makes
   every image (its real cost); each image is then replaced by a real FFHQ sample (a different
   pixel per seed, so every face is new) so that detection, attributes and embedding see real
   faces; one overlapped pass generates, encodes, stores, annotates and embeds (dlib), then the
   index is built. Every stage is also timed alone.
4. Write cost per face of 1.3 MB records at bank sizes of 1k and 30k faces (schema 2) beside
   the schema-1 writer at 1k and 8k (tools/bench_bank_write.py). Checks free disk first.
5. Index build time and peak resident memory (fresh subprocesses) at 100k, 300k and 1M faces x
   512-d: our streamed build against the whole-array build it replaced.

Last line: RESULT e2e_faces_per_s=<x> store_faces_per_s_1024=<s> write_ms_per_face_1k=<a>
write_ms_per_face_30k=<b> write_growth=<b/a>
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_bank_write import measure_write  # noqa: E402
from bench_generate import FFHQ_CONFIG, _randomise  # noqa: E402


def _samples(assets: Path) -> list[np.ndarray]:
    from PIL import Image

    paths = sorted((assets / "stylegan2ada_ffhq_samples").glob("seed*.png"))
    if not paths:
        raise SystemExit(f"no FFHQ samples in {assets}/stylegan2ada_ffhq_samples (set --assets)")
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def _variant(samples: list[np.ndarray], k: int) -> np.ndarray:
    """Sample k % 12 with one pixel set from k: real face content, distinct bytes for every k."""
    image = samples[k % len(samples)].copy()
    image[0, 0] = (k & 255, (k >> 8) & 255, (k >> 16) & 255)
    return image


def _median_ms(fn, items, repeat: int = 1) -> tuple[float, float]:
    times, sizes = [], []
    for _ in range(repeat):
        for x in items:
            t = time.perf_counter()
            out = fn(x)
            times.append(time.perf_counter() - t)
            sizes.append(len(out))
    return statistics.median(times) * 1000, statistics.mean(sizes) / 1e6


# -- 1. formats --
def bench_formats(samples: list[np.ndarray]) -> dict:
    from PIL import Image

    from facebank.vision.image_encode import encode_image, parse_image_format

    def pil(fmt, **kw):
        def f(im):
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, fmt, **kw)
            return buf.getvalue()
        return f

    cands = {"PIL png level 6 (today)": pil("PNG", compress_level=6), "PIL png level 1": pil("PNG", compress_level=1)}
    for spec in ("png", "png:1", "png:3", "png:6", "png:9", "webp", "jpeg:95"):
        fmt = parse_image_format(spec)
        cands[f"opencv {spec}"] = (lambda im, fmt=fmt: encode_image(im, fmt))
    print("\n## 1. image formats, 1024 px, one core (12 real FFHQ faces; median ms, mean MB)")
    out = {}
    for name, fn in cands.items():
        ms, mb = _median_ms(fn, samples)
        out[name] = (ms, mb)
        print(f"{name:26s} {ms:7.1f} ms/face  {mb:6.3f} MB/face  ({1000 / ms:5.1f} faces/s/core)")
    return out


# -- 2. storage: encode + write --
def _store_ours(samples, n: int, root: Path) -> float:
    from facebank.bank import BankWriter
    from functools import partial

    from facebank.ingest.pool import worker_pool
    from facebank.ingest.store_workers import StorePlan, StoreWorker
    from facebank.sources.base import SourceItem

    plan = StorePlan()
    items = (SourceItem("stylegan", f"bench:seed{k}", metadata={"seed": k}, pixels=_variant(samples, k))
             for k in range(n))
    with BankWriter(root / "ours.h5") as w, worker_pool(partial(StoreWorker, plan), 0, local=StoreWorker(plan)) as pool:
        # Steady state: the workers start once per run of the job (seconds), not once per face.
        list(pool.map(SourceItem("stylegan", f"warm{k}", pixels=_variant(samples, 10**6 + k))
                      for k in range(2 * pool.processes)))
        start = time.perf_counter()
        for stored in pool.map(items):
            w.add_face(stored.record)
        w.commit()
        return n / (time.perf_counter() - start)


def _store_today(samples, n: int, root: Path) -> float:
    from facebank.bank.v1.writer import BankWriter
    from facebank.ingest.store_workers import generated_record
    from facebank.sources.base import SourceItem
    from facebank.vision.image_encode import parse_image_format
    from facebank.vision.image_io import encode_png  # PIL, level 6: what the writer used before

    fmt = parse_image_format("png:6")
    start = time.perf_counter()
    with BankWriter(root / "today.h5") as w:
        for k in range(n):
            item = SourceItem("stylegan", f"bench:seed{k}", metadata={"seed": k}, pixels=_variant(samples, k))
            w.add_face(generated_record(item, encode_png(item.pixels), fmt))
        w.commit()
        return n / (time.perf_counter() - start)


def bench_store(samples, n: int, rounds: int, directory: str | None) -> float:
    print(f"\n## 2. storage of 1024-px faces (encode + write), {n} faces per round, {rounds} rounds alternating")
    ours, today = [], []
    for r in range(rounds):
        for label, fn, acc in (("ours", _store_ours, ours), ("today", _store_today, today)):
            root = Path(tempfile.mkdtemp(prefix="bench-store-", dir=directory))
            try:
                acc.append(fn(samples, n, root))
            finally:
                shutil.rmtree(root, ignore_errors=True)
            print(f"round {r + 1} {label:5s}: {acc[-1]:6.2f} faces/s", flush=True)
    o, t = statistics.median(ours), statistics.median(today)
    print(f"ours (workers encode png, schema-2 writer): median {o:.2f} faces/s | today (PIL png 6 in the writer, "
          f"schema-1 writer): {t:.2f} faces/s | ratio {o / t:.2f}x")
    return o


# -- 3. the whole job at 1024 px --
def _random_ffhq(path: Path):
    import torch

    from facebank.sources.stylegan import Generator, save_generator

    torch.manual_seed(0)
    G = Generator(**FFHQ_CONFIG)
    _randomise(G)
    return save_generator(G.eval(), path)


@contextlib.contextmanager
def _real_faces_from(samples):
    """generate_images runs the network as it is, then yields a real FFHQ face per seed instead."""
    import facebank.sources.stylegan as sg

    real = sg.generate_images

    def wrapped(*args, **kwargs):
        for seed, _image, ws in real(*args, **kwargs):
            yield seed, _variant(samples, int(seed)), ws

    sg.generate_images = wrapped
    try:
        yield
    finally:
        sg.generate_images = real


def bench_e2e(samples, n: int, directory: str | None) -> tuple[float, dict]:
    import torch

    from facebank.bank import BankWriter
    from facebank.config import SpaceConfig, VisionConfig
    from facebank.index.build import build_index
    from facebank.ingest import generate_to_bank
    from facebank.ingest.store_workers import StorePlan, StoreWorker, generated_record
    from facebank.sources.base import SourceItem
    from facebank.sources.stylegan import generate_images, load_generator, resolve_device
    from facebank.sources.stylegan_source import GenerateConfig
    from facebank.vision.image_encode import DEFAULT_IMAGE_FORMAT, encode_image

    root = Path(tempfile.mkdtemp(prefix="bench-e2e-", dir=directory))
    stages: dict[str, float] = {}
    try:
        net = _random_ffhq(root / "ffhq_random.fbg")
        device = resolve_device("auto")
        print(f"\n## 3. the whole job at 1024 px on {device} ({torch.get_num_threads()} torch threads), {n} faces")
        G, _ = load_generator(net, device=device)
        t = time.perf_counter()
        for _ in generate_images(G, range(10_000, 10_000 + max(2, n // 2)), device=device):
            pass
        stages["generate"] = (time.perf_counter() - t) / max(2, n // 2)
        del G
        items = [SourceItem("stylegan", f"s{k}", metadata={}, pixels=_variant(samples, 20_000 + k)) for k in range(6)]
        stages["encode png"] = _median_ms(lambda im: encode_image(im, DEFAULT_IMAGE_FORMAT),
                                            [i.pixels for i in items])[0] / 1000
        encoded = [generated_record(i, encode_image(i.pixels), DEFAULT_IMAGE_FORMAT) for i in items]
        t = time.perf_counter()
        with BankWriter(root / "store.h5") as w:
            for r in encoded:
                w.add_face(r)
        stages["store (write)"] = (time.perf_counter() - t) / len(encoded)
        worker = StoreWorker(StorePlan(vision=VisionConfig(), spaces=(SpaceConfig("dlib"),)))
        t = time.perf_counter()
        for i in items:
            worker(i)
        stages["encode+annotate+embed (dlib)"] = (time.perf_counter() - t) / len(items)

        bank = root / "bank.h5"
        cfg = GenerateConfig(network=str(net), seeds=f"0-{n - 1}", device="auto")
        t = time.perf_counter()
        with _real_faces_from(samples):
            s = generate_to_bank(str(bank), cfg, vision=VisionConfig(), spaces=(SpaceConfig("dlib"),), workers=0)
        passed = time.perf_counter() - t
        t = time.perf_counter()
        build_index(str(bank), out=root / "builds", thresholds={"dlib": 0.93})
        stages["index build"] = (time.perf_counter() - t) / n
        e2e = n / (passed + stages["index build"] * n)
        for name, sec in stages.items():
            print(f"stage alone, {name:30s} {sec * 1000:9.1f} ms/face")
        print(f"overlapped pass (generate + encode + store + annotate + embed, {s.workers} workers): {passed:.1f} s "
              f"for {s.generated} faces ({s.annotated} annotated, rejected {dict(s.rejected)}) = "
              f"{s.generated / passed:.3f} faces/s")
        sequential = sum(v for k, v in stages.items() if k not in ("encode png",))
        print(f"end to end with the index: {e2e:.3f} faces/s; the same stages one after another would give "
              f"{1 / sequential:.3f} faces/s (overlap gain {e2e * sequential:.2f}x)")
        return e2e, stages
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- 4. write cost as the bank grows --
def bench_write(max_faces: int, v1_faces: int, face_bytes: float, directory: str | None) -> tuple[float, float, int]:
    free = shutil.disk_usage(directory or tempfile.gettempdir()).free
    fit = int(free * 0.8 / face_bytes)
    big, v1n = min(max_faces, fit), min(v1_faces, fit)
    print(f"\n## 4. write cost per face, {face_bytes / 1e6:.1f} MB records; free disk {free / 1e9:.0f} GB: "
          f"big bank {big} faces (asked {max_faces}), schema 1 up to {v1n}")
    res = {}
    for label, writer, n in (("schema 2 at 1k", "v2", 1024), ("schema 1 at 1k", "v1", 1024),
                             (f"schema 1 at {v1n}", "v1", v1n), (f"schema 2 at {big}", "v2", big)):
        keep = writer == "v2" and n == big
        before = set(Path(directory or tempfile.gettempdir()).glob("bench-v2-*")) if keep else set()
        res[label] = measure_write(n, writer, face_bytes, directory=directory, keep=keep)
        print(f"{label:18s} ms/face per 2048-face window: " + " ".join(f"{x:.1f}" for x in res[label]), flush=True)
        if keep:  # the big bank opens in plain h5py as one file; then it goes
            _check_plain_h5py((set(Path(directory or tempfile.gettempdir()).glob("bench-v2-*")) - before).pop(), n)
    a = statistics.median(res["schema 2 at 1k"])
    b = res[f"schema 2 at {big}"][-1]
    v1a, v1b = statistics.median(res["schema 1 at 1k"]), res[f"schema 1 at {v1n}"][-1]
    print(f"schema 2: {a:.1f} ms/face at 1k, {b:.1f} at {big} (last window): growth {b / a:.2f} | "
          f"schema 1: {v1a:.1f} at 1k, {v1b:.1f} at {v1n}: growth {v1b / v1a:.2f}")
    return a, b, big


def _check_plain_h5py(root: Path, n: int) -> None:
    import h5py

    try:
        start = time.perf_counter()
        with h5py.File(root / "bank.h5", "r") as f:  # plain h5py, no facebank code
            image = f["faces/image"][n // 2]
            ids = f["faces/id"].shape[0]
        top_kb = (root / "bank.h5").stat().st_size / 1e3
        frags = len(list((root / "bank.h5.d").glob("frag-*.h5")))
        print(f"plain h5py opens the {n}-face bank as one file: {ids} rows, faces/image[{n // 2}] is {image.size:,} bytes "
              f"({time.perf_counter() - start:.3f} s); top file {top_kb:.0f} kB over {frags} fragments")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- 5. index build at 1M x 512 --
_INDEX_CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
import h5py, numpy as np
sys.path.insert(0, sys.argv[4])
from facebank._io.download import sha256_file
how, src, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = Path(tempfile.mkdtemp(prefix="bench-index-"))
f = h5py.File(src, "r")
ds = f["vectors"]
rows = np.arange(n, dtype=np.int64)
t = time.perf_counter()
if how == "streamed":
    from facebank.index.build import write_space_files
    write_space_files(out, "s", lambda a, b: ds[a:b], n, ds.shape[1], "flat")
else:  # the build before: the whole column, a fancy-indexed copy, np.save, then the index's own copy
    import faiss
    vectors = np.ascontiguousarray(ds[:n][rows], dtype=np.float32)
    np.save(out / "vectors.s.npy", vectors)
    index = faiss.IndexFlatIP(vectors.shape[1]); index.add(vectors)
    faiss.write_index(index, str(out / "index.s.faiss"))
    sha256_file(out / "vectors.s.npy"), sha256_file(out / "index.s.faiss")
sec = time.perf_counter() - t
import shutil; shutil.rmtree(out)
# VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork + exec.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"s": sec, "rss_mb": hwm / 1024}))
"""


def bench_index(sizes: list[int], dim: int, directory: str | None) -> dict:
    import h5py

    top = max(sizes)
    print(f"\n## 5. index build (flat), {dim}-d float32, peak RSS of a fresh process; source: an HDF5 column "
          f"chunked like the bank's ({top * dim * 4 / 2**30:.1f} GiB at {top:,})")
    root = Path(tempfile.mkdtemp(prefix="bench-index-src-", dir=directory))
    out = {}
    try:
        src = root / "vectors.h5"
        rng = np.random.default_rng(0)
        with h5py.File(src, "w") as f:
            ds = f.create_dataset("vectors", (top, dim), np.float32, chunks=(64, dim))
            for a in range(0, top, 65536):
                v = rng.standard_normal((min(65536, top - a), dim), dtype=np.float32)
                ds[a:a + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
        for n in sizes:
            for how in ("streamed", "whole"):
                r = subprocess.run([sys.executable, "-c", _INDEX_CHILD, how, str(src), str(n), str(ROOT)],
                                   capture_output=True, text=True, check=True)
                out[(how, n)] = json.loads(r.stdout.strip().splitlines()[-1])
            s, w = out[("streamed", n)], out[("whole", n)]
            print(f"{n:>9,} faces: streamed {s['s']:6.1f} s, {s['rss_mb']:7.0f} MB | whole-array {w['s']:6.1f} s, "
                  f"{w['rss_mb']:7.0f} MB | memory ratio {w['rss_mb'] / s['rss_mb']:.2f}x, time ratio "
                  f"{w['s'] / s['s']:.2f}x", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=Path, default=Path(os.environ.get("FACEBANK_ASSETS", ROOT.parent / "shared/assets")))
    ap.add_argument("--e2e-faces", type=int, default=6)
    ap.add_argument("--store-faces", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-faces", type=int, default=30_000, help="the big bank of the write-cost section")
    ap.add_argument("--v1-faces", type=int, default=8192)
    ap.add_argument("--face-bytes", type=float, default=1.3e6)
    ap.add_argument("--index-sizes", default="100000,300000,1000000")
    ap.add_argument("--dir", default=None, help="where the temporary banks go (default: the temp dir)")
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    ap.add_argument("--sections", default="1,2,3,4,5", help="which sections to run (the RESULT line needs 2-4)")
    a = ap.parse_args(argv)
    if a.quick:
        a.e2e_faces, a.store_faces, a.rounds, a.max_faces, a.v1_faces = 2, 8, 1, 2048, 2048
        a.index_sizes = "20000"
    samples = _samples(a.assets)
    run = set(a.sections.split(","))
    nan = float("nan")
    store = e2e = w1k = wbig = nan
    big = a.max_faces
    if "1" in run:
        bench_formats(samples)
    if "2" in run:
        store = bench_store(samples, a.store_faces, a.rounds, a.dir)
    if "3" in run:
        e2e, _ = bench_e2e(samples, a.e2e_faces, a.dir)
    if "4" in run:
        w1k, wbig, big = bench_write(a.max_faces, a.v1_faces, a.face_bytes, a.dir)
    if "5" in run:
        bench_index([int(x) for x in a.index_sizes.split(",")], 512, a.dir)
    label = f"{big // 1000}k" if big >= 1000 else str(big)
    print(f"RESULT e2e_faces_per_s={e2e:.3f} store_faces_per_s_1024={store:.2f} write_ms_per_face_1k={w1k:.2f} "
          f"write_ms_per_face_{label}={wbig:.2f} write_growth={wbig / w1k:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
