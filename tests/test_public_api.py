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
