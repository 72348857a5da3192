"""Optional dependencies: a missing one is a one-line error naming the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from facebank.errors import MissingDependency

__all__ = ["EXTRAS", "missing_dependency", "require"]

# Top-level module -> (what installs it, what it is for). faiss is a base dependency; it is listed for an
# install that lost it (the GPU swap half done), and the line says how to put one build back.
EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("pip install 'facebank[stylegan]'", "our StyleGAN2-ADA generator; on a CPU-only machine first "
                          "`pip install torch==2.13.0`, as a bare torch pulls CUDA builds"),
    "matplotlib": ("pip install 'facebank[audit]'", "the audit's plots"),
    "faiss": ("pip install faiss-cpu", "FAISS, for index builds; or one GPU build instead, never both"),
    "insightface": ("pip install 'facebank[insightface]'", "InsightFace model packs"),
    "ray": ("pip install 'facebank[ray]'", "the Ray engine"),
    "import_linter": ("pip install 'facebank[dev]'", "the import contracts"),
    "hypothesis": ("pip install 'facebank[dev]'", "the property tests"),
}


def missing_dependency(exc: ImportError) -> MissingDependency:
    """The one-line facebank error for an ImportError (an extra's module, or a broken install)."""
    if isinstance(exc, MissingDependency):
        return exc
    name = (exc.name or "").split(".")[0]
    if name in EXTRAS:
        install, why = EXTRAS[name]
        return MissingDependency(f"{name} is not installed ({why}): {install}")
    what = name or str(exc)
    return MissingDependency(f"{what} cannot be imported ({exc}); reinstall facebank: pip install --force-reinstall "
                             "facebank")


def require(module: str) -> ModuleType:
    """Import `module`, or raise MissingDependency naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_dependency(exc) from None
