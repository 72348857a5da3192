"""The README a newcomer reads: its fresh-machine commands are the two that work, CI runs the same
test command, and the reference it points to exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_fresh_machine_commands_are_make_bank_and_make_test():
    first_sh = re.search(r"## On a fresh machine.*?```sh\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_sh.strip().splitlines()]
    assert commands == ["make bank SOURCE=../shared/assets/generated_photos", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^bank: install$", makefile, re.M) and re.search(r"^test: install$", makefile, re.M)
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert ci[-1] == "make test"


def test_it_opens_with_what_it_is_then_a_short_quickstart():
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings[:2] == ["Quickstart", "On a fresh machine"]
    code = re.search(r"## Quickstart\n.*?```python\n(.*?)```", README, re.S).group(1)
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 6
    assert len(README) < 9000  # the reference lives in docs/


def test_the_reference_section_points_at_files_that_exist():
    ref = README.split("## Reference", 1)[1].split("## Further reading", 1)[0]
    for name in re.findall(r"(docs/[\w-]+\.md|ARCHITECTURE\.md)", ref):
        assert (ROOT / name).is_file(), name
