"""What a pick returns: a `Target` (the synthetic face and the exact similarities that admitted it)
and an `ImagePick` (one real face of a photo with its target).

A target reads its face through the session that picked it, so a bank replaced on disk is
reopened (or refused) and a closed session refuses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from facebank.bank import Face
from facebank.pick.analyse import PhotoFace


@dataclass(frozen=True)
class Target:
    """A synthetic face picked for a query, with the exact similarity in every space."""

    id: str
    row: int  # bank row
    source_id: str  # the face's id in its source (file name, seed, generated.photos id)
    similarities: dict[str, float]
    thresholds: dict[str, float]
    age: float
    gender: str
    group: str  # the target's own age/gender group
    requested_group: str  # what the query asked for ("any" when unconstrained)
    fallback: str | None  # None, or what the fallback policy did ("widen_age:20-29")
    mode: str
    method: str  # rejection | scan | furthest | index_furthest (proposed by an ivf/hnsw index)
    margin: float = 1.0  # the privacy margin the pick was drawn with (1: every eligible face)
    cut: dict | None = None  # the margin's cut (MarginCut.to_dict: tau per space, share, sample, exact, relaxed)
    looser: bool = False  # a threshold above the build's was allowed (allow_looser=True)
    _session: object = field(default=None, repr=False, compare=False)

    # Reads go through the session, not a bank handle kept here: the session reopens a bank that
    # was replaced on disk (and refuses one whose content changed), and refuses once it is closed.
    def face(self) -> Face:
        """Everything the bank holds about the target (crop, landmarks, attributes, vectors)."""
        return self._session.live_bank().face(self.row)

    def crop(self) -> np.ndarray:
        """The aligned 112x112 RGB crop."""
        return self._session.live_bank().crop(self.row)

    def image_bytes(self) -> bytes:
        """The target's original encoded image, as it entered the bank."""
        return self._session.live_bank().image_bytes(self.row)

    def image(self) -> np.ndarray:
        """The target's original image decoded to RGB uint8 (H, W, 3)."""
        return self.face().image()

    def aligned(self, size: int = 112, template: str | None = None) -> np.ndarray:
        """The target's original image warped to the crop a swapper takes, RGB uint8 (size, size, 3):
        112 ArcFace, 128 inswapper (InsightFace's shifted template), 224 SimSwap, 256 FFHQ-style.
        `template` ("arcface", "simswap", "ffhq") overrides the size's default (facebank.vision.align)."""
        from facebank.vision.align import align_to_swapper

        face = self.face()
        return align_to_swapper(face.image(), face.landmarks, size, template)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass(frozen=True)
class ImagePick:
    """One real face of a photo and the synthetic target picked for it.

    Unpacks as `(face, target)`, as the private pick_for_image's tuples did.
    """

    face: PhotoFace
    target: Target

    def __iter__(self) -> Iterator:
        return iter((self.face, self.target))

    def to_dict(self) -> dict:
        return {"face": self.face.to_dict(), "target": self.target.to_dict()}


_new = object.__new__


class TargetBatch(Sequence):
    """The targets of a batch (`pick_targets`): a read-only sequence whose `Target`s are made when
    read (`batch[i]`, iteration), from columns gathered once for the whole batch. Creating a
    million Python objects costs more than picking them, so a pipeline that only needs rows or
    ids reads the columns: `rows` (bank rows), `ids`, `similarities` (space -> float64 array),
    `ages`, `genders` (0 female, 1 male), `methods`.

    Every column is taken when the batch is made: the targets read the same after the session
    closes (only their face reads need it open).
    """

    def __init__(self, *, ids: np.ndarray, rows: np.ndarray, source_ids: np.ndarray, similarities: dict,
                 thresholds: dict, ages: np.ndarray, genders: np.ndarray, codes: np.ndarray, labels: list,
                 gender_names: dict, mode: str, methods: np.ndarray, looser: bool, session=None):
        self.ids, self.rows, self.source_ids = ids, rows, source_ids
        self.similarities, self.thresholds = similarities, thresholds
        self.ages, self.genders, self.codes, self.methods = ages, genders, codes, methods
        self._labels, self._gender_names = labels, gender_names
        self.mode, self.looser, self._session = mode, looser, session
        self._built: list[Target] | None = None

    @classmethod
    def of(cls, targets: list[Target]) -> TargetBatch:
        """A batch of targets already made one by one (picks with ages, genders or fallbacks):
        the same columns, and the targets themselves as they were made."""
        t0 = targets[0] if targets else None
        batch = cls(ids=np.array([t.id for t in targets], "S16"), rows=np.array([t.row for t in targets], np.int64),
                    source_ids=np.array([t.source_id for t in targets], object),
                    similarities={s: np.array([t.similarities[s] for t in targets]) for s in (t0.similarities if t0 else {})},
                    thresholds=dict(t0.thresholds) if t0 else {}, ages=np.array([t.age for t in targets]),
                    genders=np.array([0 if t.gender == "female" else 1 for t in targets], np.int64),
                    codes=np.empty(0, np.int64), labels=[], gender_names={}, mode=t0.mode if t0 else "random",
                    methods=np.array([t.method for t in targets]), looser=any(t.looser for t in targets))
        batch._built = list(targets)
        return batch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        n = len(self.rows)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not -n <= k < n:
            raise IndexError(f"target index {k!r} out of range for a batch of {n}")
        k = int(k) % n
        if self._built is not None:
            return self._built[k]
        t = _new(Target)  # the frozen __init__'s cost skipped: the fields are set once, here
        t.__dict__.update(
            id=self.ids[k].decode(), row=int(self.rows[k]), source_id=str(self.source_ids[k]),
            similarities={s: float(v[k]) for s, v in self.similarities.items()}, thresholds=dict(self.thresholds),
            age=float(self.ages[k]), gender=self._gender_names[int(self.genders[k])], group=self._labels[int(self.codes[k])],
            requested_group="any", fallback=None, mode=self.mode, method=str(self.methods[k]), margin=1.0, cut=None,
            looser=self.looser, _session=self._session)
        return t

    def __iter__(self) -> Iterator[Target]:
        return (self[k] for k in range(len(self.rows)))

    def to_list(self) -> list[Target]:
        return list(self)

    def __repr__(self) -> str:
        return f"TargetBatch({len(self)} targets, mode={self.mode!r})"
