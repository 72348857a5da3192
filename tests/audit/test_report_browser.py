"""The audit report in a real browser: headless Chromium (Debian's `chromium`) opens report.html,
and the test fails on any page error (a script exception, a console error, a resource that did not
load, an image that did not decode). It talks to Chromium over the DevTools protocol on a pipe
(`--remote-debugging-pipe`: JSON messages ended by NUL on fds 3 and 4), so it needs no driver.

It also checks what a reader sees first: the verdict fills the first screen (1280 x 900), the table
of contents links every section, and wide tables scroll inside their box instead of widening the
page. The first screen and the whole page are saved as PNGs (report_first_screen.png,
report_full.png in the test's folder; FACEBANK_REPORT_PNG=DIR keeps copies).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


class Cdp:
    """The smallest DevTools client: commands and events over Chromium's debugging pipe."""

    def __init__(self, profile: Path):
        r3, self._w = os.pipe()  # Chromium reads commands from its fd 3
        self._r, w4 = os.pipe()  # and writes replies and events to its fd 4
        def onto_3_and_4() -> None:  # via fds >= 10, so that neither end overwrites the other
            a, b = fcntl.fcntl(r3, fcntl.F_DUPFD, 10), fcntl.fcntl(w4, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4, r3, w4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=onto_3_and_4)
        os.close(r3)
        os.close(w4)
        self._buf, self._id, self.events, self.session = b"", 0, [], None

    def _read(self) -> dict:
        while b"\0" not in self._buf:
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its debugging pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, *, browser: bool = False) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if self.session and not browser:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            got = self._read()
            if got.get("id") == self._id:
                if "error" in got:
                    raise RuntimeError(f"{method}: {got['error']}")
                return got.get("result", {})
            self.events.append(got)

    def wait_for(self, method: str) -> dict:
        for e in self.events:
            if e.get("method") == method:
                return e
        while True:
            got = self._read()
            self.events.append(got)
            if got.get("method") == method:
                return got

    def close(self) -> None:
        try:
            self.send("Browser.close", browser=True)
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._r)
        os.close(self._w)


def page_errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            out.append(f"exception: {p['exceptionDetails'].get('text')}")
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log: {p['entry']['text']}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
            out.append(f"console: {p.get('args')}")
        elif m == "Network.loadingFailed":
            out.append(f"load failed: {p.get('errorText')}")
    return out


def render(html: Path, out: Path) -> dict:
    """Open `html` at 1280 x 900: page errors, layout facts, and PNGs of the first screen and the page."""
    cdp = Cdp(out / "profile")
    try:
        target = cdp.send("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        cdp.session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.send(f"{domain}.enable")
        cdp.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1,
                                                         "mobile": False})
        cdp.send("Page.navigate", {"url": html.resolve().as_uri()})
        cdp.wait_for("Page.loadEventFired")
        facts = cdp.send("Runtime.evaluate", {"returnByValue": True, "expression": """(() => {
            const first = document.querySelector('section');
            const imgs = [...document.images];
            return {first_id: first.id, first_title: first.querySelector('h2').textContent,
                    verdict_bottom: first.getBoundingClientRect().bottom, viewport: innerHeight,
                    page_width: document.documentElement.scrollWidth, view_width: innerWidth,
                    page_height: document.documentElement.scrollHeight,
                    toc: [...document.querySelectorAll('nav a')].map(a => a.getAttribute('href')),
                    ids: [...document.querySelectorAll('section')].map(s => '#' + s.id),
                    broken_images: imgs.filter(i => !i.complete || i.naturalWidth === 0).length,
                    images: imgs.length,
                    warnings: document.querySelectorAll('section.verdict tr.warning').length};
        })()"""})["result"]["value"]
        shot = cdp.send("Page.captureScreenshot", {"format": "png"})["data"]
        (out / "report_first_screen.png").write_bytes(base64.b64decode(shot))
        full = cdp.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
            "x": 0, "y": 0, "width": 1280, "height": min(facts["page_height"], 16000), "scale": 0.5}})["data"]
        (out / "report_full.png").write_bytes(base64.b64decode(full))
        facts["errors"] = page_errors(cdp.events)
        return facts
    finally:
        cdp.close()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_report_opens_with_its_verdict_in_chromium_without_page_errors(small_build, tmp_path):
    from facebank.audit.run import run_audit

    bank, _, build = small_build
    report = run_audit(bank=bank, build=build, out=tmp_path / "report")
    facts = render(report.parent / "report.html", tmp_path)
    keep = os.environ.get("FACEBANK_REPORT_PNG")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for name in ("report_first_screen.png", "report_full.png"):
            shutil.copy(tmp_path / name, Path(keep) / name)
    assert facts["errors"] == []
    assert facts["first_title"] == "Verdict" and facts["verdict_bottom"] <= facts["viewport"], facts
    assert facts["toc"] == facts["ids"] and len(facts["ids"]) >= 3
    assert facts["images"] >= 2 and facts["broken_images"] == 0
    assert facts["page_width"] <= facts["view_width"]  # wide tables scroll in their box
    # small_bank has no face aged 13-19 or 40+: the verdict warns about empty groups.
    assert facts["warnings"] >= 1
    assert (tmp_path / "report_first_screen.png").stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_a_page_error_is_caught(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><section id='a'><h2>x</h2></section><img src='missing.png'>"
                    "<script>throw new Error('boom')</script></body></html>")
    facts = render(page, tmp_path)
    assert any("boom" in e or "exception" in e for e in facts["errors"]) and facts["broken_images"] == 1
