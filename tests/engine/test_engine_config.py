"""`[engine]` in a build config, and the local default: no Ray needed."""

from __future__ import annotations

import pytest

from facebank.config import EngineConfig, load_config
from facebank.errors import ConfigError


def test_engine_section_parses_into_a_frozen_config(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text('bank = "x.h5"\n[engine]\nkind = "ray"\naddress = "auto"\nactors = 4\ncpus_per_actor = 1.0\n'
                    'window = 64\ncommit_every = 256\n')
    cfg = load_config(path)
    assert cfg.engine == EngineConfig(kind="ray", address="auto", actors=4, cpus_per_actor=1.0, window=64,
                                      commit_every=256)
    with pytest.raises(AttributeError):
        cfg.engine.kind = "local"  # frozen
    assert cfg.to_dict()["engine"]["kind"] == "ray"  # recorded in an index build's build_config.json


def test_default_engine_is_local(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text('bank = "x.h5"\n')
    assert load_config(path).engine.kind == "local"


@pytest.mark.parametrize("body, match", [('kind = "spark"', "engine kind 'spark'"), ("actors = 0", "must be >= 1"),
                                         ("window = 0", "must be >= 1"), ("commit_every = 0", "must be >= 1"),
                                         ("threads = 3", "unknown keys threads")])
def test_bad_engine_section_is_config_error(tmp_path, body, match):
    path = tmp_path / "b.toml"
    path.write_text(f'bank = "x.h5"\n[engine]\n{body}\n')
    with pytest.raises(ConfigError, match=match):
        load_config(path)
