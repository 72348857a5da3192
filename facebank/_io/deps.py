"""Optional dependencies: a missing one is a one-line error naming the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from facebank.errors import MissingDependency

__all__ = ["EXTRAS", "missing_dependency", "require"]

# Top-level module -> (pip extra, what it is for). faiss stays an extra on purpose: the CPU and
# GPU builds install the same `faiss` module and must never be installed together.
EXTRAS: dict[str, tuple[str, str]] = {
    "faiss": ("cpu", "FAISS (index builds); on a GPU machine use 'facebank[gpu]' instead"),
    "insightface": ("insightface", "InsightFace model packs"),
    "import_linter": ("dev", "the import contracts"),
    "hypothesis": ("dev", "the property tests"),
}


def missing_dependency(exc: ImportError) -> MissingDependency:
    """The one-line facebank error for an ImportError (an extra's module, or a broken install)."""
    if isinstance(exc, MissingDependency):
        return exc
    name = (exc.name or "").split(".")[0]
    if name in EXTRAS:
        extra, why = EXTRAS[name]
        return MissingDependency(f"{name} is not installed ({why}): pip install 'facebank[{extra}]'")
    what = name or str(exc)
    return MissingDependency(f"{what} cannot be imported ({exc}); reinstall facebank: pip install --force-reinstall "
                             "facebank")


def require(module: str) -> ModuleType:
    """Import `module`, or raise MissingDependency naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_dependency(exc) from None
