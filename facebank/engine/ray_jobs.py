"""The Ray engine's drivers: the same stages as facebank.ingest, with the work in Ray Data actors.

The driver decides what is left to do (resumable exactly as locally: by source id, content hash
and rejections), builds a Ray Data pipeline of callable-class actors, and alone writes the bank,
results in input order, through one BankWriter (pending batches, atomic commits). A killed job
leaves the last committed version plus complete pending batches; a re-run applies them and
redoes only the rest. A dead actor is restarted by Ray and its unfinished batch retried; what it
had half done never reaches the writer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

import numpy as np

from facebank.bank import BankWriter, Rejection, open_bank
from facebank.bank.records import content_sha256
from facebank.bank.schema import STATUS_ANNOTATED, STATUS_GENERATED, STATUS_REJECTED
from facebank.config import EngineConfig, SpaceConfig, VisionConfig
from facebank.engine.ray_actors import AnnotateActor, AnnotateRowActor, EmbedActor, GenerateActor, StoreActor
from facebank.engine.ray_cluster import check_address, cpu_stage, gpu_share, ordered, ray_session, rows
from facebank.ingest.annotator import encoded
from facebank.ingest.generate import GenerateSummary, store_generated
from facebank.ingest.stages import Summary, _reject, _screen
from facebank.ingest.store_workers import StorePlan
from facebank.sources.base import SourceItem
from facebank.vision.image_encode import parse_image_format

__all__ = ["ray_annotate", "ray_embed", "ray_generate", "ray_ingest"]

Progress = Callable[[int], None]


class _Workers:
    """The distinct workers seen in a job's results: logged once, as the job's provenance."""

    def __init__(self):
        self.seen: dict[tuple, dict] = {}

    def add(self, *metas: dict) -> None:
        for m in metas:
            self.seen.setdefault((m["node"], m["pid"]), {k: m[k] for k in ("node", "pid", "models")})

    def log(self, writer: BankWriter, stage: str) -> None:
        writer.log("ray_workers", stage=stage, engine="ray", workers=list(self.seen.values()))


def _session_if(work: int, engine: EngineConfig):
    """Ray only when there is work: nothing left to do starts no cluster."""
    return ray_session(engine) if work else contextlib.nullcontext()


def _engine_provenance(*metas: dict) -> dict:
    return {"kind": "ray", "workers": [{k: m[k] for k in ("node", "pid", "models")} for m in metas]}


def ray_generate(bank_path: str, cfg, *, engine: EngineConfig, vision: VisionConfig | None = None,
                 spaces: tuple[SpaceConfig, ...] = (), progress: Progress | None = None,
                 total: Callable[[int], None] | None = None, pending_every: int = 64,
                 say: Callable[[str], None] | None = None) -> GenerateSummary:
    """generate_to_bank on Ray: generator actors (1 GPU each where there is one), then store actors."""
    import torch

    from facebank._io.download import sha256_file
    from facebank.sources.stylegan import parse_seeds, resolve_network
    from facebank.sources.stylegan_source import SOURCE, source_id

    start = time.perf_counter()
    fmt = parse_image_format(cfg.image_format)
    plan = StorePlan(image_format=fmt, vision=vision, spaces=tuple(spaces) if vision else ())
    seeds = parse_seeds(cfg.seeds)
    sha = sha256_file(resolve_network(cfg.network, cache_dir=cfg.cache_dir, expected_sha256=cfg.sha256))
    summary = GenerateSummary(network_sha256=sha, seeds=cfg.seeds, image_format=fmt.spec)
    with ray_session(engine) as ray, BankWriter(bank_path, batch_size=pending_every) as writer:
        gpus = gpu_share(ray, engine.gpus_per_generator, "generator")
        summary.device = f"ray ({engine.generator_actors} generator actors, {gpus:g} GPU each)"
        with open_bank(bank_path) as bank:
            have = set(bank.column("source_id")[bank.column("source") == SOURCE])
        todo = [s for s in seeds if source_id(sha, cfg.psi, cfg.class_idx, s) not in have]
        summary.already_in_bank = len(seeds) - len(todo)
        if total:
            total(len(todo))
        if say:
            say(f"generating {len(todo)} faces on {summary.device}, stored as {fmt.spec}")
        writer.log("generate_start", network=str(cfg.network), network_sha256=sha, seeds=cfg.seeds, psi=cfg.psi,
                   todo=len(todo), device=summary.device, image_format=fmt.spec, engine="ray")
        workers = _Workers()
        if todo:
            gen_cfg = cfg if gpus else cfg.__class__(**{**cfg.__dict__, "device": "cpu"})
            ds = rows(ray, _generator_batches(gen_cfg, todo, gpus), engine, per_block=1).map_batches(
                GenerateActor, fn_constructor_kwargs={"cfg": gen_cfg, "threads": torch.get_num_threads()},
                **{**cpu_stage(engine, actors=engine.generator_actors, num_gpus=gpus), "batch_size": 1})
            ds = ds.map_batches(StoreActor, fn_constructor_kwargs={"plan": plan}, **cpu_stage(engine))
            for record, rejection, gen_meta, store_meta in ordered(ds, len(todo)):
                workers.add(gen_meta, store_meta)
                for space, info in store_meta["spaces"].items():
                    writer.register_space(space, info)
                record.provenance["engine"] = _engine_provenance(gen_meta, store_meta)
                store_generated(writer, summary, record, rejection, annotating=vision is not None)
                if progress:
                    progress(1)
        summary.workers = len(workers.seen)
        workers.log(writer, "generate")
        writer.log("generate_end", generated=summary.generated, annotated=summary.annotated,
                   rejected=dict(summary.rejected), engine="ray")
    summary.seconds = time.perf_counter() - start
    summary.faces_per_s = summary.generated / summary.seconds if summary.seconds else 0.0
    return summary


def _generator_batches(cfg, todo: list[int], gpus: float) -> list[tuple[int, list[int]]]:
    """(index of the first face, seeds) per generator batch: the local engine's batches, whatever the actors."""
    from facebank.sources.stylegan.sampling import CPU_BATCH

    size = cfg.batch_size if isinstance(cfg.batch_size, int) else (CPU_BATCH if not gpus else 16)
    return [(k, todo[k:k + size]) for k in range(0, len(todo), size)]


def ray_ingest(bank_path: str, items: Iterable[SourceItem], *, engine: EngineConfig,
               vision: VisionConfig = VisionConfig(), spaces: Iterable[SpaceConfig] = (),
               progress: Progress | None = None, batch_size: int = 64, commit_every: int = 2048) -> Summary:
    """ingest on Ray: the driver screens duplicates and earlier rejections, annotate actors do the rest."""
    start = time.perf_counter()
    summary = Summary()
    spaces = tuple(spaces)
    with ray_session(engine) as ray, BankWriter(bank_path, batch_size=batch_size, commit_every=commit_every) as writer:
        writer.log("ingest_start", engine="ray")
        todo = []
        for item in items:
            if _screen(writer, item, summary):
                todo.append(item)
            elif progress:
                progress(1)
        workers = _Workers()
        if todo:
            ds = rows(ray, todo, engine).map_batches(
                AnnotateActor, fn_constructor_kwargs={"vision": vision, "spaces": spaces},
                **cpu_stage(engine, num_gpus=gpu_share(ray, engine.gpus_per_worker, "annotate")))
            for item, (record, reason, meta) in zip(todo, ordered(ds, len(todo))):
                workers.add(meta)
                for space, info in meta["spaces"].items():
                    writer.register_space(space, info)
                if record is not None:
                    record.provenance["engine"] = _engine_provenance(meta)
                    writer.add_face(record)
                    summary.added += 1
                else:
                    _reject(writer, item, summary, content_sha256(encoded(item)), *reason, "annotate")
                if progress:
                    progress(1)
        workers.log(writer, "ingest")
        writer.log("ingest_end", added=summary.added, rejected=dict(summary.rejected), duplicates=summary.duplicates,
                   engine="ray")
    summary.seconds = time.perf_counter() - start
    return summary


def embed_todo(bank_path: str, space: SpaceConfig) -> tuple[dict, np.ndarray, int]:
    """(space info, rows still to embed, bank size), refusing a space made by another model (as locally)."""
    from facebank.errors import InputError
    from facebank.vision.registry import load_embedder

    embedder = load_embedder(space.space, space.model_path, space.contract)
    info = {"model": embedder.info.name, "sha256": embedder.info.sha256, "dim": int(embedder.dim),
            "version": embedder.info.version}
    with open_bank(bank_path) as bank:
        annotated = bank.column("status") == STATUS_ANNOTATED
        if space.space in bank.spaces:
            old = bank.space_info(space.space)
            if old.get("sha256") != info["sha256"] or int(old["dim"]) != info["dim"]:
                raise InputError(f"space {space.space!r} in {bank_path} was made by {old.get('model')}; "
                                 f"choose another space name for {info['model']}")
            annotated &= ~bank.present(space.space)
        return info, np.flatnonzero(annotated), len(bank)


def ray_embed(bank_path: str, space: SpaceConfig, *, engine: EngineConfig, progress: Progress | None = None,
              total: Callable[[int], None] | None = None) -> Summary:
    """embed_bank on Ray: embed actors read their rows from the bank; the driver writes the vectors."""
    start = time.perf_counter()
    summary = Summary()
    check_address(engine)  # before any work or progress bar
    info, todo, n = embed_todo(bank_path, space)
    summary.already_in_bank = n - len(todo)
    if total:
        total(len(todo))
    with _session_if(len(todo), engine) as ray:
        with BankWriter(bank_path, create=False) as writer:
            writer.log("embed_start", space=space.space, model=info, engine="ray")
            workers = _Workers()
            if len(todo):
                ds = rows(ray, [int(r) for r in todo], engine).map_batches(
                    EmbedActor, fn_constructor_kwargs={"bank_path": str(bank_path), "space": space},
                    **cpu_stage(engine, num_gpus=gpu_share(ray, engine.gpus_per_worker, "embed")))
                for fid, vec, meta in ordered(ds, len(todo)):
                    workers.add(meta)
                    writer.set_embeddings(space.space, info, [fid], vec[None, :])
                    summary.embedded += 1
                    if progress:
                        progress(1)
            workers.log(writer, "embed")
            writer.log("embed_end", space=space.space, embedded=summary.embedded, engine="ray")
    summary.seconds = time.perf_counter() - start
    return summary


def ray_annotate(bank_path: str, vision: VisionConfig = VisionConfig(), *, engine: EngineConfig, force: bool = False,
                 progress: Progress | None = None, total: Callable[[int], None] | None = None) -> Summary:
    """annotate_bank on Ray: annotate actors read their rows from the bank; the driver writes the columns."""
    from facebank.vision.registry import load_attribute_model

    start = time.perf_counter()
    summary = Summary()
    check_address(engine)
    name = load_attribute_model(vision.attributes, vision.attributes_path).info.name
    with open_bank(bank_path) as bank:
        status = bank.column("status")
        done = (bank.column("attribute_model") == name) & np.isfinite(bank.column("model_age"))
        new = status == STATUS_GENERATED
        redo = (status == STATUS_ANNOTATED) & (force | ~done)
        todo = np.flatnonzero(new | redo)
        summary.already_in_bank = len(bank) - len(todo)
    if total:
        total(len(todo))
    with _session_if(len(todo), engine) as ray:
        with BankWriter(bank_path, create=False) as writer:
            writer.log("annotate_start", force=force, engine="ray")
            workers = _Workers()
            if len(todo):
                ds = rows(ray, [(int(r), bool(new[r])) for r in todo], engine).map_batches(
                    AnnotateRowActor, fn_constructor_kwargs={"bank_path": str(bank_path), "vision": vision},
                    **cpu_stage(engine, num_gpus=gpu_share(ray, engine.gpus_per_worker, "annotate")))
                for fid, item, cols, reason, meta in ordered(ds, len(todo)):
                    workers.add(meta)
                    if cols is None:
                        writer.add_rejection(Rejection(item.source, item.source_id, content_sha256(item.data),
                                                       reason[0], reason[1], "annotate"))
                        summary.rejected[reason[0]] += 1
                        cols = {"status": STATUS_REJECTED}
                    else:
                        cols["status"] = STATUS_ANNOTATED
                        summary.added += 1
                    writer.set_attributes([fid], {k: np.array([v]) for k, v in cols.items()})
                    if progress:
                        progress(1)
            workers.log(writer, "annotate")
            writer.log("annotate_end", annotated=summary.added, rejected=dict(summary.rejected), engine="ray")
    summary.seconds = time.perf_counter() - start
    return summary
