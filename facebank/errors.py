"""Every error facebank raises on purpose, under one root.

    FacebankError
    ├── InputError                 bad input from a user or caller (the CLI exits 2)
    │   ├── SourceError            a face source (folder, export, zip, network) cannot be read
    │   ├── ConfigError            a config file or option is invalid
    │   ├── InvalidEmbedding       wrong dimension, NaN/inf, zero norm
    │   ├── UnknownSpace           an identity space the bank or build does not have
    │   └── UnknownFace            a face id that is not in the bank
    ├── ModelError                 a model file is missing, corrupt or not the declared kind
    ├── MissingDependency          an optional dependency is not installed (names the extra)
    │   └── UnsafePickle           a network pickle asks for a global outside the allow-list
    ├── BankError                  the bank file cannot be opened, read or written
    │   ├── SchemaVersionError     the bank was written with another schema version
    │   ├── BankLockedError        another writer holds the bank
    │   └── BankClosed             a bank, picking session or target used after its session closed
    ├── IndexBuildError            an index build is missing, corrupt or inconsistent
    │   └── StaleIndex             the build was made from another bank, or the bank changed since
    ├── DiskFull                   no space left on the device (or the file size limit) while writing
    ├── NoEligibleTarget           no synthetic face is dissimilar enough in the requested group
    └── ClusterError               the Ray cluster cannot be reached, or cannot place a stage

`FaceRejected` is not an error of the library: it carries the reason an image was not taken
into the bank, and ends up in the bank's rejection log.
"""

from __future__ import annotations

__all__ = [
    "BankClosed",
    "BankError",
    "BankLockedError",
    "ClusterError",
    "ConfigError",
    "DiskFull",
    "FaceRejected",
    "FacebankError",
    "IndexBuildError",
    "InputError",
    "InvalidEmbedding",
    "MissingDependency",
    "ModelError",
    "NoEligibleTarget",
    "SchemaVersionError",
    "SourceError",
    "StaleIndex",
    "UnknownFace",
    "UnknownSpace",
    "UnsafePickle",
]


class FacebankError(Exception):
    """Root of every error facebank raises on purpose."""


class InputError(FacebankError, ValueError):
    """Bad input from a user or caller."""


class SourceError(InputError):
    """A face source cannot be read (missing path, unreadable export, unsafe archive member)."""


class ConfigError(InputError):
    """A configuration file or option is invalid."""


class InvalidEmbedding(InputError):
    """A query embedding has the wrong shape, a NaN or infinity, or zero norm."""


class UnknownSpace(InputError, KeyError):
    """An identity space that the bank or index build does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownFace(InputError, KeyError):
    """A face id that is not in the bank."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MissingDependency(FacebankError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it.

    Also an ImportError, so code that already catches ImportError keeps working.
    """


class ModelError(FacebankError):
    """A model file is missing, corrupt, or not the kind of model it was declared to be."""


class UnsafePickle(ModelError):
    """A network pickle asks for something outside the allow-list; nothing in it was run."""


class ClusterError(FacebankError):
    """The Ray cluster cannot be reached, or has no room for a stage (a GPU stage on a CPU cluster)."""


class BankError(FacebankError):
    """The bank file cannot be opened, read or written."""


class SchemaVersionError(BankError):
    """The bank was written with a schema version this facebank cannot read."""


class BankLockedError(BankError):
    """Another process is writing to the bank."""


class BankClosed(BankError):
    """A bank, a picking session, or a target or face read through one, used after close()."""


class IndexBuildError(FacebankError):
    """An index build is missing, corrupt or inconsistent with itself."""


class StaleIndex(IndexBuildError):
    """The index build does not belong to this bank, or the bank changed since it was built."""


class DiskFull(FacebankError):
    """No space left on the device (or the process's file size limit) while writing; what was
    committed before is intact (every write goes to a temporary file first)."""


class NoEligibleTarget(FacebankError):
    """No synthetic face in the requested group is dissimilar enough to the query.

    Attributes:
        group_size: faces in the requested group (after exclusions).
        too_similar: how many of them were above the threshold in at least one space.
        group: a description of the group that was searched.
    """

    def __init__(self, message: str, *, group_size: int = 0, too_similar: int = 0, group: str = ""):
        super().__init__(message)
        self.group_size = group_size
        self.too_similar = too_similar
        self.group = group


class FaceRejected(Exception):
    """An image was not taken into the bank; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # rebuilt with its reason and detail when it crosses a process (a worker's)
        return type(self), (self.reason, self.detail)
