"""One CliRunner test per command, and a check that no registered command goes without one.

COVERED names, for every command of the Typer app, the test that runs it through CliRunner; the
tests of commands not tested elsewhere are here, on one small bank and build made once per session.
Every --json result is read through the one envelope (facebank.cli/1).
"""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facebank.bank import copy_bank, open_bank
from facebank.cli import app
from facebank.cli.common import JSON_FORMAT, read_envelope

HERE = Path(__file__).resolve().parents[1]  # tests/

# command -> "file::test" that invokes it through CliRunner (the test's source names the command).
COVERED = {
    "anonymize": "anonymize/test_anonymize_cli.py::test_cli_runner_anonymizes_one_photo_list",
    "annotate": "cli/test_cli_commands.py::test_ingest_generated_photos_then_annotate",
    "audit": "audit/test_audit_cli.py::test_audit_command",
    "bank accept-labels": "bank/test_label_disputes.py::test_accept_with_the_model_gender_relabels_the_face",
    "bank check-labels": "bank/test_label_disputes.py::test_insightface_second_opinion_on_the_stored_crops",
    "bank compact": "cli/test_cli_commands.py::test_bank_compact",
    "bank copy": "cli/test_cli_commands.py::test_bank_copy",
    "bank verify": "cli/test_cli_commands.py::test_bank_verify",
    "bank upgrade": "bank/test_bank_fragments.py::test_v1_fixture_converts_bit_for_bit",
    "build": "cli/test_cli.py::test_build_from_config_with_source_override",
    "dedupe": "audit/test_audit_cli.py::test_dedupe_command",
    "embed": "cli/test_cli.py::test_ingest_folder_embed_info",
    "generate": "cli/test_cli.py::test_generate_tiny_network_resumable",
    "index build": "cli/test_cli.py::test_index_build_verify_pick",
    "index info": "cli/test_cli_commands.py::test_every_json_result_is_one_envelope",
    "index list": "cli/test_operator_edges.py::test_index_list_and_prune_keep_the_newest_and_the_current",
    "index prune": "cli/test_operator_edges.py::test_index_list_and_prune_keep_the_newest_and_the_current",
    "index use": "cli/test_cli_commands.py::test_index_use",
    "index verify": "cli/test_cli_commands.py::test_every_json_result_is_one_envelope",
    "info": "cli/test_cli_commands.py::test_every_json_result_is_one_envelope",
    "ingest folder": "cli/test_cli.py::test_ingest_folder_embed_info",
    "ingest generated-photos": "cli/test_cli_commands.py::test_ingest_generated_photos_then_annotate",
    "models fetch": "vision/test_model_packs.py::test_cli_fetch_list_and_errors",
    "models list": "cli/test_cli_commands.py::test_every_json_result_is_one_envelope",
    "pick": "cli/test_cli_commands.py::test_every_json_result_is_one_envelope",
    "show": "cli/test_cli_commands.py::test_show_prints_and_exports_a_face",
}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def registered() -> list[str]:
    from facebank.cli import command_paths

    return sorted(" ".join(path) for path in command_paths())


def _test_source(ref: str) -> tuple[str, str] | None:
    """(the test function's source, its file's source), or None when there is no such test."""
    file, name = ref.split("::")
    path = HERE / file
    if not path.is_file():
        return None
    source = path.read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(source, node), source
    return None


def test_every_registered_command_has_a_cli_runner_test():
    commands = registered()
    missing = [c for c in commands if c not in COVERED]
    assert not missing, f"commands without a CliRunner test (add one and list it in COVERED): {missing}"
    assert sorted(COVERED) == commands, f"COVERED lists commands the app does not have: {set(COVERED) - set(commands)}"
    for command, ref in COVERED.items():
        found = _test_source(ref)
        assert found is not None, f"{command}: {ref} does not exist"
        src, file_src = found
        assert "CliRunner" in file_src and ("invoke(" in src or "_run(" in src), f"{command}: {ref} runs no command"
        # The command's last word in the test, its group in the test or its file's CliRunner helper.
        words = command.split()
        assert f'"{words[-1]}"' in src and all(f'"{w}"' in file_src for w in words), f"{command}: {ref} does not run it"


# -- the commands tested here --

@pytest.fixture(scope="module")
def gp_subset(assets, tmp_path_factory):
    """10 real generated.photos faces and their dataset.csv rows: a small export of its own."""
    src = assets / "generated_photos" / "age_adult"
    dst = tmp_path_factory.mktemp("gp") / "export"
    dst.mkdir()
    with open(src / "dataset.csv", newline="") as f:
        rows = list(csv.reader(f))
    keep = [r for r in rows[1:] if r[0].endswith("_512.jpg")][:10]
    with open(dst / "dataset.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *keep])
    for r in keep:
        shutil.copy(src / Path(r[0]).name, dst / Path(r[0]).name)
    return dst, keep


def test_ingest_generated_photos_then_annotate(gp_subset, tmp_path):
    export, rows = gp_subset
    bank = tmp_path / "gp.h5"
    r = invoke("ingest", "generated-photos", export, "--bank", bank, "--workers", 1, "--json")
    assert r.exit_code == 0, r.output
    out = read_envelope(r.stdout, "ingest generated-photos")
    assert out["items"] == 10 and out["added"] + sum(out["rejected"].values()) == 10 and out["added"] >= 8
    with open_bank(bank) as b:
        assert len(b) == out["added"]
        assert set(b.column("source")) == {"generated_photos"}
        genders = {Path(r[0]).name: r[5] for r in rows}
        for row in range(len(b)):
            face = b.face(row)
            assert face.gender == genders[face.source_id]  # the export's metadata was kept
    r = invoke("annotate", "--bank", bank, "--force", "--workers", 1, "--json")
    assert r.exit_code == 0, r.output
    done = read_envelope(r.stdout, "annotate")
    assert done["added"] == out["added"]  # every face re-estimated
    with open_bank(bank) as b:
        assert np.isfinite(b.column("age")).all()
    r = invoke("annotate", "--bank", tmp_path / "none.h5")
    assert r.exit_code == 2 and r.output.startswith("error: InputError:")


def test_show_prints_and_exports_a_face(small_build, tmp_path):
    bank, _, _ = small_build
    b = open_bank(bank)
    face = b.face(7)
    r = invoke("show", face.id, "--bank", bank)
    assert r.exit_code == 0, r.output
    assert face.id in r.stdout and face.source_id in r.stdout
    out = tmp_path / "out"
    r = invoke("show", face.id, "--bank", bank, "--out", out, "--aligned", 224, "--aligned", 256, "--json")
    assert r.exit_code == 0, r.output
    res = read_envelope(r.stdout, "show")
    from facebank.vision.align import align_to_swapper

    for size in (224, 256):  # the swapper crops, as Target.aligned makes them
        with Image.open(res["files"][f"aligned{size}"]) as im:
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")),
                                          align_to_swapper(face.image(), face.landmarks, size))
    rec = res["face"]
    assert rec["id"] == face.id and rec["source_id"] == face.source_id and rec["source"] == "generated_photos"
    assert rec["attributes"]["gender"] == face.gender and rec["spaces"] == ["dlib"]
    np.testing.assert_allclose(rec["landmarks"], face.landmarks, atol=0.01)
    assert Path(res["files"]["image"]).read_bytes() == face.image_bytes()
    with Image.open(res["files"]["crop"]) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), face.crop)
    side = json.loads(Path(res["files"]["json"]).read_text())
    assert side["format"] == "facebank.face/1" and side["bank_face"] == rec
    assert side["files"] == {k: Path(v).name for k, v in res["files"].items() if k != "json"}
    r = invoke("show", face.id, "--bank", bank, "--out", tmp_path / "bad", "--aligned", 8)
    assert r.exit_code == 2 and "InputError" in r.output and not (tmp_path / "bad").exists()
    r = invoke("show", face.id, "--bank", bank, "--aligned", 224)
    assert r.exit_code == 2 and "--aligned needs --out" in r.output
    r = invoke("show", "0000000000000000", "--bank", bank)
    assert r.exit_code == 2 and r.output.strip().startswith("error: UnknownFace:") and len(r.output.splitlines()) == 1
    r = invoke("show", face.id, "--bank", tmp_path / "missing.h5")
    assert r.exit_code == 2 and "InputError" in r.output


def test_index_use(small_build, tmp_path):
    bank, builds, build = small_build
    mine = tmp_path / "builds"
    shutil.copytree(build, mine / build.name)
    r = invoke("index", "use", "--build", mine / build.name, "--json")
    assert r.exit_code == 0, r.output
    res = read_envelope(r.stdout, "index use")
    assert Path(res["current"]).resolve() == (mine / build.name).resolve()
    r = invoke("index", "use", "--build", tmp_path / "nope")
    assert r.exit_code != 0 and r.output.startswith("error: ")


def test_bank_compact(small_bank, tmp_path):
    bank = tmp_path / "bank.h5"
    copy_bank(small_bank, bank)
    before = open_bank(bank).content_hash
    r = invoke("bank", "compact", "--bank", bank, "--json")
    assert r.exit_code == 0, r.output
    res = read_envelope(r.stdout, "bank compact")
    assert res["fragments"] >= 1 and open_bank(bank).content_hash == before
    r = invoke("bank", "compact", "--bank", bank)
    assert r.exit_code == 0 and r.stdout.startswith("compacted ")


def test_bank_copy(small_bank, tmp_path):
    r = invoke("bank", "copy", "--bank", small_bank, "--to", tmp_path / "copy.h5", "--json")
    assert r.exit_code == 0, r.output
    assert read_envelope(r.stdout, "bank copy")["copy"] == str(tmp_path / "copy.h5")
    with open_bank(small_bank) as a, open_bank(tmp_path / "copy.h5") as b:
        assert a.content_hash == b.content_hash and a.layout.uuid != b.layout.uuid
    r = invoke("bank", "copy", "--bank", small_bank, "--to", tmp_path / "copy.h5")
    assert r.exit_code == 2 and r.output.startswith("error: InputError") and "already exists" in r.output


def test_bank_verify(small_bank, tmp_path):
    bank = tmp_path / "b.h5"
    invoke("bank", "copy", "--bank", small_bank, "--to", bank)
    r = invoke("bank", "verify", "--bank", bank, "--json")
    assert r.exit_code == 0, r.output
    got = read_envelope(r.stdout, "bank verify")
    assert got["ok"] is True and got["files"] >= 2 and got["bytes"] > 0
    frag = max((p for p in (tmp_path / "b.h5.d").iterdir() if p.suffix == ".h5"), key=lambda p: p.stat().st_size)
    data = bytearray(frag.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, the size unchanged
    (tmp_path / "damaged").write_bytes(bytes(data))
    os.replace(tmp_path / "damaged", frag)  # a new file: the copy may share the fixture's by a hard link
    r = invoke("bank", "verify", "--bank", bank)
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]  # beside the progress bar
    assert r.exit_code == 1 and len(errors) == 1 and errors[0].startswith("error: BankError") and frag.name in errors[0]


def _no_nan(value) -> bool:
    if isinstance(value, dict):
        return all(_no_nan(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_nan(v) for v in value)
    return not (isinstance(value, float) and not math.isfinite(value))


def test_every_json_result_is_one_envelope(small_build, tmp_path):
    bank, builds, build = small_build
    q = tmp_path / "q.npy"
    np.save(q, open_bank(bank).vector("dlib", 3))
    runs = {
        "info": ("info", "--bank", bank),
        "index info": ("index", "info", "--build", build),
        "index verify": ("index", "verify", "--build", build),
        "pick": ("pick", "--embedding", q, "--build", build, "--seed", 1),
        "show": ("show", open_bank(bank).ids[0], "--bank", bank),
        "dedupe": ("dedupe", "--bank", bank, "--above", 0.999, "--dry-run"),
        "models list": ("models", "list", "--dest", tmp_path / "models"),
    }
    for command, args in runs.items():
        r = invoke(*args, "--json")
        assert r.exit_code == 0, (command, r.output)
        doc = json.loads(r.stdout)  # the whole stdout is the one document
        assert sorted(doc) == ["command", "format", "result"] and doc["format"] == JSON_FORMAT, command
        assert doc["command"] == command and _no_nan(doc["result"]), command
        assert "NaN" not in r.stdout and "Infinity" not in r.stdout
    pick = read_envelope(invoke(*runs["pick"], "--json").stdout, "pick")["picks"][0]
    assert pick["face"] is None  # an embedding query has no photo face: null, not a missing key
    assert pick["target"]["similarities"]["dlib"] <= pick["target"]["thresholds"]["dlib"]
    # The envelope reader refuses what is not one.
    with pytest.raises(ValueError, match="envelope"):
        read_envelope('{"picks": []}')
    with pytest.raises(ValueError, match="expected 'info'"):
        read_envelope(invoke(*runs["index info"], "--json").stdout, "info")


def test_envelope_turns_nan_and_numpy_into_plain_json():
    from facebank.cli.common import envelope

    doc = envelope({"a": float("nan"), "b": np.float32(0.5), "c": np.arange(3), "d": [float("inf"), None],
                    "e": Path("x/y"), "f": np.int64(4), "g": (1, 2)}, "demo")
    assert doc == {"format": JSON_FORMAT, "command": "demo",
                   "result": {"a": None, "b": 0.5, "c": [0, 1, 2], "d": [None, None], "e": "x/y", "f": 4, "g": [1, 2]}}
    json.dumps(doc, allow_nan=False)
