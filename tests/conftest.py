"""Shared fixtures: where the real test assets are, and when their absence is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _assets_dir() -> Path:
    return Path(os.environ.get("FACEBANK_ASSETS", ROOT.parent / "shared" / "assets")).resolve()


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("FACEBANK_REQUIRE_ASSETS") == "1":
            pytest.fail(f"required test asset missing: {path}")
        pytest.skip(f"test asset not available: {path}")
    return path


@pytest.fixture(scope="session")
def assets() -> Path:
    """The shared real assets folder (FACEBANK_ASSETS, default ../shared/assets)."""
    return _require(_assets_dir())


@pytest.fixture(scope="session")
def stylegan_fixtures() -> Path:
    """Golden vectors for our StyleGAN2-ADA generator (../shared/fixtures/stylegan2ada)."""
    default = ROOT.parent / "shared" / "fixtures" / "stylegan2ada"
    return _require(Path(os.environ.get("FACEBANK_STYLEGAN_FIXTURES", default)).resolve())


GP_SUBSET = ("age_child", "age_adult")  # two folders of the real generated.photos export


@pytest.fixture(scope="session")
def gp_items(assets):
    """Real generated.photos items: the first 20 faces of two folders (children and adults)."""
    from facebank.sources.generated_photos import iter_generated_photos

    items = []
    for folder in GP_SUBSET:
        items += [i for i in iter_generated_photos(assets / "generated_photos" / folder) if i.data][:20]
    return items


@pytest.fixture(scope="session")
def small_bank(tmp_path_factory, gp_items):
    """A bank of 40 real generated.photos faces, annotated and embedded in the dlib space, its labels settled.

    Read-only for tests: copy it (`shutil.copy`) before changing it.
    """
    from facebank.config import SpaceConfig
    from facebank.ingest import ingest

    from facebank.bank.disputes import accept_labels

    path = tmp_path_factory.mktemp("bank") / "bank.h5"
    summary = ingest(str(path), gp_items, spaces=[SpaceConfig("dlib")])
    assert summary.added == len(gp_items), summary.to_dict()
    # One adult's label the model contradicts (a disputed label, left out of builds): kept, so that
    # every face of this bank is servable (tests/bank/test_label_disputes.py makes its own dispute).
    accept_labels(path, None, use="label")
    return path


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server on 127.0.0.1 serving a temporary folder: (folder, base URL, paths requested).

    Download code is tested against it; no test reaches the internet.
    """
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def small_build(small_bank, tmp_path_factory):
    """(bank, builds folder, build dir): a copy of `small_bank` with a dlib index build, made once.

    Read-only for tests, like small_bank.
    """
    from facebank.bank import copy_bank
    from facebank.index.build import build_index

    root = tmp_path_factory.mktemp("small_build")
    bank = root / "bank.h5"
    copy_bank(small_bank, bank)
    build = build_index(bank, out=root / "builds")
    return bank, root / "builds", Path(build)
