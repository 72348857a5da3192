"""Hostile network pickles are refused with UnsafePickle and their payload never runs; broken
ones are a ModelError. Every payload here would create a marker file if it ran."""

from __future__ import annotations

import builtins
import copyreg
import io
import os
import pickle
import pickletools
import subprocess

import pytest
import torch

from facebank.errors import ModelError, UnsafePickle
from facebank.sources.stylegan import load_generator


class _Payload:
    """Pickles as a call of `func(*args)`."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _write(tmp_path, obj, protocol=4):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": obj, "G": None, "D": None}, protocol=protocol))
    return path


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "the pickle payload ran"


def test_payload_is_real(tmp_path):
    """Sanity check of the test itself: plain pickle.loads does run such a payload."""
    target = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(builtins.exec, f"open({str(target)!r}, 'w').close()")))
    assert target.exists()


@pytest.mark.parametrize("protocol", [3, 4])
def test_os_system(tmp_path, marker, protocol):
    path = _write(tmp_path, _Payload(os.system, f"touch {marker}"), protocol)
    with pytest.raises(UnsafePickle, match=r"(posix|os|nt)\.system"):
        load_generator(path)


def test_builtins_eval(tmp_path, marker):
    path = _write(tmp_path, _Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()"))
    with pytest.raises(UnsafePickle, match="builtins.eval"):
        load_generator(path)


def test_subprocess_popen(tmp_path, marker):
    path = _write(tmp_path, _Payload(subprocess.Popen, ["touch", str(marker)]))
    with pytest.raises(UnsafePickle, match="subprocess.Popen"):
        load_generator(path)


@pytest.mark.parametrize("func", [torch.load, torch.save, torch._utils._rebuild_tensor, copyreg._reconstructor])
def test_unknown_torch_or_copyreg_function(tmp_path, marker, func):
    path = _write(tmp_path, _Payload(func, str(marker)))
    with pytest.raises(UnsafePickle, match=func.__name__):
        load_generator(path)


def test_dotted_name_on_an_allowed_module(tmp_path):
    """Protocol 4 STACK_GLOBAL may name attributes ('OrderedDict.fromkeys'); only exact pairs pass."""
    data = b"\x80\x04\x8c\x0bcollections\x8c\x14OrderedDict.fromkeys\x93\x8c\x01a\x85R."
    path = tmp_path / "dotted.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickle, match="collections.OrderedDict.fromkeys"):
        load_generator(path)


def test_reduce_on_unexpected_callable(tmp_path):
    """REDUCE applied to something that is not an allow-listed global (here an OrderedDict
    instance made by an allowed global) is refused before the call."""
    data = b"\x80\x02ccollections\nOrderedDict\n)R)R."
    path = tmp_path / "reduce.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickle, match="REDUCE"):
        load_generator(path)


def test_build_on_unexpected_object(tmp_path):
    data = b"\x80\x02ccollections\nOrderedDict\n)R}\x8c\x01a\x8c\x01b\x73b."  # BUILD state onto a dict
    path = tmp_path / "build.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickle, match="BUILD"):
        load_generator(path)


def _storage_blob(record_pickle: bytes) -> bytes:
    """A legacy storage blob whose storage record is `record_pickle` (magic, version, sys info first)."""
    head = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                               "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(obj, head, protocol=2)
    return head.getvalue() + record_pickle + pickle.dumps(["0"], protocol=2) + (1).to_bytes(8, "little") + b"\0" * 4


@pytest.mark.parametrize("nested", ["os_system", "unknown_storage_type"])
def test_nested_inside_storage_blob(tmp_path, marker, nested):
    if nested == "os_system":
        inner = pickle.dumps(_Payload(os.system, f"touch {marker}"), protocol=2)
        expected = r"system inside a tensor storage blob"
    else:  # shaped like the real record, but the storage type is a torch function
        inner = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nload\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01Nt" b"Q."
        expected = r"torch.load inside a tensor storage blob"
    blob = _storage_blob(inner)
    tensor = _Payload(torch._utils._rebuild_tensor_v2, _Payload(torch.storage._load_from_bytes, blob),
                      0, (1,), (1,), False, None)
    path = _write(tmp_path, tensor)
    with pytest.raises(UnsafePickle, match=expected):
        load_generator(path)


def test_well_formed_storage_blob_is_accepted():
    """The hand-made blob above is the real format: with a proper record it decodes."""
    from facebank.sources.stylegan.pickle_loader import _parse_storage_blob

    inner = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01Nt" b"Q."
    assert _parse_storage_blob(_storage_blob(inner)).flat.tolist() == [0.0]


def test_module_src_is_never_executed(tmp_path, monkeypatch, stylegan_fixtures):
    """A record whose module_src would create a file (if exec'd) loads as data only."""
    data = (stylegan_fixtures / "tiny32.pkl").read_bytes()
    src = next(arg for op, arg, _ in pickletools.genops(data) if op.name.endswith("UNICODE") and arg.startswith("#"))
    code = "open('RAN','w')#"  # relative: the test runs in tmp_path
    evil = data.replace(src.encode(), (code + " " * (len(src) - len(code))).encode(), 1)
    assert evil != data
    path = tmp_path / "src.pkl"
    path.write_bytes(evil)
    monkeypatch.chdir(tmp_path)
    G, _ = load_generator(path)
    assert G.img_resolution == 32
    assert not (tmp_path / "RAN").exists()


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999])
def test_truncated_pickle_is_a_model_error(tmp_path, stylegan_fixtures, cut):
    data = (stylegan_fixtures / "tiny32.pkl").read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ModelError) as info:
        load_generator(path)
    assert "\n" not in str(info.value) and "cut.pkl" in str(info.value)


@pytest.mark.parametrize("data", [b"", b"not a pickle at all", b"\x80\x04\x95garbage", b"PK\x03\x04broken zip"])
def test_garbage_is_a_model_error(tmp_path, data):
    path = tmp_path / "junk.pkl"
    path.write_bytes(data)
    with pytest.raises(ModelError):
        load_generator(path)


def test_corrupted_bytes_are_a_model_error(tmp_path, stylegan_fixtures):
    data = bytearray((stylegan_fixtures / "tiny32.pkl").read_bytes())
    for offset in range(100, 2000, 37):  # scribble over the opcode-dense start
        data[offset] = 0xFF
    path = tmp_path / "corrupt.pkl"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError):
        load_generator(path)
