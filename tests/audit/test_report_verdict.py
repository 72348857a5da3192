"""The audit report starts with its verdict and a table of contents; labels on plots do not collide;
progress is printed when stderr is not a terminal."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from facebank.audit.plots import merge_close
from facebank.cli import app


@pytest.fixture(scope="module")
def report(small_build, tmp_path_factory):
    from facebank.audit.run import run_audit

    bank, _, build = small_build
    return run_audit(bank=bank, build=build, out=tmp_path_factory.mktemp("verdict") / "report")


def test_the_first_section_is_the_verdict(report):
    doc = json.loads((report.parent / "report.json").read_text())
    assert [s["title"] for s in doc["sections"]][:2] == ["Verdict", "Run"]
    rows = {r["check"]: r for r in doc["sections"][0]["tables"]["verdict"]["rows"]}
    assert rows["bank"]["finding"].startswith("40 faces: 40 annotated")
    assert rows["empty groups"]["status"] == "warning" and "60+/female" in rows["empty groups"]["finding"]
    assert "add faces" in rows["empty groups"]["what to do"]
    assert "mutually distinct at dlib 0.9239" in rows["distinct identities"]["finding"]
    assert rows["gender labels"]["finding"] == "no disputed label"
    t = rows["threshold dlib"]["finding"]
    assert "0.9239 at FAR 0.001 (privacy bound" in t and "95% CI 1.00e-03..1.22e-03" in t
    assert rows["calibration"]["status"] == rows["held-out transfer"]["status"] == rows["pick audit"]["status"] == "info"
    assert rows["pick audit"]["finding"] == "not run"  # what did not run says so, and how to run it


def test_markdown_and_html_have_a_table_of_contents(report):
    md = report.read_text()
    assert md.splitlines()[2].startswith("Contents: [Verdict](#s0-verdict) · [Run](#s1-run)")
    assert '<a id="s0-verdict"></a>' in md
    html = (report.parent / "report.html").read_text()
    assert "<nav>Contents: <a href='#s0-verdict'>Verdict</a>" in html and "id='s0-verdict'" in html
    assert html.count("<div class='scroll'><table>") == html.count("<table>")  # every table scrolls in its box


def test_close_threshold_lines_share_one_label():
    # The build's 0.9239 and the point estimate at FAR 1e-3, 0.9245, drew on one pixel column.
    lines = merge_close({"FAR 0.001": 0.9245, "build": 0.9239, "EER": 0.80}, span=0.6)
    assert lines == [("EER: 0.800", 0.80), ("build 0.9239 = FAR 0.001 0.9245", pytest.approx(0.9242))]
    assert merge_close({"a": 0.1, "b": 0.5}, span=1.0) == [("a: 0.100", 0.1), ("b: 0.500", 0.5)]


def test_audit_prints_progress_lines_when_stderr_is_not_a_terminal(small_build, tmp_path):
    bank, _, build = small_build
    r = CliRunner().invoke(app, ["audit", "--bank", str(bank), "--build", str(build), "--out", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert "audit: bank distributions 0/1" in r.stderr and "audit: verdict 1/1" in r.stderr
