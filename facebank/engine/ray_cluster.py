"""Connecting to a Ray cluster, the per-stage resources, and results back in input order.

Only the driver commits to the bank: every stage takes and returns rows `{"i": input index, "job":
pickled payload}` (so stages chain; the last stage's payloads name the batch files its actors
wrote, see `ray_batches`), and `ordered` hands them back in input order (a retried batch can only
replace a lost one, never add a second copy), so the bank does not depend on how many actors ran
or which finished first.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator

import numpy as np

from facebank.config import EngineConfig
from facebank.errors import ClusterError

__all__ = ["check_address", "cpu_stage", "gpu_share", "ordered", "ray_session", "rows", "worker_meta"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextlib.contextmanager
def ray_session(engine: EngineConfig):
    """Ray connected for one job: joins a running session (tests, notebooks), else starts or reaches one.

    A session this job started is shut down at the end, so no Ray process outlives the command.
    """
    try:
        import ray
    except ImportError:
        raise ClusterError("the Ray engine needs the ray extra: pip install 'facebank[ray]'") from None
    check_address(engine)
    if ray.is_initialized():
        yield ray
        return
    # Workers inherit the driver's environment, so a source checkout on PYTHONPATH reaches them too.
    env = {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}} if os.environ.get("PYTHONPATH") else None
    try:
        ray.init(address=engine.address, include_dashboard=False, log_to_driver=False, runtime_env=env,
                 logging_level="ERROR", configure_logging=True)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: all mean "no cluster here"
        where = engine.address or "a new local cluster"
        raise ClusterError(f"cannot reach the Ray cluster at {where}: {_first_line(exc)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def check_address(engine: EngineConfig) -> None:
    """A given address must answer: ray.init would retry an unreachable one for minutes."""
    if engine.address not in (None, "auto", "local"):
        _check_reachable(engine.address)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    import socket

    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or hostport, int(port) if port.isdigit() else 6379), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {_first_line(exc)}") from None


def gpu_share(ray, wanted: float | None, stage: str) -> float:
    """GPUs per actor of `stage`: `wanted`, or 1 when None and the cluster has a GPU; refused if none fit."""
    have = float(ray.cluster_resources().get("GPU", 0.0))
    if wanted is None:
        return 1.0 if have >= 1 else 0.0
    if wanted > have:
        raise ClusterError(f"cannot place the {stage} stage: it asks {wanted:g} GPU per actor and the cluster "
                           f"has {have:g}; give --engine local, add a GPU node, or set gpus_per_* to 0")
    return float(wanted)


def cpu_stage(engine: EngineConfig, *, actors: int | None = None, num_gpus: float = 0.0) -> dict:
    """map_batches arguments of one actor stage: a fixed pool of actors and each one's share of a node.

    Ray Data restarts a dead actor and retries its unfinished batch (its actors default to
    max_restarts=-1, max_task_retries=-1); the batch's output exists only once it finished.
    """
    import ray.data

    return dict(compute=ray.data.ActorPoolStrategy(size=actors or engine.actors), num_cpus=engine.cpus_per_actor,
                num_gpus=num_gpus or None, batch_size=engine.batch_size, batch_format="numpy")


def rows(ray, payloads: list, engine: EngineConfig, *, per_block: int | None = None):
    """A dataset of `{"i", "job"}` rows, in small blocks so every actor gets work early."""
    items = [{"i": i, "job": pickle.dumps(p)} for i, p in enumerate(payloads)]
    blocks = max(1, min(len(items), -(-len(items) // (per_block or engine.batch_size))))
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # the driver draws its own bar: committed faces
    return ray.data.from_items(items, override_num_blocks=blocks)


def outputs(batch: dict, results: list) -> dict:
    return {"i": np.asarray(batch["i"], np.int64), "job": np.array([pickle.dumps(r) for r in results], dtype=object)}


def jobs_of(batch: dict) -> list:
    return [pickle.loads(j) for j in batch["job"]]


def ordered(ds, n: int) -> Iterator:
    """The n results of `ds` in input order; a missing one is an error, never a silent gap."""
    buffer: dict[int, object] = {}
    nxt = 0
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i, out in zip(batch["i"], batch["job"]):
                if int(i) >= nxt:
                    buffer.setdefault(int(i), out)
            while nxt in buffer:
                yield pickle.loads(buffer.pop(nxt))
                nxt += 1
    except ClusterError:
        raise
    except Exception as exc:
        if type(exc).__name__ in ("RayTaskError", "RayActorError", "ObjectLostError", "OwnerDiedError",
                                  "RaySystemError", "UserCodeException"):
            raise ClusterError(f"a Ray stage failed ({_first_line(exc)}); finished faces are kept: re-run "
                               "to continue") from exc
        raise
    if nxt != n:
        raise ClusterError(f"the Ray job returned {nxt} of {n} results; finished faces are kept: re-run to continue")


def worker_meta(models: dict) -> dict:
    """Who did the work: the node, the worker process, and the checksums of the models it loaded."""
    import ray

    return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "models": models}
