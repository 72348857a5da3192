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
    from facebank.sources.stylegan.unpickler import _parse_storage_blob

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


# -- the classes public pickle scanners were bypassed by (issue 13) --------------------------------
# Each payload is written opcode by opcode (raw bytes, no __reduce__ helper), would create `marker`
# if any unpickler ran it (test_bypass_payloads_are_real proves that with plain pickle), and must be
# refused before anything runs, wherever facebank reads a pickle-capable file.

import marshal  # noqa: E402
import struct  # noqa: E402

import numpy as np  # noqa: E402

from tests.hostile.test_hostile import built  # noqa: E402,F401  (a 300-face bank and its build)


def _s(text: str) -> bytes:  # SHORT_BINUNICODE
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def _b(raw: bytes) -> bytes:  # BINBYTES
    return b"B" + struct.pack("<I", len(raw)) + raw


def _g(module: str, name: str) -> bytes:  # STACK_GLOBAL
    return _s(module) + _s(name) + b"\x93"


T1, T2, R, STOP, PROTO = b"\x85", b"\x86", b"R", b".", b"\x80\x04"


def _cmd(marker) -> bytes:
    return _s(f"touch {marker}")


def _code(marker) -> bytes:
    return marshal.dumps(compile(f"open({str(marker)!r}, 'w').close()", "<payload>", "exec"))


BYPASS = {
    # importlib.import_module('os') -> getattr(.., 'system') -> call
    "importlib_import_module": lambda m: PROTO + _g("builtins", "getattr") + _g("importlib", "import_module")
    + _s("os") + T1 + R + _s("system") + T2 + R + _cmd(m) + T1 + R + STOP,
    "pkgutil_resolve_name": lambda m: PROTO + _g("pkgutil", "resolve_name") + _s("os:system") + T1 + R
    + _cmd(m) + T1 + R + STOP,
    "operator_attrgetter": lambda m: PROTO + _g("operator", "attrgetter") + _s("system") + T1 + R
    + _g("importlib", "import_module") + _s("os") + T1 + R + T1 + R + _cmd(m) + T1 + R + STOP,
    "operator_methodcaller": lambda m: PROTO + _g("operator", "methodcaller") + _s("system") + _cmd(m) + T2 + R
    + _g("importlib", "import_module") + _s("os") + T1 + R + T1 + R + STOP,
    "builtins_getattr": lambda m: PROTO + _g("builtins", "getattr") + _g("builtins", "__import__") + _s("os")
    + T1 + R + _s("system") + T2 + R + _cmd(m) + T1 + R + STOP,
    # types.FunctionType(marshal.loads(code), {})()
    "marshal_code_object": lambda m: PROTO + _g("types", "FunctionType") + _g("marshal", "loads") + _b(_code(m))
    + T1 + R + b"}" + T2 + R + b")" + R + STOP,
    "nested_pickle_loads": lambda m: PROTO + _g("pickle", "loads")
    + _b(PROTO + _g("os", "system") + _cmd(m) + T1 + R + STOP) + T1 + R + STOP,
    "nested_c_pickle_loads": lambda m: PROTO + _g("_pickle", "loads")
    + _b(PROTO + _g("posix", "system") + _cmd(m) + T1 + R + STOP) + T1 + R + STOP,
    # names memoized out of sight and fetched back with BINGET for STACK_GLOBAL
    "stack_global_memo": lambda m: PROTO + _s("os") + b"\x94" + b"0" + _s("system") + b"\x94" + b"0"
    + b"h\x00" + b"h\x01" + b"\x93" + _cmd(m) + T1 + R + STOP,
    # memo slot 0 first holds an allowed module name, then is overwritten (BINPUT) with 'os'
    "stack_global_memo_overwrite": lambda m: PROTO + _s("collections") + b"q\x00" + _s("OrderedDict") + b"q\x01"
    + b"\x93" + b"0" + _s("os") + b"q\x00" + b"0" + _s("system") + b"q\x01" + b"0"
    + b"h\x00" + b"h\x01" + b"\x93" + _cmd(m) + T1 + R + STOP,
}


def _concatenated(marker, stylegan_fixtures) -> bytes:
    """A valid network pickle, then a second pickle holding the payload (run by a reader that reads on)."""
    return (stylegan_fixtures / "tiny32.pkl").read_bytes() + PROTO + _g("os", "system") + _cmd(marker) + T1 + R + STOP


def _framed_tail(marker) -> bytes:
    """Protocol-4 frame whose bytes go on past the first STOP: the payload hides inside the same frame."""
    body = _s("x") + STOP + PROTO + _g("os", "system") + _cmd(marker) + T1 + R + STOP
    return PROTO + b"\x95" + struct.pack("<Q", len(body)) + body


@pytest.mark.parametrize("case", sorted(BYPASS))
def test_bypass_payloads_are_real(tmp_path, case):
    """The hand-written payloads do run under a plain unpickler (so refusing them means something)."""
    ran = tmp_path / "ran"
    pickle.loads(BYPASS[case](ran))
    assert ran.exists()


def test_concatenated_payload_is_real(tmp_path, stylegan_fixtures):
    ran = tmp_path / "ran"
    for data in (_concatenated(ran, stylegan_fixtures), _framed_tail(ran)):
        stream = io.BytesIO(data)
        for _ in pickletools.genops(stream):  # walk over the first pickle (harmless), up to its STOP
            pass
        assert not ran.exists() and stream.tell() < len(data)
        pickle.Unpickler(stream).load()  # reading on runs the second
        assert ran.exists()
        ran.unlink()


EXPECTED_NAME = {"importlib_import_module": "builtins.getattr", "pkgutil_resolve_name": "pkgutil.resolve_name",
                 "operator_attrgetter": "operator.attrgetter", "operator_methodcaller": "operator.methodcaller",
                 "builtins_getattr": "builtins.getattr", "marshal_code_object": "types.FunctionType",
                 "nested_pickle_loads": "pickle.loads", "nested_c_pickle_loads": "_pickle.loads",
                 "stack_global_memo": "os.system", "stack_global_memo_overwrite": "os.system"}


@pytest.mark.parametrize("case", sorted(BYPASS))
def test_bypass_refused_by_the_network_loader(tmp_path, marker, case):
    path = tmp_path / "net.pkl"
    path.write_bytes(BYPASS[case](marker))
    with pytest.raises(UnsafePickle, match=EXPECTED_NAME[case].replace(".", r"\.")):
        load_generator(path)


@pytest.mark.parametrize("case", ["import_module_first", "marshal_first", "getattr_inside_dict"])
def test_bypass_named_first(tmp_path, marker, case):
    """The refused name is the first dangerous one (import_module, marshal.loads), wherever it sits."""
    if case == "import_module_first":
        data = PROTO + _g("importlib", "import_module") + _s("os") + T1 + R + STOP
        name = "importlib.import_module"
    elif case == "marshal_first":
        data = PROTO + _g("marshal", "loads") + _b(_code(marker)) + T1 + R + STOP
        name = "marshal.loads"
    else:  # the payload is a value of an otherwise well-formed top-level dict
        data = PROTO + b"}" + _s("G_ema") + BYPASS["builtins_getattr"](marker)[2:-1] + b"s" + STOP
        name = "builtins.getattr"
    path = tmp_path / "net.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickle, match=name.replace(".", r"\.")):
        load_generator(path)


def test_concatenated_pickles_are_refused(tmp_path, marker, stylegan_fixtures):
    for data in (_concatenated(marker, stylegan_fixtures), _framed_tail(marker)):
        path = tmp_path / "net.pkl"
        path.write_bytes(data)
        with pytest.raises(UnsafePickle, match="follow the pickle's STOP"):
            load_generator(path)


def test_bypass_in_a_torch_zip_is_a_model_error(tmp_path, marker):
    """Our own saved form (a torch zip) goes through torch's weights_only unpickler: data.pkl swapped
    for a payload is refused as a ModelError, nothing runs."""
    import zipfile

    good = tmp_path / "good.pt"
    torch.save({"format": "x"}, good)
    for case in ("builtins_getattr", "marshal_code_object", "nested_pickle_loads", "stack_global_memo"):
        evil = tmp_path / f"{case}.pt"
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w", zipfile.ZIP_STORED) as dst:
            for info in src.infolist():
                data = src.read(info)
                dst.writestr(info, BYPASS[case](marker) if info.filename.endswith("/data.pkl") else data)
        with pytest.raises(ModelError):
            load_generator(evil)


def _npy_with_pickle(path, payload: bytes) -> None:
    """A .npy file of dtype object: numpy's header, then the raw payload pickle as its body."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload)


def test_npy_object_payload_is_real(tmp_path):
    ran = tmp_path / "ran"
    _npy_with_pickle(tmp_path / "a.npy", BYPASS["builtins_getattr"](ran))
    np.load(tmp_path / "a.npy", allow_pickle=True)
    assert ran.exists()


@pytest.mark.parametrize("case", sorted(BYPASS))
def test_bypass_in_npy_files_is_refused(tmp_path, marker, built, case):
    """In `pick --embedding` (one line, exit 2) and in a build's rows.npy/vectors file, even with
    the manifest's checksums forged to match (IndexBuildError): numpy never unpickles."""
    import json
    import shutil

    from typer.testing import CliRunner

    from facebank._io.download import sha256_file
    from facebank.cli import app
    from facebank.errors import IndexBuildError
    from facebank.pick.session import FaceBank

    bank, build = built
    q = tmp_path / "q.npy"
    _npy_with_pickle(q, BYPASS[case](marker))
    r = CliRunner().invoke(app, ["pick", "--embedding", str(q), "--build", str(build), "--bank", str(bank)])
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: InputError: "), r.stderr
    assert "allow_pickle" in lines[0] or "pickle" in lines[0], lines[0]
    for name in ("rows.npy", "vectors.s.npy"):
        b = tmp_path / f"build-{name}"
        shutil.copytree(build, b)
        _npy_with_pickle(b / name, BYPASS[case](marker))
        m = json.loads((b / "manifest.json").read_text())
        m["files"] = {k: sha256_file(b / k) for k in m["files"]}
        m["spaces"]["s"]["files"] = {k: sha256_file(b / k) for k in m["spaces"]["s"]["files"]}
        (b / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(IndexBuildError, match=name.replace(".", r"\.")):
            FaceBank(b, bank=bank)


@pytest.mark.parametrize("case", sorted(BYPASS) + ["concatenated"])
def test_bypass_in_the_cli_is_one_line(tmp_path, marker, stylegan_fixtures, case):
    """`facebank generate --network evil.pkl`: one `error: UnsafePickle: ...` line, no bank written."""
    from typer.testing import CliRunner

    from facebank.cli import app

    net = tmp_path / "evil.pkl"
    net.write_bytes(_concatenated(marker, stylegan_fixtures) if case == "concatenated" else BYPASS[case](marker))
    r = CliRunner().invoke(app, ["generate", "--network", str(net), "--seeds", "0-1", "--bank", str(tmp_path / "b.h5"),
                                 "--device", "cpu", "--no-annotate"])
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: UnsafePickle: "), r.stderr
    assert not (tmp_path / "b.h5").exists()
