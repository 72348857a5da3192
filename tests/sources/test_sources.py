"""Face sources: generated.photos exports (folder, per-face JSON, zip) and plain folders."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from facebank.errors import SourceError
from facebank.sources.folder import iter_folder
from facebank.labels import metadata_attributes
from facebank.sources.generated_photos import iter_generated_photos


def test_real_export_folder(assets):
    items = list(iter_generated_photos(assets / "generated_photos"))
    ok = [i for i in items if i.data]
    missing = [i for i in items if i.rejection]
    # 596 images on disk; four CSV rows name files that are not there: listed, not dropped.
    assert len(ok) == 596
    assert {i.rejection[0] for i in missing} == {"missing_file"} and len(missing) == 4
    assert len({hashlib.sha256(i.data).digest() for i in ok}) == 593  # a few images sit in two folders
    assert all(i.source_id.endswith("_512.jpg") for i in ok)  # the largest size of each face
    first = ok[0]
    assert {"gender", "age", "emotion", "ethnicity"} <= set(first.metadata)
    assert metadata_attributes(first.metadata)["gender"] in ("female", "male")


def test_zip_of_export_matches_folder(assets, tmp_path):
    folder = assets / "generated_photos" / "age_child"
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(folder.iterdir()):
            z.write(p, f"age_child/{p.name}")
    a = {i.source_id: i.data for i in iter_generated_photos(folder.parent / "age_child") if i.data}
    b = {i.source_id.split("/", 1)[1]: i.data for i in iter_generated_photos(archive) if i.data}
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def test_api_json_form(assets, tmp_path):
    src = next((assets / "generated_photos" / "age_adult").glob("*_512.jpg"))
    (tmp_path / "face1.jpg").write_bytes(src.read_bytes())
    doc = {"id": "face1", "version": 3, "urls": [{"32": "https://x/face1_32.jpg"}, {"512": "https://x/face1.jpg"}],
           "meta": {"confidence": [0.9], "gender": ["female"], "age": ["young-adult"], "emotion": ["joy"],
                    "ethnicity": ["asian"], "eye_color": ["brown"], "hair_color": ["black"], "hair_length": ["long"]}}
    (tmp_path / "face1.json").write_text(json.dumps(doc))
    (item,) = list(iter_generated_photos(tmp_path))
    assert item.data == src.read_bytes()
    assert item.metadata["gender"] == "female" and item.metadata["api_id"] == "face1"
    assert metadata_attributes(item.metadata)["age_range"] == (16.0, 36.0)


def test_no_path_traversal(tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"private")
    export = tmp_path / "export"
    export.mkdir()
    (export / "dataset.csv").write_text("Image,Gender,Age\n../secret.jpg,female,adult\n/etc/passwd,male,adult\n")
    items = list(iter_generated_photos(export))
    assert [i.rejection[0] for i in items] == ["unsafe_path", "unsafe_path"]
    assert all(i.data is None for i in items)
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x/dataset.csv", "Image,Gender,Age\n../../secret.jpg,female,adult\n")
    (item,) = list(iter_generated_photos(archive))
    assert item.rejection[0] == "unsafe_path" and item.data is None


def test_bad_export_paths(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        list(iter_generated_photos(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no generated.photos export"):
        list(iter_generated_photos(tmp_path / "empty"))
    (tmp_path / "bad.zip").write_bytes(b"PK not really")
    with pytest.raises(SourceError):
        list(iter_generated_photos(tmp_path / "bad.zip"))


def test_folder_source(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jpg").write_bytes(b"y")
    (tmp_path / "notes.txt").write_text("sidecar")
    (tmp_path / "c.gif").write_bytes(b"GIF89a")
    items = list(iter_folder(tmp_path))
    assert [(i.source_id, i.rejection and i.rejection[0]) for i in items] == [
        ("a.png", None), ("c.gif", "unsupported_format"), ("sub/b.jpg", None)]
    with pytest.raises(SourceError):
        list(iter_folder(tmp_path / "a.png"))
