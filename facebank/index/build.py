"""Index builds: one FAISS index and one exact vector file per space, group codes, a manifest.

A build is written under a temporary name inside `index_builds/` and renamed into place, and
`current` is a symlink switched with `os.replace`, so a reader never sees a half-written build.
Beside its manifest each build holds `build_config.json`: the resolved arguments it was made
with (and the pipeline config, when `facebank build` made it).

Thresholds from a calibration report come in as `Calibrated` values: the CLI and
`facebank.build_index` read the report (facebank.audit), so the index never imports the audit.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from facebank._version import __version__
from facebank.bank import open_bank
from facebank.bank.schema import STATUS_ANNOTATED, STATUS_GENERATED, STATUS_REJECTED, STATUS_REMOVED
from facebank._io.deps import require
from facebank._io.checksum import file_digests
from facebank.config import DEFAULT_BUILDS
from facebank.errors import ConfigError, IndexBuildError, InputError, UnknownSpace
from facebank._io.files import as_path, atomic_write_json, disk_full, ensure_space, is_disk_full, pid_alive
from facebank.index import groups as G
from facebank.index.exact import row_norms
from facebank.index.margin import DEFAULT_MARGIN, SAMPLE_ROWS, check_margin
from facebank.index.manifest import FAST, FORMAT_VERSION, KIND, BuildManifest, content_id, read_manifest
from facebank.progress import Progress, Tally

INDEX_KINDS = ("flat", "ivf", "hnsw")
_BLOCK_ROWS = 65536  # rows per read when an index build streams a space's vectors
CURRENT = "current"
BUILD_CONFIG = "build_config.json"


@dataclass(frozen=True)
class Calibrated:
    """Thresholds read from a calibration report: space -> cosine, and where they come from."""

    thresholds: Mapping[str, float]
    source: str  # recorded as each space's threshold_source, e.g. "calibration report R at FAR 0.001"
    calibration: Mapping[str, dict] = field(default_factory=dict)  # space -> counts, interval, data (manifest)


def default_thresholds() -> dict:
    """Thresholds calibrated on identity-labelled photos, shipped with facebank (see the file)."""
    text = resources.files("facebank.index").joinpath("default_thresholds.json").read_text()
    return json.loads(text)


def calibrated_threshold(space: str, model_sha256: str | None, far: float | None = None) -> float | None:
    """The shipped calibrated threshold of `space` at `far` (the defaults' FAR when None or not shipped),
    if it was calibrated for this model; None otherwise."""
    defaults = default_thresholds()
    d = defaults.get("spaces", {}).get(space)
    if d is None or d.get("sha256") != model_sha256:
        return None
    key = f"{far:g}" if isinstance(far, (int, float)) and not isinstance(far, bool) else None
    at = d.get("at_far", {}).get(key) if key else None
    return float(at["threshold"] if at else d["threshold"])


def resolve_thresholds(
    spaces: list[str],
    *,
    given: dict[str, float] | None = None,
    calibrated: Calibrated | None = None,
    far: float = 1e-3,  # which of the shipped defaults' FARs applies
    models: dict[str, str] | None = None,
) -> dict[str, dict]:
    """space -> {value, source}: given values first, then calibrated ones, then the defaults.

    Defaults are looked up by space and checked against the model checksum they were calibrated
    for, so a threshold never silently applies to another model.
    """
    given = dict(given or {})
    unknown = sorted(set(given) - set(spaces))
    if unknown:  # a typo would otherwise leave the default threshold in force, silently
        raise UnknownSpace(f"threshold given for space {unknown[0]!r}, which this build does not index; "
                           f"its spaces: {', '.join(spaces)}")
    from_report = dict(calibrated.thresholds) if calibrated else {}
    defaults = default_thresholds()
    out = {}
    for space in spaces:
        if space in given:
            out[space] = {"value": float(given[space]), "source": "given"}
        elif space in from_report:
            out[space] = {"value": float(from_report[space]), "source": calibrated.source,
                          "calibration": dict(calibrated.calibration.get(space, {}))}
        elif space in defaults.get("spaces", {}) and (
            models is None or defaults["spaces"][space].get("sha256") == models.get(space)
        ):
            d = defaults["spaces"][space]
            # The shipped file holds several FARs (at_far); the build's FAR picks one.
            at = d.get("at_far", {}).get(f"{far:g}")
            value = at["threshold"] if at else d["threshold"]
            src = d["source"]
            if at and far != defaults.get("far"):
                src = (f"default at FAR {far:g}: {at['n_above']} of {at['n_impostor_pairs']:,} impostor pairs above, "
                       f"FAR 95% CI [{at['ci95'][0]:.2e}, {at['ci95'][1]:.2e}] (data: see threshold_calibration)")
            out[space] = {"value": float(value), "source": src,
                          "calibration": {"far": far if at else defaults.get("far"), **(at or {}),
                                          "conservative": defaults.get("conservative", False), "bound": defaults.get("bound", "far"),
                                          "data": defaults.get("data", [])}}
        else:
            raise ConfigError(
                f"no threshold for space {space!r}: pass --threshold {space}=<cosine> or "
                "--threshold-from <calibration report> --far <rate>"
            )
        if not -1.0 <= out[space]["value"] <= 1.0:
            raise ConfigError(f"threshold for {space!r} must be a cosine in [-1, 1], got {out[space]['value']}")
    return out


def _empty_index(kind: str, d: int, params: dict, n: int, read: Callable[[int, int], np.ndarray], block: int):
    """An empty FAISS index of `kind` for n vectors of dim d (IVF trained on an even sample of them)."""
    faiss = require("faiss")

    if kind == "flat":
        return faiss.IndexFlatIP(d)
    if kind == "ivf":
        nlist = int(params.setdefault("nlist", max(1, min(4 * int(np.sqrt(n)), n // 39 or 1))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        # FAISS trains on at most 256 points per list; an even stride over the rows gives it no more
        # than that (all rows when they are fewer), without holding every vector twice.
        step = max(1, n // (256 * nlist))
        index.train(np.concatenate([np.asarray(read(a, min(a + block, n)), np.float32)[::step]
                                    for a in range(0, n, block)]))
        index.nprobe = int(params.setdefault("nprobe", min(nlist, 16)))
        return index
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, int(params.setdefault("M", 32)), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = int(params.setdefault("efSearch", 128))
        return index
    raise InputError(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")


def build_index(
    bank_path: str | os.PathLike,
    *,
    spaces: list[str] | None = None,  # None: every space of the bank
    out: str | os.PathLike = DEFAULT_BUILDS,
    kind: str = "flat",  # FAISS index type per space: flat (exact) | ivf | hnsw
    thresholds: dict[str, float] | None = None,  # space -> cosine; overrides the rest
    calibrated: Calibrated | None = None,  # from a calibration report (see facebank.build_index)
    far: float = 1e-3,  # the false-accept rate of the shipped default thresholds to use
    margin: float = DEFAULT_MARGIN,  # the privacy margin picks from this build use by default
    build_id: str | None = None,
    make_current: bool = True,
    pipeline: dict | None = None,  # the resolved pipeline config, recorded in build_config.json
    progress: Progress | None = None,  # stage "index build": spaces written
) -> Path:
    """Build indexes for `spaces` of the bank; returns the build directory.

    `facebank.build_index` is this function with a calibration report path (`threshold_from`,
    `far`) in place of `calibrated`."""
    start = time.time()
    margin = check_margin(margin)
    out = as_path(out, "builds folder")
    for folder in (out, *out.parents):
        if folder.exists() and not folder.is_dir():
            raise InputError(f"builds folder {out}: {folder} is a file, not a folder")
        if folder.exists():
            break
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise InputError(f"cannot write in {out}: read-only location")
    remove_dead_temps(out)
    with open_bank(bank_path) as bank:
        spaces = list(spaces) if spaces else bank.spaces
        if not spaces:
            raise InputError(f"{bank_path} has no embeddings yet: run `facebank embed --bank {bank_path} --space dlib`")
        for s in spaces:
            if s not in bank.spaces:
                raise UnknownSpace(f"space {s!r} is not in {bank_path}; it has: {', '.join(bank.spaces) or 'none'}")
        infos = {s: bank.space_info(s) for s in spaces}
        thr = resolve_thresholds(spaces, given=thresholds, calibrated=calibrated, far=far,
                                 models={s: i.get("sha256") for s, i in infos.items()})
        rows, codes, excluded = usable_rows(bank, bank_path, spaces)
        if build_id is None:
            # A random tail: two builds of one bank in one second (two processes) never share a name.
            base = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{bank.content_hash[:8]}-{os.urandom(3).hex()}"
            build_id = next(b for b in (base, *(f"{base}-{k}" for k in range(2, 1000))) if not (out / b).exists())
        final = out / build_id
        if final.exists():
            raise InputError(f"build {final} already exists")
        tmp = out / f".tmp-{build_id}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        ensure_space(out, _build_bytes(len(rows), [int(infos[s]["dim"]) for s in spaces], kind), f"index build {build_id}")
        tmp.mkdir()
        try:
            np.save(tmp / "rows.npy", rows.astype(np.int64))
            np.save(tmp / "ids.npy", np.array(bank.ids[rows].tolist(), dtype="S16"))
            np.save(tmp / "groups.npy", codes.astype(np.int16))
            tally = Tally(progress, "index build")
            tally.start(len(spaces))
            space_meta = {}
            for s in spaces:
                space_meta[s] = _write_space(tmp, bank, rows, s, infos[s], thr[s], kind)
                tally.advance()
            counts = {G.group_label(int(c)): int(n) for c, n in zip(*np.unique(codes, return_counts=True))}
            manifest = {
                "kind": KIND, "format_version": FORMAT_VERSION, "build_id": build_id,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.time() - start, 3),
                "bank": {"path": str(Path(bank_path).resolve()), "content_hash": bank.content_hash,
                         "faces": len(bank), "writer": bank.writer},
                "rows": int(len(rows)), "excluded": excluded, "groups": counts,
                "age_groups": list(G.AGE_GROUPS), "spaces": space_meta,
                # picks draw among the furthest `default` fraction of candidates (facebank.index.margin)
                "margin": {"default": margin, "score": "max-rank", "sample": SAMPLE_ROWS},
                **checksums(tmp, ["rows.npy", "ids.npy", "groups.npy"]),
                "versions": _versions(),
            }
            # The default secret of keyed picks: the same (photo, face) key gives the same target
            # with this build; without the file, picks for different keys cannot be linked.
            secret = tmp / "secret.key"
            secret.write_bytes(os.urandom(32))
            os.chmod(secret, 0o600)
            atomic_write_json(tmp / BUILD_CONFIG, {
                "bank": str(Path(bank_path).resolve()), "spaces": spaces, "out": str(out), "kind": kind,
                "thresholds": thr, "margin": margin, "index_params": {s: m["index"]["params"] for s, m in space_meta.items()},
                "build_id": build_id, "make_current": make_current, "pipeline": pipeline})
            manifest["content_id"] = content_id(manifest)
            atomic_write_json(tmp / "manifest.json", manifest)
            os.rename(tmp, final)
        except Exception as exc:
            if is_disk_full(exc):
                raise disk_full(out, exc) from exc
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if make_current:
        use_build(final)
    return final


def _build_bytes(rows: int, dims: list[int], kind: str) -> int:
    """About how many bytes a build writes: per space the exact vectors and the FAISS index (a copy of
    them, plus HNSW's links), and the row, id and group files."""
    per_row = sum(2 * 4 * d + (32 * 2 * 4 + 16 if kind == "hnsw" else 8) for d in dims) + 8 + 16 + 2
    return rows * per_row


def remove_dead_temps(out: Path) -> list[Path]:
    """Remove what a killed build left in `out`: `.tmp-<build>-<pid>/` folders and `.current.<pid>`
    links whose pid is not alive (a live build's are never touched)."""
    removed = []
    for p in out.iterdir():
        name = p.name
        if name.startswith(".tmp-"):
            pid = name.rsplit("-", 1)[-1]
        elif name.startswith(f".{CURRENT}."):
            pid = name[len(CURRENT) + 2:]
        else:
            continue
        if pid.isdigit() and not pid_alive(int(pid)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def usable_rows(bank, bank_path, spaces: list[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    """(bank rows that enter the build, their group codes, counts of the faces left out by reason);
    `index verify` recomputes them from the bank the same way."""
    from facebank.bank.disputes import disputed_rows

    ages, genders = bank.column("age"), bank.column("gender")
    status = bank.column("status")
    annotated = status == STATUS_ANNOTATED
    usable = annotated & np.isfinite(ages) & np.isin(genders, (0, 1))
    excluded = {"not_annotated": int((status == STATUS_GENERATED).sum()), "rejected": int((status == STATUS_REJECTED).sum()),
                "removed": int((status == STATUS_REMOVED).sum()), "no_age_or_gender": int((annotated & ~usable).sum())}
    # A gender label the model contradicts is not served until an operator settles it (bank.disputes).
    disputed = disputed_rows(bank)
    excluded["label_disputed"] = int(usable[disputed].sum())
    usable[disputed] = False
    for s in spaces:
        missing = ~bank.present(s)
        excluded[f"no_vector:{s}"] = int((missing & usable).sum())
        usable &= ~missing
    rows = np.flatnonzero(usable)
    if len(rows) == 0:
        raise InputError(f"no face of {bank_path} has age, gender and a vector in {', '.join(spaces)}")
    codes = G.group_codes(ages[rows], np.where(genders[rows] == 0, "female", "male"))
    return rows, codes, excluded


def _write_space(tmp: Path, bank, rows: np.ndarray, s: str, info: dict, thr: dict, kind: str) -> dict:
    """Write one space's exact vectors and FAISS index into `tmp`; returns its manifest entry."""
    def read(a: int, b: int) -> np.ndarray:  # rows[a:b] (sorted) from one contiguous slab of the bank
        lo, hi = int(rows[a]), int(rows[b - 1]) + 1
        return bank.vectors(s, lo, hi)[rows[a:b] - lo]

    params, entries = write_space_files(tmp, s, read, len(rows), int(info["dim"]), kind)
    far = (thr.get("calibration") or {}).get("far")
    ref = calibrated_threshold(s, info.get("sha256"), far)
    looser = {"threshold_allowed_looser": True} if ref is not None and thr["value"] > ref else {}
    return {
        "dim": int(info["dim"]), "model": info.get("model"), "model_sha256": info.get("sha256"),
        "threshold": thr["value"], "threshold_source": thr["source"],
        "threshold_calibration": thr.get("calibration"), **looser,  # the operator chose a looser one
        "index": {"type": kind, "faiss_class": _faiss_name(kind), "params": params},
        **entries,
    }


def write_space_files(tmp: Path, s: str, read: Callable[[int, int], np.ndarray], n: int, dim: int, kind: str,
                      *, block: int = _BLOCK_ROWS) -> tuple[dict, dict]:
    """vectors.<s>.npy and index.<s>.faiss from `read(a, b)` -> rows a..b, streamed in blocks.

    Peak memory is the FAISS index plus one block: the bank's vectors are never held twice (a
    whole read, then a fancy-indexed copy, then the index's own copy was 3x the vectors).
    Returns (index params, the space's manifest entries: {"files": {name: sha256}, "xxh3_128":
    {name: xxh3}, "norms": {"min", "max"}}), norms being the smallest and largest row norm (the
    exact check's error bound rests on them: facebank.index.exact.make_space).
    """
    faiss = require("faiss")

    path = tmp / f"vectors.{s}.npy"
    params: dict = {}
    index = _empty_index(kind, dim, params, n, read, block)
    lo, hi = math.inf, 0.0
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
        for a in range(0, n, block):
            vectors = np.ascontiguousarray(read(a, min(a + block, n)), dtype="<f4")
            fh.write(vectors.tobytes())
            index.add(vectors)
            norms = row_norms(vectors)
            if not np.isfinite(norms).all():
                hi = math.nan
            lo, hi = min(lo, float(norms.min(initial=math.inf))), max(hi, float(norms.max(initial=0.0)))
    faiss.write_index(index, str(tmp / f"index.{s}.faiss"))
    entries = checksums(tmp, [path.name, f"index.{s}.faiss"])
    if math.isfinite(hi) and lo <= hi:  # NaN rows record nothing: a session then reads (and refuses) them
        entries["norms"] = {"min": lo, "max": hi}
    return params, entries


def recorded_norms(manifest: BuildManifest) -> dict[str, tuple[float, float]]:
    """space -> (smallest, largest) row norm a build recorded (`norms`; builds made before it have
    none, and their sessions compute them: facebank.index.exact.make_space)."""
    return {s: (e.norms["min"], e.norms["max"]) for s, e in manifest.spaces.items() if e.norms is not None}


def checksums(folder: Path, names: list[str]) -> dict:
    """The manifest's `files` (sha256) and `xxh3_128` entries of `names`, one read per file."""
    digests = {name: file_digests(folder / name) for name in names}
    return {"files": {n: d[0] for n, d in digests.items()}, FAST: {n: d[1] for n, d in digests.items()}}


def _faiss_name(kind: str) -> str:
    return {"flat": "IndexFlatIP", "ivf": "IndexIVFFlat", "hnsw": "IndexHNSWFlat"}[kind]


def _versions() -> dict:
    import h5py

    faiss = require("faiss")

    return {"facebank": __version__, "faiss": faiss.__version__, "numpy": np.__version__,
            "h5py": h5py.__version__, "python": platform.python_version()}


def use_build(build_dir: str | os.PathLike) -> Path:
    """Make `build_dir` the current build of its folder, atomically (symlink + os.replace)."""
    build_dir = Path(build_dir)
    read_manifest(build_dir)
    link = build_dir.parent / CURRENT
    tmp = build_dir.parent / f".{CURRENT}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(build_dir.name, tmp)
    os.replace(tmp, link)
    return link


def resolve_build(build: str | os.PathLike | None = None, *, out: str | os.PathLike = DEFAULT_BUILDS) -> Path:
    """A build directory: the given one, or `<out>/current`."""
    path = as_path(build, "build") if build else as_path(out, "builds folder") / CURRENT
    if path.is_dir() and not (path / "manifest.json").exists() and (path / CURRENT).exists():
        path = path / CURRENT  # given the builds folder itself
    if not path.exists():
        raise IndexBuildError(f"no index build at {path}: run `facebank index build --bank <bank>` first")
    return path.resolve()


def verify_build(build_dir: str | os.PathLike, *, bank_path: str | None = None, sample: int = 256) -> dict:
    """Check a build as a whole against its bank (facebank/index/verify.py)."""
    from facebank.index.verify import verify_build as verify

    return verify(build_dir, bank_path=bank_path, sample=sample)
