"""faces/s of `embed` (dlib space) on the Ray engine over 1 and 2 CPU actors, against the local engine.

The faces: the real generated.photos export in ../shared/assets, ingested once (annotated, no
vectors) into a temporary bank; every run embeds a copy of it. The Ray cluster is started once
(`ray.init(num_cpus=N)`, or joined with --address) and its start is not counted; each Ray run's
time includes starting its actors and loading their models, as a real job pays them. Optionally
(--generate NETWORK) also StyleGAN generation with GPU actors where the cluster has GPUs.

    python tools/bench_ray.py [--faces 80] [--address auto] [--generate net.pkl --seeds 0-63]

Last line: RESULT embed_local_w1_fps=<a> embed_local_w2_fps=<b> embed_ray_a1_fps=<c> embed_ray_a2_fps=<d> [...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ASSETS = Path(os.environ.get("FACEBANK_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))


def _items(n: int):
    from facebank.sources.generated_photos import iter_generated_photos

    items = [i for i in iter_generated_photos(ASSETS / "generated_photos") if i.data]
    return items[:n]


def _embed(base: Path, tmp: Path, name: str, **kwargs) -> float:
    from facebank.bank import copy_bank
    from facebank.config import SpaceConfig
    from facebank.engine import run_embed

    bank = tmp / f"{name}.h5"
    copy_bank(base, bank)
    start = time.perf_counter()
    s = run_embed(str(bank), SpaceConfig("dlib"), **kwargs)
    fps = s.embedded / (time.perf_counter() - start)
    print(f"{name}: {s.embedded} faces, {fps:.2f} faces/s")
    return fps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=80)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (without --address)")
    ap.add_argument("--address", default=None, help="join this Ray cluster instead of starting one")
    ap.add_argument("--generate", default=None, help="also time generation with this network pickle")
    ap.add_argument("--seeds", default="0-63")
    args = ap.parse_args()

    import ray

    from facebank.config import EngineConfig
    from facebank.ingest import ingest

    results = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = tmp / "base.h5"
        s = ingest(str(base), _items(args.faces), workers=0)
        print(f"base bank: {s.added} annotated faces ({s.seconds:.1f} s)")
        results["embed_local_w1_fps"] = _embed(base, tmp, "local_w1", workers=1)
        results["embed_local_w2_fps"] = _embed(base, tmp, "local_w2", workers=2)
        env = {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}} if os.environ.get("PYTHONPATH") else None
        if args.address:
            ray.init(address=args.address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, runtime_env=env)
        try:
            for actors in (1, 2):
                eng = EngineConfig(kind="ray", actors=actors, batch_size=8)
                results[f"embed_ray_a{actors}_fps"] = _embed(base, tmp, f"ray_a{actors}", engine=eng)
            if args.generate:
                results.update(_generate(args, tmp))
        finally:
            ray.shutdown()
    print("RESULT " + " ".join(f"{k}={v:.2f}" for k, v in results.items()))


def _generate(args, tmp: Path) -> dict:
    """Generation only (no annotation): local engine against Ray generator actors (1 GPU each if any)."""
    from facebank.config import EngineConfig
    from facebank.engine import run_generate
    from facebank.sources.stylegan_source import GenerateConfig

    cfg = GenerateConfig(network=args.generate, seeds=args.seeds)
    out = {}
    for name, eng in (("local", EngineConfig()), ("ray", EngineConfig(kind="ray"))):
        g = run_generate(str(tmp / f"gen_{name}.h5"), cfg, engine=eng)
        print(f"generate {name}: {g.generated} faces on {g.device}, {g.faces_per_s:.2f} faces/s")
        out[f"generate_{name}_fps"] = g.faces_per_s
    return out


if __name__ == "__main__":
    main()
