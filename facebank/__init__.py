"""facebank: synthetic faces guaranteed dissimilar to the real faces they replace.

The public surface, and nothing else:

    bank = facebank.open_bank("data/bank.h5")
    target = facebank.pick_target(embedding, space="dlib", age=34, gender="female")
    target.crop(), target.similarities, target.face().landmarks
"""

from facebank._version import __version__
from facebank.anonymize import anonymize, anonymize_video
from facebank.pick.api import analyse, open_facebank, pick_for_image, pick_for_photo, pick_target, pick_targets
from facebank.bank import Bank, BankWriter, Face, open_bank
from facebank.errors import (
    BankClosed,
    BankError,
    BankLockedError,
    ClusterError,
    ConfigError,
    DiskFull,
    FacebankError,
    IndexBuildError,
    InputError,
    InvalidEmbedding,
    MissingDependency,
    ModelError,
    NoEligibleTarget,
    SchemaVersionError,
    SourceError,
    StaleIndex,
    UnknownFace,
    UnknownSpace,
    UnsafePickle,
)
from facebank.index.build import use_build, verify_build
from facebank.pick.analyse import FaceAnalyser, PhotoFace
from facebank.pick.session import FaceBank
from facebank.pick.targets import ImagePick, Target, TargetBatch
from facebank.workflow import build_index

__all__ = [
    "Bank",
    "BankClosed",
    "BankError",
    "BankLockedError",
    "BankWriter",
    "ClusterError",
    "ConfigError",
    "DiskFull",
    "Face",
    "FaceAnalyser",
    "FaceBank",
    "FacebankError",
    "ImagePick",
    "IndexBuildError",
    "InputError",
    "InvalidEmbedding",
    "MissingDependency",
    "ModelError",
    "NoEligibleTarget",
    "PhotoFace",
    "SchemaVersionError",
    "SourceError",
    "StaleIndex",
    "Target",
    "TargetBatch",
    "UnknownFace",
    "UnknownSpace",
    "UnsafePickle",
    "__version__",
    "analyse",
    "anonymize",
    "anonymize_video",
    "build_index",
    "open_bank",
    "open_facebank",
    "pick_for_image",
    "pick_for_photo",
    "pick_target",
    "pick_targets",
    "use_build",
    "verify_build",
]
