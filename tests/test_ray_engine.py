"""The Ray engine on a real local Ray cluster (2 CPUs, started once for the session, no local_mode).

Reference: the local engine. A Ray run must give the same bank: the same face ids in the same
row order, bit-identical vectors, crops and attributes; only the provenance's "engine" entry
(which node and worker did the work) and the write times differ.
"""

from __future__ import annotations

import json
import os
import signal
import threading

import h5py
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from facebank.bank import BankWriter, open_bank  # noqa: E402
from facebank.config import EngineConfig, SpaceConfig, VisionConfig  # noqa: E402
from facebank.engine import run_embed, run_generate, run_ingest  # noqa: E402
from facebank.errors import ClusterError  # noqa: E402
from facebank.ingest import generate_to_bank  # noqa: E402
from facebank.sources.stylegan_source import GenerateConfig  # noqa: E402

pytestmark = pytest.mark.slow

RAY = EngineConfig(kind="ray", actors=2, batch_size=2)
_TIMES = {"added_at"}


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every Ray test (starting one costs ~10 s), shut down at the end."""
    env = {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}} if os.environ.get("PYTHONPATH") else None
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=env)
    yield ray
    ray.shutdown()


def _columns(path) -> dict:
    with h5py.File(path, "r") as f:
        out = {f"faces/{k}": f["faces"][k][:] for k in f["faces"] if k not in _TIMES | {"provenance"}}
        provenance = [json.loads(p) for p in f["faces"]["provenance"][:]]
        out["faces/provenance"] = [json.dumps({k: v for k, v in p.items() if k != "engine"}, sort_keys=True)
                                   for p in provenance]
        for s in f.get("embeddings", {}):
            out[f"{s}/vectors"] = f["embeddings"][s]["vectors"][:]
            out[f"{s}/present"] = f["embeddings"][s]["present"][:]
        out["rejections"] = sorted((r["source_id"], r["reason"], r["stage"]) for r in _rejections(path))
    return out


def _rejections(path):
    with open_bank(path) as b:
        return b.rejections()


def _assert_same_bank(ref, got) -> None:
    a, b = _columns(ref), _columns(got)
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, np.ndarray) and x.dtype.kind != "O":
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f"{key} differs"
        else:
            assert len(x) == len(y) and all(
                np.array_equal(u, v) if isinstance(u, np.ndarray) else u == v for u, v in zip(x, y)), f"{key} differs"


def _gen_cfg(stylegan_fixtures, seeds: str) -> GenerateConfig:
    return GenerateConfig(network=str(stylegan_fixtures / "tiny64.pkl"), seeds=seeds, device="cpu", batch_size=3)


VISION = VisionConfig(min_face_px=8)  # the tiny network's 64 px faces


@pytest.fixture(scope="module")
def local_generated(tmp_path_factory, stylegan_fixtures):
    path = tmp_path_factory.mktemp("local") / "bank.h5"
    generate_to_bank(str(path), _gen_cfg(stylegan_fixtures, "0-11"), vision=VISION, spaces=(SpaceConfig("dlib"),),
                     workers=1)
    return path


def test_generate_over_two_workers_equals_local(tmp_path, stylegan_fixtures, local_generated, ray_cluster):
    bank = tmp_path / "ray.h5"
    cfg = _gen_cfg(stylegan_fixtures, "0-11")
    s = run_generate(str(bank), cfg, engine=RAY, vision=VISION, spaces=(SpaceConfig("dlib"),), workers=4)
    assert s.generated == 12 and s.already_in_bank == 0
    _assert_same_bank(local_generated, bank)
    with open_bank(bank) as b:
        engines = [json.loads(p)["engine"] for p in b.column("provenance")]
        log = b.log()
    assert all(e["kind"] == "ray" and len(e["workers"]) == 2 for e in engines)
    store_models = engines[0]["workers"][1]["models"]
    assert store_models["embedder:dlib"] and store_models["detector"]  # each worker's model checksums
    workers = [e for e in log if e["event"] == "ray_workers"][0]["workers"]
    assert 2 <= len(workers) <= 3 and all(w["node"] for w in workers)  # 1 generator + at most 2 store actors
    again = run_generate(str(bank), cfg, engine=RAY, vision=VISION, spaces=(SpaceConfig("dlib"),))
    assert again.generated == 0 and again.already_in_bank == 12  # resumed: nothing redone, nothing doubled


def _kill_one_actor(name: str, done: threading.Event) -> None:
    """SIGKILLs one Ray Data actor process of the `name` stage once it has started (a dead worker)."""
    import psutil

    while not done.is_set():
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if cmd.startswith(f"ray::MapWorker(MapBatches({name}))"):
                os.kill(p.pid, signal.SIGKILL)
                done.set()
                return
        done.wait(0.05)


def test_killed_worker_loses_and_duplicates_nothing(tmp_path, stylegan_fixtures, local_generated, ray_cluster):
    bank = tmp_path / "ray.h5"
    killed = threading.Event()
    seen: list[int] = []

    def progress(n: int) -> None:  # the first committed face: the job is mid-run, kill a store actor
        seen.append(n)
        if len(seen) == 1:
            _kill_one_actor("StoreActor", killed)

    s = run_generate(str(bank), _gen_cfg(stylegan_fixtures, "0-11"), engine=RAY, vision=VISION,
                     spaces=(SpaceConfig("dlib"),), progress=progress)
    assert killed.is_set() and s.generated == 12 and sum(seen) == 12
    _assert_same_bank(local_generated, bank)  # every face once, in seed order, the same bits
    with open_bank(bank) as b:
        assert len(set(b.column("id"))) == len(b) == 12


def test_ingest_and_embed_equal_local(tmp_path, gp_items, small_bank, ray_cluster):
    """Ray ingest, then Ray embed, against the local ingest that embedded in the same pass (small_bank)."""
    ref, got = small_bank, tmp_path / "ray.h5"
    s = run_ingest(str(got), gp_items, engine=RAY, vision=VisionConfig(), workers=2)
    assert s.added + sum(s.rejected.values()) == len(gp_items)
    e = run_embed(str(got), SpaceConfig("dlib"), engine=RAY)
    assert e.embedded == s.added
    _assert_same_bank(ref, got)
    assert run_ingest(str(got), gp_items, engine=RAY).added == 0  # a re-run skips what is committed


def test_annotate_equals_local(tmp_path, stylegan_fixtures, small_bank, ray_cluster):
    """annotate over Ray: generated faces annotated afterwards (here all rejected, with their reason, as
    locally), and annotated real faces re-estimated with force."""
    from facebank.bank import copy_bank
    from facebank.engine import run_annotate
    from facebank.ingest import annotate_bank

    ref, got = tmp_path / "local.h5", tmp_path / "ray.h5"
    for path in (ref, got):
        generate_to_bank(str(path), _gen_cfg(stylegan_fixtures, "0-3"), vision=None, workers=1)
    annotate_bank(str(ref), VISION, workers=1)
    s = run_annotate(str(got), VISION, engine=RAY)
    assert sum(s.rejected.values()) + s.added == 4
    _assert_same_bank(ref, got)

    ref, got = copy_bank(small_bank, tmp_path / "real_local.h5"), copy_bank(small_bank, tmp_path / "real_ray.h5")
    annotate_bank(str(ref), force=True, workers=1)
    s = run_annotate(str(got), force=True, engine=RAY)
    with open_bank(got) as b:
        assert s.added == len(b) == 40
    _assert_same_bank(ref, got)


def test_gpu_stage_that_cannot_be_placed_is_one_line(ray_cluster):
    from facebank.engine.ray_cluster import gpu_share

    with pytest.raises(ClusterError, match="cannot place the generator stage"):
        gpu_share(ray, 1.0, "generator")  # this cluster has no GPU
    assert gpu_share(ray, None, "generator") == 0.0  # auto: CPU actors where no GPU exists


def test_wrong_address_is_one_line_error(tmp_path):
    """`--ray-address` where no cluster listens: one line naming the address, exit 1, the bank untouched."""
    from typer.testing import CliRunner

    from facebank.cli import app

    bank = tmp_path / "bank.h5"
    with BankWriter(bank):
        pass  # an empty bank: the command must fail on the address, before any work
    r = CliRunner().invoke(app, ["embed", "--bank", str(bank), "--engine", "ray", "--ray-address", "127.0.0.1:1"])
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert lines == ["error: ClusterError: cannot reach the Ray cluster at 127.0.0.1:1: [Errno 111] Connection "
                     "refused"], r.output
    r = CliRunner().invoke(app, ["embed", "--bank", str(bank), "--engine", "spark"])
    assert r.exit_code == 2 and "--engine takes local or ray" in r.output
