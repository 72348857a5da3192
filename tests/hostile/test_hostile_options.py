"""Options that used to be accepted silently (issue 13), through the real CLI: each is exactly one
stderr line `error: <Type>: ...` naming the option or value, a non-zero exit, and no work done."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.hostile.test_hostile import DIM, assert_one_line, built  # noqa: F401  (the module fixture)

runner = CliRunner()


def cli(*args):
    from facebank.cli import app

    return runner.invoke(app, [str(a) for a in args])


def test_index_build_threshold_for_an_unknown_space(built, tmp_path):
    bank, _ = built
    out = tmp_path / "builds"
    line = assert_one_line(cli("index", "build", "--bank", bank, "--builds", out, "--threshold", "nope=0.5"), 2,
                           "UnknownSpace")
    assert "'nope'" in line and "its spaces: s" in line
    assert not out.exists() or not any(p.name != "current" for p in out.iterdir())
    # the same in the library, and a typo beside a good value is still refused
    from facebank.errors import UnknownSpace
    from facebank.index.build import build_index

    with pytest.raises(UnknownSpace, match="'sx'"):
        build_index(bank, out=out, thresholds={"s": 0.3, "sx": 0.5})
    r = cli("index", "build", "--bank", bank, "--builds", out, "--threshold", "s=0.3", "--json")
    assert r.exit_code == 0, r.stderr  # a known space still builds


@pytest.mark.parametrize("value", ["nope", "2", "-1.5", "nan", "inf"])
def test_index_build_bad_threshold_value(built, tmp_path, value):
    r = cli("index", "build", "--bank", built[0], "--builds", tmp_path / "b", "--threshold", f"s={value}")
    assert_one_line(r, 2)


WORKER_COMMANDS = {
    "ingest folder": lambda tmp, bank: ["ingest", "folder", tmp, "--bank", tmp / "new.h5"],
    "ingest generated-photos": lambda tmp, bank: ["ingest", "generated-photos", tmp, "--bank", tmp / "new.h5"],
    "annotate": lambda tmp, bank: ["annotate", "--bank", bank],
    "embed": lambda tmp, bank: ["embed", "--bank", bank, "--space", "dlib"],
    "generate": lambda tmp, bank: ["generate", "--network", tmp / "net.pkl", "--seeds", "0-1", "--bank", tmp / "g.h5"],
}


@pytest.mark.parametrize("value", ["-3", "-1"])
@pytest.mark.parametrize("command", sorted(WORKER_COMMANDS))
def test_negative_workers(built, tmp_path, command, value):
    """Every command with --workers refuses a negative count before it reads or loads anything."""
    (tmp_path / "net.pkl").write_bytes(b"not read: --workers is checked first")
    args = WORKER_COMMANDS[command](tmp_path, built[0])
    line = assert_one_line(cli(*args, "--workers", value), 2, "InputError")
    assert "--workers" in line and value in line
    assert not (tmp_path / "new.h5").exists() and not (tmp_path / "g.h5").exists()


def test_workers_in_the_library_and_config():
    from facebank.config import BuildConfig
    from facebank.engine import run_embed, run_ingest
    from facebank.errors import ConfigError, InputError

    for bad in (-3, -1, 1.5, "2", True):
        with pytest.raises(InputError, match="workers"):
            run_ingest("unused.h5", [], workers=bad)
        with pytest.raises(InputError, match="workers"):
            run_embed("unused.h5", None, workers=bad)
        with pytest.raises(ConfigError, match="workers"):
            BuildConfig(workers=bad)
    assert BuildConfig(workers=0).workers == 0  # 0 = one per CPU, the documented default


@pytest.mark.parametrize("value", ["-2", "-1.0001", "1.5", "2"])
def test_pick_threshold_out_of_range_is_an_input_error(built, tmp_path, value):
    """A cosine outside [-1, 1] is a bad argument, not 'no eligible target'."""
    q = tmp_path / "q.npy"
    np.save(q, np.ones(DIM, np.float32))
    line = assert_one_line(cli("pick", "--embedding", q, "--build", built[1], "--bank", built[0],
                               "--threshold", value), 2, "InputError")
    assert "NoEligibleTarget" not in line and "[-1, 1]" in line
    line = assert_one_line(cli("pick", "--embedding", q, "--build", built[1], "--bank", built[0],
                               "--threshold", f"s={value}"), 2, "InputError")
    assert "[-1, 1]" in line
