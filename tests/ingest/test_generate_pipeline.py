"""The overlapped write path of generated faces: encode, annotate and embed in worker processes.

Reference: the sequential path (store the generated face, then `annotate_bank`, then
`embed_bank`), which reads the stored image back. The overlapped pass must give the same bank
columns and the same vectors bit for bit, in the same row order, with any number of workers.
"""

from __future__ import annotations

import json
from functools import partial

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from facebank.bank import BankWriter, open_bank
from facebank.bank.schema import STATUS_ANNOTATED
from facebank.config import SpaceConfig, VisionConfig
from facebank.errors import InputError
from facebank.ingest import annotate_bank, embed_bank, generate_to_bank
from facebank.ingest.pool import worker_pool
from facebank.ingest.store_workers import StorePlan, StoreWorker, generated_record
from facebank.sources.base import SourceItem
from facebank.sources.stylegan import Generator, save_generator
from facebank.sources.stylegan.sampling import resolve_device
from facebank.sources.stylegan_source import GenerateConfig
from facebank.vision.image_encode import encode_image, parse_image_format
from facebank.vision.image_io import decode_image

# Columns that differ by construction: when the row was written.
_TIMES = {"added_at"}


def _ffhq_items(assets, n: int) -> list[SourceItem]:
    paths = sorted((assets / "stylegan2ada_ffhq_samples").glob("seed*.png"))[:n]
    return [SourceItem("stylegan", f"test:seed{k:04d}", metadata={"seed": k},
                       pixels=np.asarray(Image.open(p).convert("RGB"))) for k, p in enumerate(paths)]


def _columns(path) -> dict:
    with h5py.File(path, "r") as f:
        out = {f"faces/{k}": f["faces"][k][:] for k in f["faces"] if k not in _TIMES}
        for s in f["embeddings"]:
            out[f"{s}/vectors"] = f["embeddings"][s]["vectors"][:]
            out[f"{s}/present"] = f["embeddings"][s]["present"][:]
    return out


def _same(a, b) -> bool:
    if a.dtype.kind == "O":
        return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b))
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@pytest.mark.slow
def test_overlapped_pass_equals_store_then_annotate_then_embed(tmp_path, assets):
    items = _ffhq_items(assets, 3)
    vision, spaces = VisionConfig(), (SpaceConfig("dlib"),)
    fmt = parse_image_format("png")

    # Sequential reference: store as generated, then the bank's own annotate and embed stages.
    ref = tmp_path / "ref.h5"
    with BankWriter(ref) as w:
        for item in items:
            w.add_face(generated_record(item, encode_image(item.pixels, fmt), fmt))
    annotate_bank(str(ref), vision, workers=1)
    embed_bank(str(ref), spaces[0], workers=1)

    plan = StorePlan(image_format=fmt, vision=vision, spaces=spaces)
    local = StoreWorker(plan)
    results = {}
    for workers in (1, 2):  # in this process, and two spawned workers
        with worker_pool(partial(StoreWorker, plan), workers, local=local) as pool:
            results[workers] = (pool.processes, list(pool.map(items)))
        bank = tmp_path / f"w{workers}.h5"
        with BankWriter(bank) as w:
            w.register_space("dlib", local.space_infos()["dlib"])
            for stored in results[workers][1]:
                assert stored.rejected is None
                w.add_face(stored.record)
        a, b = _columns(ref), _columns(bank)
        assert a.keys() == b.keys()
        for key in a:
            assert _same(a[key], b[key]), f"{key} differs with {workers} worker(s)"
    assert results[1][0] == 0 and results[2][0] == 2
    with open_bank(tmp_path / "w2.h5") as b:
        assert (b.column("status") == STATUS_ANNOTATED).all() and b.present("dlib").all()
        assert list(b.column("source_id")) == [i.source_id for i in items]  # input order kept


@pytest.mark.parametrize("spec", ["png", "png:1", "png:6", "webp", "jpeg:95"])
def test_stored_formats_decode_as_recorded(assets, spec):
    item = _ffhq_items(assets, 1)[0]
    fmt = parse_image_format(spec)
    record = StoreWorker(StorePlan(image_format=fmt))(item).record
    assert record.image_format == fmt.kind and record.provenance["image_format"] == spec
    decoded = decode_image(record.image)
    if fmt.lossless:
        assert np.array_equal(decoded, item.pixels)
    else:  # q95: visually lossless, measurably not exact
        err = np.abs(decoded.astype(int) - item.pixels).mean()
        assert 0 < err < 3


@pytest.mark.parametrize("bad", ["gif", "png:10", "jpeg:0", "jpeg:x", "webp:80"])
def test_bad_image_format_is_input_error(bad):
    with pytest.raises(InputError, match="image format"):
        parse_image_format(bad)


@pytest.mark.parametrize("bad", ["nope", "cuda:x", "gpu"])
def test_bad_device_is_input_error(bad):
    with pytest.raises(InputError, match="device"):
        resolve_device(bad)


def test_auto_device_follows_torch():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.slow
def test_1024px_generation_through_the_whole_pass_on_cpu(tmp_path):
    """A full-size FFHQ-config generator (random weights) at 1024 px, annotated and embedded in one pass."""
    torch.manual_seed(0)
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                  mapping_kwargs=dict(num_layers=8),
                  synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256))
    net = save_generator(G, tmp_path / "ffhq_random.fbg")
    bank = tmp_path / "b.h5"
    cfg = GenerateConfig(network=str(net), seeds="0-1", batch_size=1, device="auto")
    s = generate_to_bank(str(bank), cfg, vision=VisionConfig(), spaces=(SpaceConfig("dlib"),), workers=2)
    assert s.generated == 2 and s.workers == 2 and s.image_format == "png"
    assert s.device == ("cuda:0" if torch.cuda.is_available() else "cpu") or s.device.startswith("cuda")
    # Random weights draw no face: each seed is kept, rejected with its reason, and not retried.
    assert s.annotated + sum(s.rejected.values()) == 2
    with open_bank(bank) as b:
        assert len(b) == 2 and set(b.column("width")) == {1024} and set(b.column("image_format")) == {"png"}
        assert decode_image(b.image_bytes(0)).shape == (1024, 1024, 3)
        starts = [e for e in b.log() if e["event"] == "generate_start"]
        assert starts[-1]["device"] == s.device and starts[-1]["image_format"] == "png"
        assert json.dumps(b.face(0).provenance)  # provenance stays JSON
    again = generate_to_bank(str(bank), cfg, vision=VisionConfig(), workers=1)
    assert again.generated == 0 and again.already_in_bank == 2
