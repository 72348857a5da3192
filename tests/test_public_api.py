"""The curated public surface and the error tree."""

from __future__ import annotations

import inspect

import facebank
import facebank.errors as errors


def test_all_is_sorted_and_exported():
    assert facebank.__all__ == sorted(facebank.__all__)
    for name in facebank.__all__:
        assert hasattr(facebank, name), name


def test_every_error_is_under_the_root_and_exported():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    for cls in classes:
        if cls is errors.FaceRejected:
            continue  # a rejection record, not an error of the library
        assert issubclass(cls, errors.FacebankError), cls
        assert cls.__name__ in facebank.__all__, cls
    assert issubclass(errors.InvalidEmbedding, errors.InputError)
    assert issubclass(errors.StaleIndex, errors.IndexBuildError)
    assert issubclass(errors.UnsafePickle, errors.ModelError)


def test_unknown_space_message_is_not_quoted():
    assert str(errors.UnknownSpace("space 'x' is not here")) == "space 'x' is not here"


def test_all_equals_the_public_names():
    """`__all__` is exactly what `facebank/__init__.py` binds that is not private or a submodule:
    nothing public is left out of it and nothing in it is missing."""
    import types

    public = {n for n, v in vars(facebank).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert set(facebank.__all__) - {"__version__"} == public


def test_no_old_import_path_is_left():
    import importlib

    import pytest

    for old in ("facebank.pipeline", "facebank.build", "facebank.photo", "facebank.api", "facebank.files",
                "facebank.download", "facebank.index.session", "facebank.bank.v1"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)


def test_reading_a_config_loads_no_vision_library(tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    cfg.write_text('bank = "b.h5"\n[vision]\ndetector = "dlib"\n[[spaces]]\nspace = "dlib"\n')
    code = ("import sys; from facebank.config import load_config; load_config(sys.argv[1]); "
            "print(sorted(m for m in ('cv2', 'skimage', 'dlib', 'onnxruntime', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_public_api_is_typed():
    """py.typed ships with the package, and every parameter of the pick API has a type hint
    (typing.get_type_hints resolves them at run time, so no name is left to TYPE_CHECKING)."""
    import inspect
    import typing
    from pathlib import Path

    assert (Path(facebank.__file__).parent / "py.typed").is_file()
    fns = [facebank.pick_target, facebank.pick_targets, facebank.pick_for_photo, facebank.pick_for_image,
           facebank.analyse, facebank.FaceBank.pick_target, facebank.FaceBank.pick_targets,
           facebank.FaceBank.pick_for_photo, facebank.FaceBank.pick_for_image, facebank.FaceBank.analyse]
    for fn in fns:
        hints = typing.get_type_hints(fn)
        missing = [p for p in inspect.signature(fn).parameters if p != "self" and p not in hints]
        assert not missing, (fn.__qualname__, missing)
        assert "return" in hints, fn.__qualname__
    for name in ("embedding", "threshold", "rng", "exclude"):
        assert name in typing.get_type_hints(facebank.pick_target)
