"""Batches and the plain-call path of a session (issue 22): `pick_targets` returns a TargetBatch
whose Targets equal single picks with the same keys and whose every target meets the threshold
against the bank's own vectors; a plain `pick_target` call (the fast path) gives the target the
general path gives; batch reads of the bank's vectors equal row-by-row reads."""

from __future__ import annotations

import numpy as np
import pytest

from facebank import TargetBatch
from facebank.bank import BankWriter, FaceRecord, open_bank
from facebank.errors import InputError, InvalidEmbedding, UnknownSpace
from facebank.index.build import build_index
from facebank.pick.session import FaceBank

DIM = 32  # 128-byte rows: read as a large column (the batch gather), not a small one
N = 400


def _record(i: int) -> FaceRecord:
    rng = np.random.default_rng(1000 + i)
    vs = {s: rng.standard_normal(DIM).astype(np.float32) for s in ("s", "t")}
    return FaceRecord(source="folder", source_id=f"b{i}.png", image=b"img%d" % i, image_format="png", width=64,
                      height=64, box=np.zeros(4, np.float32), landmarks=np.zeros((5, 2), np.float32), detector="t",
                      crop=np.full((112, 112, 3), i % 251, np.uint8), age=float(2 + (i * 7) % 80), gender=i % 2,
                      embeddings={s: v / np.linalg.norm(v) for s, v in vs.items()})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """400 faces in two spaces, one commit (one fragment: batch reads gather from its map), a flat build."""
    root = tmp_path_factory.mktemp("batch")
    bank = root / "bank.h5"
    with BankWriter(bank, batch_size=64, commit_every=10_000) as w:
        for s in ("s", "t"):
            w.register_space(s, {"model": "t", "sha256": "ab" * 32, "dim": DIM})
        for i in range(N):
            w.add_face(_record(i))
    return bank, build_index(bank, out=root / "builds", thresholds={"s": 0.3, "t": 0.3}, build_id="tb")


def _unit(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x)


def test_batch_targets_equal_single_picks_with_the_same_keys(built):
    rng = np.random.default_rng(0)
    q = {s: rng.standard_normal((80, DIM)).astype(np.float32) for s in ("s", "t")}
    keys = [f"photo-{i}" for i in range(80)]
    with FaceBank(built[1], bank=built[0], secret=b"k" * 32) as fb:
        batch = fb.pick_targets(q, keys=keys, margin=1.0)
        assert isinstance(batch, TargetBatch) and len(batch) == 80
        single = [fb.pick_target({s: v[i] for s, v in q.items()}, key=keys[i], margin=1.0) for i in range(80)]
        assert [t.to_dict() for t in batch] == [t.to_dict() for t in single]
        # the columns say what the Targets say
        assert batch.rows.tolist() == [t.row for t in single]
        assert [i.decode() for i in batch.ids.tolist()] == [t.id for t in single]
        for s in ("s", "t"):
            assert batch.similarities[s].tolist() == [t.similarities[s] for t in single]


def test_a_batch_never_returns_a_target_above_the_threshold(built):
    with open_bank(built[0]) as bank:
        truth = {s: bank.vectors(s).astype(np.float64) for s in ("s", "t")}
        ids = bank.ids
    rng = np.random.default_rng(1)
    with FaceBank(built[1], bank=built[0]) as fb:
        for threshold in (-0.2, 0.0, 0.3):
            q = {s: rng.standard_normal((300, DIM)).astype(np.float32) for s in ("s", "t")}
            batch = fb.pick_targets(q, threshold={"s": threshold, "t": threshold}, rng=rng, margin=1.0)
            for k, t in enumerate(batch):
                assert t.id == ids[t.row] and t.thresholds == {"s": threshold, "t": threshold}
                for s in ("s", "t"):
                    assert truth[s][t.row] @ _unit(q[s][k]) <= threshold + 1e-9
                    assert t.similarities[s] <= threshold
    # read after the session closed: the columns were taken when the batch was made
    assert batch[-1].row == int(batch.rows[-1]) and [t.row for t in batch[:3]] == batch.rows[:3].tolist()
    with pytest.raises(IndexError):
        batch[len(batch)]


def test_batches_with_ages_take_the_per_face_path_and_say_so(built):
    rng = np.random.default_rng(2)
    q = rng.standard_normal((6, DIM)).astype(np.float32)
    with FaceBank(built[1], bank=built[0]) as fb:
        batch = fb.pick_targets(q, space="s", ages=[34] * 6, genders=["f"] * 6, rng=rng, fallback="widen_age")
        assert isinstance(batch, TargetBatch) and len(batch) == 6
        for t, row in zip(batch, batch.rows.tolist()):
            assert t.row == row and t.gender == "female" and t.requested_group == "30-39/female"


@pytest.mark.parametrize("call", [
    dict(space="s"),
    dict(space="s", age=34, gender="m", fallback="widen_age"),
    dict(space="s", mode="furthest"),
    dict(two=True),
    dict(two=True, margin=0.5),
])
def test_the_plain_call_path_gives_the_general_paths_target(built, call):
    """`exclude=[]` (a list) sends the same pick through the general path: same key, same target."""
    call = dict(call)
    rng = np.random.default_rng(3)
    with FaceBank(built[1], bank=built[0], secret=b"s" * 32) as fb:
        for i in range(20):
            q = {s: rng.standard_normal(DIM).astype(np.float32) for s in ("s", "t")}
            emb = q if call.get("two") else q["s"]
            kw = {k: v for k, v in call.items() if k != "two"}
            fast = fb.pick_target(emb, key=f"k{i}", **kw)
            general = fb.pick_target(emb, key=f"k{i}", exclude=[], **kw)
            assert fast.to_dict() == general.to_dict()


def test_the_plain_call_path_keeps_every_refusal(built):
    q = np.ones(DIM, np.float32)
    with FaceBank(built[1], bank=built[0]) as fb:
        with pytest.raises(InputError, match="give space="):
            fb.pick_target(q)  # two spaces: which one?
        with pytest.raises(UnknownSpace):
            fb.pick_target({"nope": q})
        with pytest.raises(InvalidEmbedding):
            fb.pick_target(np.full(DIM, np.nan, np.float32), space="s")
        with pytest.raises(InvalidEmbedding):
            fb.pick_target(np.ones(DIM + 1, np.float32), space="s")
        with pytest.raises(InputError):
            fb.pick_target(q, space="s", age=-3)
        with pytest.raises(InputError):
            fb.pick_target(q, space="s", gender="x")
        with pytest.raises(InputError):
            fb.pick_target(q, space="s", mode="nearest")
        with pytest.raises(InputError):
            fb.pick_target(q, space="s", margin=1.5)
        with pytest.raises(InputError):
            fb.pick_target(q, space="s", rng=1)


def test_batch_reads_of_the_bank_equal_row_reads(built):
    rng = np.random.default_rng(4)
    with open_bank(built[0]) as bank:
        for s in ("s", "t"):
            reader = bank.vector_rows(s)
            rows = rng.integers(0, N, 500)
            got = reader.take(rows)  # >= 64 rows: one gather per run of consecutive chunks of the map
            assert reader._parts[0]._segments is not None  # that path, not the per-chunk reads
            assert got.dtype == np.float32 and got.shape == (500, DIM)
            assert np.array_equal(got.view(np.uint32), np.stack([reader[r] for r in rows.tolist()]).view(np.uint32))
            assert np.array_equal(got, bank.vectors(s)[rows])


def test_cached_group_rows_equal_the_validated_ones_and_bools_stay_refused(built):
    with FaceBank(built[1], bank=built[0]) as fb:
        p = fb.picker
        for codes in ((4,), (4, 5), (13, 0, 6)):
            for _ in range(2):  # the second call comes from the cache
                rows, desc = p.group_rows(codes)
                want, want_desc = p.group_rows(list(codes))
                assert np.array_equal(rows, want) and desc == want_desc
                assert np.isin(fb.codes[rows], codes).all() and (np.isin(fb.codes, codes).sum() == rows.size)
        with pytest.raises(InputError):
            p.group_rows((True,))
