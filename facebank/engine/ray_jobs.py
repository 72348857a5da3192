"""The Ray engine's drivers: the same stages as facebank.ingest, with the work in Ray Data actors.

The driver decides what is left to do (resumable exactly as locally: by source id, content hash
and rejections) and builds a Ray Data pipeline of callable-class actors. The last actor of each
pipeline writes its results into the bank's storage as batch files; the driver, holding the
bank's one BankWriter, adopts them in input order and alone commits them (`ray_batches`). A
killed job leaves the last committed version plus the batches already adopted, which the next
writer commits first; a re-run redoes only the rest. A dead actor is restarted by Ray and its
unfinished batch retried; what it had half written is never adopted and is deleted.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Sized

import numpy as np

from facebank.bank import BankWriter, open_bank
from facebank.bank.schema import STATUS_ANNOTATED
from facebank.config import EngineConfig, SpaceConfig, VisionConfig
from facebank.engine.ray_actors import AnnotateActor, AnnotateRowActor, EmbedActor, GenerateActor, StoreActor
from facebank.engine.ray_batches import Committer
from facebank.engine.ray_cluster import check_address, cpu_stage, gpu_share, ordered, ray_session, rows
from facebank.ingest.generate import GenerateSummary, missing_seeds
from facebank.ingest.stages import Summary, _check_counts, _screen, annotate_todo, space_info
from facebank.ingest.store_workers import StorePlan
from facebank.progress import Progress, Tally
from facebank.sources.base import SourceItem
from facebank.sources.seed_grid import seed_grid
from facebank.vision.image_encode import parse_image_format

__all__ = ["ray_annotate", "ray_embed", "ray_generate", "ray_ingest"]


def _session_if(work: int, engine: EngineConfig):
    """Ray only when there is work: nothing left to do starts no cluster."""
    return ray_session(engine) if work else contextlib.nullcontext()


@contextlib.contextmanager
def _committing(writer: BankWriter, summary, engine: EngineConfig, tally: Tally, stage: str):
    """A Committer for one job: commits what is adopted at the end, logs the workers, clears the work folder."""
    committer = Committer(writer, summary, commit_every=engine.commit_every, tally=tally)
    try:
        yield committer
        committer.commit()
        committer.workers.log(writer, stage)
    finally:
        writer.clear_work()  # files of retried or failed batches: never adopted, never committed


def ray_generate(bank_path: str, cfg, *, engine: EngineConfig, vision: VisionConfig | None = None,
                 spaces: tuple[SpaceConfig, ...] = (), progress: Progress | None = None, pending_every: int = 64,
                 say: Callable[[str], None] | None = None) -> GenerateSummary:
    """generate_to_bank on Ray: generator actors (1 GPU each where there is one), then store actors that write."""
    import torch

    from facebank._io.download import sha256_file
    from facebank.seeds import parse_seeds
    from facebank.sources.stylegan import resolve_network
    from facebank.sources.stylegan_source import source_id

    start = time.perf_counter()
    fmt = parse_image_format(cfg.image_format)
    plan = StorePlan(image_format=fmt, vision=vision, spaces=tuple(spaces) if vision else ())
    seeds = parse_seeds(cfg.seeds)
    sha = sha256_file(resolve_network(cfg.network, cache_dir=cfg.cache_dir, expected_sha256=cfg.sha256))
    summary = GenerateSummary(network_sha256=sha, seeds=cfg.seeds, image_format=fmt.spec)
    with ray_session(engine) as ray, BankWriter(bank_path, batch_size=pending_every) as writer:
        gpus = gpu_share(ray, engine.gpus_per_generator, "generator")
        summary.device = f"ray ({engine.generator_actors} generator actors, {gpus:g} GPU each)"
        missing = missing_seeds(bank_path, seeds, lambda s: source_id(sha, cfg.psi, cfg.class_idx, s))
        todo = sum(missing)
        summary.already_in_bank = len(seeds) - todo
        size = _generator_batch_size(cfg, gpus)
        tally = Tally(progress, "generate")
        tally.start(todo)
        if say:
            say(f"generating {todo} faces on {summary.device}, stored as {fmt.spec}")
        writer.log("generate_start", network=str(cfg.network), network_sha256=sha, seeds=cfg.seeds, psi=cfg.psi,
                   todo=todo, batch_size=size, device=summary.device, image_format=fmt.spec, engine="ray")
        with _committing(writer, summary, engine, tally, "generate") as committer:
            if todo:
                gen_cfg = cfg if gpus else cfg.__class__(**{**cfg.__dict__, "device": "cpu"})
                # One job per grid batch, as locally; its faces take rows start.. of the to-do order.
                ds = rows(ray, list(seed_grid(seeds, missing, size)), engine, per_block=1).map_batches(
                    GenerateActor, fn_constructor_kwargs={"cfg": gen_cfg, "threads": torch.get_num_threads()},
                    **{**cpu_stage(engine, actors=engine.generator_actors, num_gpus=gpus), "batch_size": 1})
                ds = ds.map_batches(StoreActor, fn_constructor_kwargs={"plan": plan, "bank_path": str(bank_path)},
                                    **cpu_stage(engine))
                for result in ordered(ds, todo):
                    committer.take(result)
        summary.workers = len(committer.workers.seen)
        writer.log("generate_end", generated=summary.generated, annotated=summary.annotated,
                   rejected=dict(summary.rejected), engine="ray")
    summary.seconds = time.perf_counter() - start
    summary.faces_per_s = summary.generated / summary.seconds if summary.seconds else 0.0
    return summary


GPU_ACTOR_BATCH = 16  # "auto" on GPU actors: the driver cannot measure an actor's free GPU memory


def _generator_batch_size(cfg, gpus: float) -> int:
    """The grid's batch size: on CPU the local engine's (`resolve_batch_size`), so both make the same bits."""
    import torch

    from facebank.sources.stylegan import resolve_batch_size

    if gpus and cfg.batch_size == "auto":
        return GPU_ACTOR_BATCH
    return resolve_batch_size(cfg.batch_size, None, torch.device("cpu"))


def ray_ingest(bank_path: str, items: Iterable[SourceItem], *, engine: EngineConfig,
               vision: VisionConfig = VisionConfig(), spaces: Iterable[SpaceConfig] = (),
               progress: Progress | None = None, batch_size: int = 64, commit_every: int = 2048) -> Summary:
    """ingest on Ray: the driver screens duplicates and earlier rejections, annotate actors do and write the rest.

    `items` is read in windows of `engine.window` items, one Ray Data job each, so the driver
    holds at most one window of images however long the source is.
    """
    start = time.perf_counter()
    summary = Summary()
    spaces = tuple(spaces)
    tally = Tally(progress, "ingest", len(items) if isinstance(items, Sized) else None)
    items = iter(items)
    with ray_session(engine) as ray, BankWriter(bank_path, batch_size=batch_size, commit_every=commit_every) as writer:
        writer.log("ingest_start", engine="ray")
        stage = cpu_stage(engine, num_gpus=gpu_share(ray, engine.gpus_per_worker, "annotate"))
        with _committing(writer, summary, engine, tally, "ingest") as committer:
            while window := list(itertools.islice(items, engine.window)):
                summary.items += len(window)
                todo = [item for item in window if _screen(writer, item, summary)]
                committer.done(len(window) - len(todo))  # screened here: settled with the next commit
                if todo:
                    ds = rows(ray, todo, engine).map_batches(
                        AnnotateActor, fn_constructor_kwargs={"vision": vision, "spaces": spaces,
                                                              "bank_path": str(bank_path)}, **stage)
                    for result in ordered(ds, len(todo)):
                        committer.take(result)
        _check_counts(summary)
        writer.log("ingest_end", added=summary.added, rejected=dict(summary.rejected), duplicates=summary.duplicates,
                   engine="ray")
    summary.seconds = time.perf_counter() - start
    return summary


def embed_todo(bank_path: str, space: SpaceConfig) -> tuple[dict, np.ndarray, int]:
    """(space info, rows still to embed, bank size), refusing a space made by another model (as locally)."""
    from facebank.errors import InputError
    from facebank.vision.registry import load_embedder

    info = space_info(load_embedder(space.space, space.model_path, space.contract))
    with open_bank(bank_path) as bank:
        annotated = bank.column("status") == STATUS_ANNOTATED
        if space.space in bank.spaces:
            old = bank.space_info(space.space)
            if old.get("sha256") != info["sha256"] or int(old["dim"]) != info["dim"]:
                raise InputError(f"space {space.space!r} in {bank_path} was made by {old.get('model')}; "
                                 f"choose another space name for {info['model']}")
            annotated &= ~bank.present(space.space)
        return info, np.flatnonzero(annotated), len(bank)


def ray_embed(bank_path: str, space: SpaceConfig, *, engine: EngineConfig, progress: Progress | None = None) -> Summary:
    """embed_bank on Ray: embed actors read their rows from the bank and write the vectors as batch files."""
    start = time.perf_counter()
    summary = Summary()
    check_address(engine)  # before any work or progress bar
    info, todo, n = embed_todo(bank_path, space)
    summary.already_in_bank = n - len(todo)
    tally = Tally(progress, f"embed {space.space}")
    tally.start(len(todo))
    with _session_if(len(todo), engine) as ray:
        with BankWriter(bank_path, create=False) as writer:
            writer.log("embed_start", space=space.space, model=info, engine="ray")
            with _committing(writer, summary, engine, tally, "embed") as committer:
                if len(todo):
                    ds = rows(ray, [int(r) for r in todo], engine).map_batches(
                        EmbedActor, fn_constructor_kwargs={"bank_path": str(bank_path), "space": space, "info": info},
                        **cpu_stage(engine, num_gpus=gpu_share(ray, engine.gpus_per_worker, "embed")))
                    for result in ordered(ds, len(todo)):
                        committer.take(result)
            writer.log("embed_end", space=space.space, embedded=summary.embedded, engine="ray")
    summary.seconds = time.perf_counter() - start
    return summary


def ray_annotate(bank_path: str, vision: VisionConfig = VisionConfig(), *, engine: EngineConfig, force: bool = False,
                 progress: Progress | None = None) -> Summary:
    """annotate_bank on Ray: annotate actors read their rows from the bank and write the columns as batch files."""
    from facebank.vision.registry import load_attribute_model

    start = time.perf_counter()
    summary = Summary()
    check_address(engine)
    name = load_attribute_model(vision.attributes, vision.attributes_path).info.name
    with open_bank(bank_path) as bank:
        todo, new = annotate_todo(bank, name, force)
        summary.already_in_bank = len(bank) - len(todo)
    tally = Tally(progress, "annotate")
    tally.start(len(todo))
    with _session_if(len(todo), engine) as ray:
        with BankWriter(bank_path, create=False) as writer:
            writer.log("annotate_start", force=force, engine="ray")
            with _committing(writer, summary, engine, tally, "annotate") as committer:
                if len(todo):
                    ds = rows(ray, [(int(r), bool(new[r])) for r in todo], engine).map_batches(
                        AnnotateRowActor, fn_constructor_kwargs={"bank_path": str(bank_path), "vision": vision},
                        **cpu_stage(engine, num_gpus=gpu_share(ray, engine.gpus_per_worker, "annotate")))
                    for result in ordered(ds, len(todo)):
                        committer.take(result)
            writer.log("annotate_end", annotated=summary.added, rejected=dict(summary.rejected), engine="ray")
    summary.seconds = time.perf_counter() - start
    return summary
