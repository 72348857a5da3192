"""engine.run_* name every option: a misspelt one is a TypeError before any work, and none of the
local stage's options is left out (so none can be dropped on the way)."""

from __future__ import annotations

import inspect

import pytest

from facebank.config import SpaceConfig
from facebank.engine import run_annotate, run_embed, run_generate, run_ingest
from facebank.ingest import annotate_bank, embed_bank, generate_to_bank, ingest

PAIRS = [(run_ingest, ingest, ("b.h5", [])), (run_embed, embed_bank, ("b.h5", SpaceConfig("dlib"))),
         (run_annotate, annotate_bank, ("b.h5",)), (run_generate, generate_to_bank, ("b.h5", None))]


@pytest.mark.parametrize("run, stage, args", PAIRS, ids=lambda x: getattr(x, "__name__", ""))
def test_a_misspelt_option_is_a_type_error(tmp_path, run, stage, args):
    with pytest.raises(TypeError, match="workrs"):
        run(str(tmp_path / "b.h5"), *args[1:], workrs=2)
    assert not (tmp_path / "b.h5").exists()


@pytest.mark.parametrize("run, stage, args", PAIRS, ids=lambda x: getattr(x, "__name__", ""))
def test_every_option_of_the_local_stage_is_named(run, stage, args):
    ours = inspect.signature(run).parameters
    theirs = inspect.signature(stage).parameters
    missing = set(theirs) - set(ours) - {"annotator"}  # ingest's annotator: a loaded model, local only
    assert not missing, f"{run.__name__} leaves out {sorted(missing)}"
    for name in set(theirs) & set(ours):
        p, q = theirs[name], ours[name]
        if p.default is not inspect.Parameter.empty and name != "vision":  # run_annotate: None = VisionConfig()
            assert q.default == p.default, f"{run.__name__}({name}=...) defaults to {q.default!r}, the stage {p.default!r}"
        assert q.kind == p.kind or q.kind is inspect.Parameter.KEYWORD_ONLY
