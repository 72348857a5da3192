"""A plain install: a missing optional dependency is one line naming the extra; the default config
ships in the package; downloads retry, resume and land in the per-user cache (local server only)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import sys
import threading
import urllib.error
import urllib.request

import pytest
from typer.testing import CliRunner

from facebank.cli import app


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_build_without_faiss_fails_first_with_one_line_naming_the_extra(tmp_path, monkeypatch, assets):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    r = _invoke("build", "--source", assets / "generated_photos" / "age_adult", "--bank", tmp_path / "b.h5")
    assert r.exit_code == 1
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: MissingDependency: faiss is not installed") and "pip install faiss-cpu" in line
    assert not (tmp_path / "b.h5").exists()  # refused before any ingest


def test_import_errors_map_to_the_extra_in_the_api(small_bank, tmp_path, monkeypatch):
    from facebank import build_index
    from facebank.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingDependency, match=r"pip install faiss-cpu"):
        build_index(small_bank, out=tmp_path / "builds")
    with pytest.raises(ImportError):  # still an ImportError for callers that catch that
        build_index(small_bank, out=tmp_path / "builds")


def test_the_default_config_ships_in_the_package_and_loads_from_anywhere(tmp_path, monkeypatch):
    from facebank.config import config_path, load_config
    from facebank.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    path = config_path("default")
    assert path.is_file() and path.parent.name == "data" and path.parent.parent.name == "facebank"
    cfg = load_config()
    assert cfg == load_config("default") and cfg.sources[0].kind == "stylegan" and cfg.cache_dir is None
    with pytest.raises(ConfigError, match="shipped"):
        load_config("nosuch")


def test_the_cache_is_per_user_not_the_working_directory(tmp_path, monkeypatch):
    from facebank._io import download

    monkeypatch.delenv("FACEBANK_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert not str(download.default_cache_dir()).startswith(str(tmp_path))
    assert download.default_cache_dir().name == "facebank"
    monkeypatch.setenv("FACEBANK_CACHE", str(tmp_path / "c"))
    assert download.default_cache_dir() == tmp_path / "c"


def test_a_failed_connection_is_retried(http_root, tmp_path, monkeypatch):
    from facebank._io import download

    root, base, hits = http_root
    (root / "net.pkl").write_bytes(b"x" * 5000)
    real, fails = urllib.request.urlopen, [2]

    def flaky(req, timeout=None):
        if fails[0]:
            fails[0] -= 1
            raise urllib.error.URLError(TimeoutError("timed out"))
        return real(req, timeout=timeout)

    monkeypatch.setattr(download.urllib.request, "urlopen", flaky)
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)
    monkeypatch.setenv("FACEBANK_CACHE", str(tmp_path / "cache"))
    path = download.fetch(f"{base}/net.pkl")
    assert path.read_bytes() == b"x" * 5000 and path.parent == tmp_path / "cache" and fails == [0]
    # A 404 is not retried: one request, one line.
    with pytest.raises(download.SourceError, match="not found"):
        download.fetch(f"{base}/missing.pkl", cache_dir=tmp_path / "c2")
    assert hits.count("/missing.pkl") == 1


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves Range requests (206), as CDNs do; the conftest server ignores Range."""

    ranges: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        with open(self.directory + self.path, "rb") as fh:
            data = fh.read()
        rng = self.headers.get("Range")
        self.ranges.append(rng or "")
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


def test_a_cut_download_resumes_where_it_stopped(tmp_path):
    from facebank._io import download

    www = tmp_path / "www"
    www.mkdir()
    payload = bytes(range(256)) * 400
    (www / "ffhq.pkl").write_bytes(payload)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ffhq.pkl"
        cache = tmp_path / "cache"
        cache.mkdir()
        target = cache / download._cache_name(url, default="x")
        target.with_name(target.name + ".part").write_bytes(payload[:30000])  # what a cut run left
        path = download.fetch(url, cache_dir=cache, expected_sha256=hashlib.sha256(payload).hexdigest())
        assert path.read_bytes() == payload and _RangeHandler.ranges[-1] == "bytes=30000-"
        assert not target.with_name(target.name + ".part").exists()
    finally:
        server.shutdown()
        server.server_close()
