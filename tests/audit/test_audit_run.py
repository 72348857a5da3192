"""`run_audit` and `dedupe_bank` end to end on real data: a bank of real generated.photos faces in
two spaces (dlib, MobileFaceNet), real labelled photos, real query photos. Every number checked
here is recomputed from the bank, the photos and the models, not read back from the report."""

from __future__ import annotations

import csv
import io
import json
import shutil
from math import comb, sqrt

import numpy as np
import pytest
from PIL import Image

from facebank.bank import copy_bank
from facebank.audit.calibration import eer
from facebank.audit.calibration_report import CalibrationReport, thresholds_from_report
from facebank.audit.dedupe import dedupe_bank
from facebank.audit.pixel_metrics import pixel_similarity_matrix, ssim
from facebank.audit.run import AuditConfig, run_audit
from facebank.bank import open_bank
from facebank.bank.schema import STATUS_ANNOTATED, STATUS_REMOVED
from facebank.errors import InputError
from facebank import build_index
from facebank.index.manifest import read_manifest
from facebank.index.cosine import unit_queries

pytestmark = pytest.mark.slow  # the module's banks and audit report are built once: over a minute

MFN = "mobilefacenet_128d"
QUERY_PHOTOS = ("img1.jpg", "img17.jpg", "img26.jpg", "img47.jpg", "img58.jpg")


def _csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def mfn_path(assets):
    return assets / "onnx_embedders" / f"{MFN}.onnx"


@pytest.fixture(scope="module")
def bank2(tmp_path_factory, gp_items, mfn_path):
    """40 real faces (conftest's gp_items) embedded in dlib and MobileFaceNet."""
    from facebank.config import SpaceConfig
    from facebank.ingest import ingest

    path = tmp_path_factory.mktemp("bank2") / "bank.h5"
    ingest(str(path), gp_items, spaces=[SpaceConfig("dlib"), SpaceConfig(MFN, str(mfn_path))])
    return path


@pytest.fixture(scope="module")
def queries(tmp_path_factory, assets):
    """A few real photos, plus an image with no face in it."""
    folder = tmp_path_factory.mktemp("queries")
    for name in QUERY_PHOTOS:
        shutil.copy(assets / "deepface_faces" / name, folder / name)
    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "blank.png")
    return folder


@pytest.fixture(scope="module")
def audit(tmp_path_factory, bank2, queries, assets, mfn_path):
    root = tmp_path_factory.mktemp("audit")
    build = build_index(bank2, out=root / "builds")
    out = run_audit(bank=bank2, build=build, labelled=assets / "deepface_faces", queries=queries,
                    out=root / "report", models={MFN: str(mfn_path)}, groups=False,  # whole-bank picks
                    # 1,690 impostor pairs: only a conservative FAR 1e-2 threshold is supported by them.
                    conservative=True, score_far=1e-2)
    return {"report": out.parent, "build": build, "root": root}


@pytest.fixture(scope="module")
def query_faces(queries, mfn_path):
    """name -> (embeddings, aligned crop), recomputed the way a reader would: largest face = #0."""
    from facebank.vision.align import align_face
    from facebank.vision.image_io import decode_image
    from facebank.vision.registry import load_detector, load_embedder

    det, emb = load_detector("dlib"), {"dlib": load_embedder("dlib"), MFN: load_embedder(MFN, mfn_path)}
    out = {}
    for name in QUERY_PHOTOS:
        image = decode_image((queries / name).read_bytes())
        faces = sorted(det.detect(image), key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        for k, d in enumerate(faces):
            out[f"{name}#{k}"] = ({s: e.embed(image, d) for s, e in emb.items()}, align_face(image, d.landmarks, 112))
    return out


def test_report_folder(audit):
    rep = audit["report"]
    md = (rep / "report.md").read_text()
    for title in ("## Bank distributions", "## Calibration", "## Pick audit", "## Pixel metrics"):
        assert title in md
    pngs = sorted((rep / "images").glob("*.png"))
    names = {p.name for p in pngs}
    for s in ("dlib", MFN):
        assert {f"bank_pairs_{s}.png", f"bank_nn_{s}.png", f"calibration_{s}.png", f"det_{s}.png",
                f"picks_{s}_random.png", f"picks_{s}_furthest.png"} <= names
    assert "picks_pixel_ssim_furthest.png" in names
    for p in pngs:
        assert f"]({p.relative_to(rep).as_posix()})" in md
        with Image.open(p) as im:
            assert im.format == "PNG" and min(im.size) >= 200
            im.verify()
    doc = json.loads((rep / "report.json").read_text())
    for section in doc["sections"]:
        for table in section["tables"].values():
            assert (rep / table["csv"]).is_file() and (rep / table["json"]).is_file()
    assert not list(rep.rglob(".*.tmp"))  # every write went through a temporary name
    skipped = _csv(rep / "tables" / "skipped_photos.csv")
    assert [r["photo"] for r in skipped] == ["blank.png"] and skipped[0]["reason"] == "no_face"


def test_calibration_json_feeds_index_build(audit, bank2, assets):
    rep = audit["report"]
    ident = _csv(assets / "deepface_faces" / "identities.csv")
    sizes = np.unique([r["identity_id"] for r in ident], return_counts=True)[1]
    n_gen = sum(comb(int(k), 2) for k in sizes)
    n_imp = comb(len(ident), 2) - n_gen  # every labelled photo has a face
    thr = thresholds_from_report(rep / "calibration.json", 1e-2)
    rows = _csv(rep / "tables" / "calibration_thresholds.csv")
    assert set(thr) == {"dlib", MFN}
    for r in rows:
        assert int(r["n_impostor_pairs"]) == n_imp and int(r["n_genuine_pairs"]) == n_gen
        assert r["conservative"] == "True" and float(r["ci95_high"]) <= float(r["far"]) or r["supported"] == "False"
        assert r["supported"] == str(int(r["n_above"]) >= 30 or float(r["ci95_high"]) <= float(r["far"]))
        assert float(r["achieved_far"]) == int(r["n_above"]) / n_imp
        if float(r["far"]) == 1e-2:
            assert float(r["threshold"]) == thr[r["space"]] and r["supported"] == "True"
    md = (rep / "report.md").read_text()
    assert f"of {n_imp:,} impostor pairs above" in md and "NOT supported" in md and "95% CI" in md
    for far in (1e-3, 1e-4):  # even 0 pairs above has an upper bound of 3.7 / 1,690 = 2.2e-3
        with pytest.raises(InputError, match="not supported"):
            thresholds_from_report(rep / "calibration.json", far)
    build = build_index(bank2, out=audit["root"] / "builds2", threshold_from=str(rep / "calibration.json"),
                        far=1e-2, make_current=False)
    m = read_manifest(build)
    for s, t in thr.items():
        assert m.spaces[s].threshold == t
        assert "calibration.json" in m.spaces[s].threshold_source and "0.01" in m.spaces[s].threshold_source
        cal = m.spaces[s].threshold_calibration
        assert cal["far"] == 1e-2 and cal["conservative"] and cal["ci95"][1] <= 1e-2 and cal["n_impostor_pairs"] == n_imp


def test_calibration_numbers_recomputed(audit):
    rep = audit["report"]
    report = CalibrationReport.load(rep / "calibration.json")
    scores = _csv(rep / "tables" / "raw_calibration_scores.csv")
    for s, cal in report.spaces.items():
        gen = np.array([float(r["score"]) for r in scores if r["space"] == s and r["genuine"] == "True"])
        imp = np.array([float(r["score"]) for r in scores if r["space"] == s and r["genuine"] == "False"])
        assert (gen.size, imp.size) == (cal.n_genuine, cal.n_impostor)
        assert eer(gen, imp) == (cal.eer, cal.eer_threshold)
        t = cal.at_far(1e-2)
        assert np.count_nonzero(imp > t.threshold) / imp.size == t.achieved_far <= 1e-2


def test_pick_similarities_are_dot_products(audit, bank2, query_faces):
    rep = audit["report"]
    rows = _csv(rep / "tables" / "raw_pick_similarities.csv")
    build_thr = read_manifest(audit["build"]).thresholds
    assert {r["query"] for r in rows} == set(query_faces)
    with open_bank(bank2) as bank:
        for r in rows:
            emb = query_faces[r["query"]][0][r["scored_with"]]
            q = emb.astype(np.float64)
            v = bank.vector(r["scored_with"], bank.row(r["target"])).astype(np.float64)
            # The documented similarity: the cosine of the query as given and the stored vector.
            assert float(r["sim"]) == pytest.approx(float(q @ v) / sqrt((q @ q) * (v @ v)), abs=1e-12)
            assert (r["matched"] == "True") == (float(r["sim"]) > float(r["threshold"]))
            if r["picked_with"] == r["scored_with"] and not r["picked_with"].startswith("pixel:"):
                assert float(r["sim"]) <= build_thr[r["scored_with"]]  # the guarantee itself
    modes = {(r["mode"], r["picked_with"]) for r in rows}
    assert modes == {(m, s) for m in ("random", "furthest") for s in ("dlib", MFN)} | {
        ("furthest", f"pixel:{m}") for m in ("ssim", "rmse", "psnr")}
    furthest = {(r["query"], r["scored_with"]): float(r["sim"]) for r in rows
                if r["mode"] == "furthest" and r["picked_with"] == r["scored_with"]}
    with open_bank(bank2) as bank:
        for (name, s), sim in furthest.items():
            q = unit_queries(query_faces[name][0][s], space=s, dim=128)[0]
            assert sim == pytest.approx(float((bank.vectors(s) @ q).min()), abs=1e-6)  # the least similar face


def test_match_rates_are_counts(audit):
    rep = audit["report"]
    per_query = _csv(rep / "tables" / "raw_pick_similarities.csv")
    rates = _csv(rep / "tables" / "match_rates.csv")
    assert {r["scored_with"] for r in rates} == {"dlib", MFN, "any"}
    for r in rates:
        if r["scored_with"] == "any":
            continue
        mine = [q for q in per_query if (q["mode"], q["picked_with"], q["scored_with"]) ==
                (r["mode"], r["picked_with"], r["scored_with"])]
        matched = sum(float(q["sim"]) > float(r["threshold"]) for q in mine)
        assert int(r["n_queries"]) == len(mine) and int(r["n_matched"]) == matched
        assert float(r["match_rate"]) == matched / (len(mine) - int(r["n_no_pick"]))
    used = {r["space"]: float(r["score_threshold"]) for r in _csv(rep / "tables" / "thresholds_used.csv")}
    cal = thresholds_from_report(rep / "calibration.json", 1e-2)
    assert used == cal  # scored at the calibrated thresholds (score_far 1e-2)


def test_pixel_metrics_recomputed(audit, bank2, query_faces):
    rep = audit["report"]
    rows = _csv(rep / "tables" / "raw_pixel_metrics.csv")
    with open_bank(bank2) as bank:
        for r in rows[:6]:
            crop = bank.crop(bank.row(r["target"]))
            assert float(r["ssim"]) == pytest.approx(ssim(query_faces[r["query"]][1], crop), abs=1e-12)
        cand_rows = np.load(audit["build"] / "rows.npy")  # 40 faces: all are pixel candidates
        crops = np.stack([bank.crop(int(k)) for k in cand_rows])
        for r in rows:
            if r["picked_with"] == "pixel:ssim":
                values = pixel_similarity_matrix(query_faces[r["query"]][1][None], crops, "ssim")[0]
                assert bank.ids[cand_rows[int(np.argmin(values))]] == r["target"]


def test_bank_distributions(audit, bank2):
    rep = audit["report"]
    stats = {r["space"]: r for r in _csv(rep / "tables" / "bank_similarity_stats.csv")}
    counts = _csv(rep / "tables" / "bank_group_counts.csv")
    with open_bank(bank2) as bank:
        n = int((bank.column("status") == STATUS_ANNOTATED).sum())
        assert sum(int(c["count"]) for c in counts) == n
        for s in ("dlib", MFN):
            x = bank.vectors(s)
            sims = (x @ x.T)[np.triu_indices(len(x), 1)]
            assert int(stats[s]["pairs_total"]) == int(stats[s]["pairs_scored"]) == n * (n - 1) // 2
            assert float(stats[s]["median"]) == pytest.approx(float(np.median(sims)), abs=1e-6)
            assert float(stats[s]["max"]) == pytest.approx(float(sims.max()), abs=1e-6)


def test_bank_only_audit_states_its_sample(tmp_path, bank2):
    out = run_audit(AuditConfig(bank=bank2, out=tmp_path / "r", max_pairs=500, near_duplicate_above={"dlib": 0.97}))
    md = out.read_text()
    assert "a uniform sample of 500 of 780 pairs" in md
    stats = {r["space"]: r for r in _csv(tmp_path / "r" / "tables" / "bank_similarity_stats.csv")}
    assert stats["dlib"]["sampled"] == "True" and int(stats["dlib"]["pairs_scored"]) == 500
    assert float(stats["dlib"]["near_duplicate_above"]) == 0.97 and float(stats[MFN]["near_duplicate_above"]) == 0.99
    assert not (tmp_path / "r" / "calibration.json").exists()


def test_audit_input_errors(tmp_path, bank2, queries, audit):
    with pytest.raises(InputError, match="needs an index build"):
        run_audit(bank=bank2, queries=queries, out=tmp_path / "r")
    with pytest.raises(InputError, match="needs its model"):
        run_audit(bank=bank2, build=audit["build"], queries=queries, out=tmp_path / "r")
    with pytest.raises(InputError, match="not a folder"):
        run_audit(bank=bank2, labelled=tmp_path / "nope", out=tmp_path / "r")
    with pytest.raises(InputError, match="does not exist"):
        run_audit(bank=tmp_path / "nope.h5", out=tmp_path / "r")


@pytest.fixture()
def dup_bank(tmp_path, small_bank, gp_items):
    """conftest's small bank plus one of its adult faces re-encoded (other bytes, same face).

    An adult face: in dlib's space different synthetic children reach 0.994, adults stay below 0.99.
    """
    from facebank.config import SpaceConfig
    from facebank.ingest import ingest
    from facebank.sources.base import SourceItem

    path = tmp_path / "bank.h5"
    copy_bank(small_bank, path)  # a bank is its file and its fragments folder
    buf = io.BytesIO()
    Image.open(io.BytesIO(gp_items[25].data)).convert("RGB").save(buf, "JPEG", quality=90)
    dup = SourceItem("folder", "reencoded.jpg", data=buf.getvalue())
    assert ingest(str(path), [dup], spaces=[SpaceConfig("dlib")]).added == 1
    return path


def _greedy_reference(x: np.ndarray, cut: float) -> dict[int, int]:
    """removed row -> kept row, by the rule written out plainly: a face goes when it is above the
    cut to an earlier face that stays."""
    kept, removed = [], {}
    for j in range(len(x)):
        partner = next((i for i in kept if float(x[i] @ x[j]) > cut), None)
        if partner is None:
            kept.append(j)
        else:
            removed[j] = partner
    return removed


CUT = 0.995  # above the closest different faces here (0.9944, two children), below a re-encode (~0.9998)


def test_dedupe_removes_the_known_duplicate(dup_bank):
    with open_bank(dup_bank) as bank:
        x = bank.vectors("dlib")
        n = len(bank)
        i, j = np.triu_indices(n, 1)
        above = [(int(a), int(b)) for a, b in zip(i, j) if float(x[a] @ x[b]) > CUT]
        ids = list(bank.ids)
    assert above == [(25, n - 1)]  # the original (row 25) and its re-encoded copy, nothing else
    dry = dedupe_bank(dup_bank, space="dlib", above=CUT, dry_run=True)
    assert [(r["row"], r["kept_row"]) for r in dry["removed"]] == [(n - 1, 25)]
    with open_bank(dup_bank) as bank:
        assert (bank.column("status") == STATUS_ANNOTATED).all()  # dry run changed nothing
    res = dedupe_bank(dup_bank, space="dlib", below=CUT)
    assert [(r["id"], r["kept_id"]) for r in res["removed"]] == [(ids[n - 1], ids[25])]
    assert res["removed"][0]["sim"] > CUT and res["considered"] == n
    with open_bank(dup_bank) as bank:
        status = bank.column("status")
        assert status[n - 1] == STATUS_REMOVED and (status[:-1] == STATUS_ANNOTATED).all()
        events = [e for e in bank.log() if e["event"] == "dedupe"]
        assert events[-1]["removed"] == [{"id": ids[n - 1], "kept_id": ids[25], "sim": res["removed"][0]["sim"]}]
    again = dedupe_bank(dup_bank, space="dlib", above=CUT)
    assert again["removed"] == [] and again["considered"] == n - 1


def test_dedupe_matches_plain_reference(small_bank):
    with open_bank(small_bank) as bank:
        x = bank.vectors("dlib")
    cut = float(np.quantile((x @ x.T)[np.triu_indices(len(x), 1)], 0.97))  # many chained pairs
    res = dedupe_bank(small_bank, space="dlib", above=cut, dry_run=True)
    assert {r["row"]: r["kept_row"] for r in res["removed"]} == _greedy_reference(x, cut)
    assert len(res["removed"]) > 3
    with pytest.raises(InputError, match="exactly one cut"):
        dedupe_bank(small_bank, space="dlib")
    with pytest.raises(InputError, match="exactly one cut"):
        dedupe_bank(small_bank, space="dlib", above=0.9, below=0.9)
    with pytest.raises(InputError):
        dedupe_bank(small_bank, space="arcface", above=0.9)
