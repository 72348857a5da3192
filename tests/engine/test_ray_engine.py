"""The Ray engine on a real local Ray cluster (2 CPUs, started once for the session, no local_mode).

Reference: the local engine. A Ray run must give the same bank: the same face ids in the same
row order, bit-identical vectors, crops and attributes; only the provenance's "engine" entry
(which node and worker did the work) and the write times differ.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from facebank.bank import BankWriter, open_bank  # noqa: E402
from facebank.bank.writer import work_dir  # noqa: E402
from facebank.config import EngineConfig, SpaceConfig, VisionConfig  # noqa: E402
from facebank.engine import run_embed, run_generate, run_ingest  # noqa: E402
from facebank.errors import ClusterError  # noqa: E402
from facebank.ingest import generate_to_bank  # noqa: E402
from facebank.sources.stylegan_source import GenerateConfig  # noqa: E402

pytestmark = pytest.mark.slow

# Small batches and commits, so a 12-face job writes six worker files and lands in several commits.
RAY = EngineConfig(kind="ray", actors=2, batch_size=2, commit_every=4)
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


def _gen_cfg(stylegan_fixtures, seeds: str, batch_size: int = 3) -> GenerateConfig:
    return GenerateConfig(network=str(stylegan_fixtures / "tiny64.pkl"), seeds=seeds, device="cpu",
                          batch_size=batch_size)


VISION = VisionConfig(min_face_px=8)  # the tiny network's 64 px faces


@pytest.fixture(scope="module")
def local_generated(tmp_path_factory, stylegan_fixtures):
    path = tmp_path_factory.mktemp("local") / "bank.h5"
    generate_to_bank(str(path), _gen_cfg(stylegan_fixtures, "0-11"), vision=VISION, spaces=(SpaceConfig("dlib"),),
                     workers=1)
    return path


def _kill_a_writing_worker(bank, done: threading.Event, killed: list) -> None:
    """SIGKILLs the first worker caught writing a batch file: its temporary file names its pid."""
    directory = work_dir(bank)
    deadline = time.monotonic() + 120
    while not done.is_set() and time.monotonic() < deadline:
        with os.scandir(directory) if directory.is_dir() else contextlib.nullcontext(()) as entries:
            for e in entries:
                if e.name.startswith(".batch-") and e.name.endswith(".tmp"):
                    pid = int(e.name.rsplit(".", 2)[-2].split("-")[0])
                    os.kill(pid, signal.SIGKILL)
                    killed.append((pid, directory / e.name, os.path.exists(directory / e.name)))
                    return
        time.sleep(0.0005)


def test_generate_over_two_workers_equals_local_with_a_worker_killed_while_writing(
        tmp_path, stylegan_fixtures, local_generated, ray_cluster):
    """Generate + annotate + embed over 2 store actors equals the local engine bit for bit, though one
    actor is SIGKILLed while it writes a batch file: Ray retries its batch, its half-written file is
    never committed and is deleted; nothing is lost or doubled."""
    bank = tmp_path / "ray.h5"
    cfg = _gen_cfg(stylegan_fixtures, "0-11")
    done, killed, seen = threading.Event(), [], []
    watcher = threading.Thread(target=_kill_a_writing_worker, args=(bank, done, killed), daemon=True)
    watcher.start()
    try:
        s = run_generate(str(bank), cfg, engine=RAY, vision=VISION, spaces=(SpaceConfig("dlib"),), workers=4,
                         progress=seen.append)
    finally:
        done.set()
        watcher.join()
    assert killed and killed[0][2], "no worker was caught writing"
    assert s.generated == 12 and s.already_in_bank == 0
    done = [e.done for e in seen if e.done]
    assert done[-1] == 12 and len(done) >= 3  # the bar counts committed faces, commit by commit
    _assert_same_bank(local_generated, bank)  # every face once, in seed order, the same bits
    with open_bank(bank) as b:
        assert len(set(b.column("id"))) == len(b) == 12
        engines = [json.loads(p)["engine"] for p in b.column("provenance")]
        log = b.log()
    assert not killed[0][1].exists() and list(work_dir(bank).iterdir()) == []  # the half file is gone
    assert all(e["kind"] == "ray" and len(e["workers"]) == 2 for e in engines)
    store_models = engines[0]["workers"][1]["models"]
    assert store_models["embedder:dlib"] and store_models["detector"]  # each worker's model checksums
    workers = [e for e in log if e["event"] == "ray_workers"][0]["workers"]
    assert 2 <= len(workers) <= 4 and all(w["node"] for w in workers)  # 1 generator + store actors (+ 1 restarted)
    again = run_generate(str(bank), cfg, engine=RAY, vision=VISION, spaces=(SpaceConfig("dlib"),))
    assert again.generated == 0 and again.already_in_bank == 12  # resumed: nothing redone, nothing doubled


_DRIVER = """
import sys, ray
from facebank.config import EngineConfig
from facebank.engine import run_generate
from facebank.sources.stylegan_source import GenerateConfig
ray.init(address=sys.argv[1], log_to_driver=False)
cfg = GenerateConfig(network=sys.argv[3], seeds="0-11", device="cpu", batch_size=8)
run_generate(sys.argv[2], cfg, engine=EngineConfig(kind="ray", actors=2, batch_size=2, commit_every=2),
             progress=lambda e: e.done and print("committed", e.done, flush=True))
"""


def test_killed_driver_rerun_finishes_without_duplicates(tmp_path, stylegan_fixtures, ray_cluster):
    """The driver SIGKILLed after its first commit: the bank opens; a re-run commits what it had adopted,
    redoes the rest, and ends with every seed once, the same bank as an uninterrupted local run."""
    bank, local = tmp_path / "ray.h5", tmp_path / "local.h5"
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, address, str(bank), str(stylegan_fixtures / "tiny64.pkl")],
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        first = proc.stdout.readline()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(60)
    assert first.startswith("committed")
    with open_bank(bank) as b:
        assert 0 < len(b) < 12  # killed mid-job; the bank opens
    # Generator batches lie on a grid over all 12 seeds, so the resumed job makes each face in the
    # batch an uninterrupted run makes it in: the same bits. (Batches of 8: cut from the seeds left
    # instead, the tiny network's bits would differ for every kill point but 8 faces.)
    cfg = _gen_cfg(stylegan_fixtures, "0-11", batch_size=8)
    generate_to_bank(str(local), cfg, workers=1)
    again = run_generate(str(bank), cfg, engine=RAY)
    assert again.already_in_bank + again.generated == 12
    _assert_same_bank(local, bank)
    with open_bank(bank) as b:
        assert len(set(b.column("id"))) == len(set(b.column("source_id"))) == len(b) == 12


def test_ingest_and_embed_equal_local(tmp_path, gp_items, small_bank, ray_cluster):
    """Ray ingest, then Ray embed, against the local ingest that embedded in the same pass (small_bank)."""
    ref, got = small_bank, tmp_path / "ray.h5"
    seen: list = []
    windows = EngineConfig(kind="ray", actors=2, batch_size=4, commit_every=8, window=20)  # 2 windows of 20 images
    s = run_ingest(str(got), iter(gp_items), engine=windows, vision=VisionConfig(), workers=2, progress=seen.append)
    assert s.added + sum(s.rejected.values()) == len(gp_items) == seen[-1].done and len(seen) >= 3
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
