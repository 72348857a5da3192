"""ARCHITECTURE.md is the map a newcomer reads: every module and folder of the package is on it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_and_folder_is_in_architecture_md():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    pkg = ROOT / "facebank"
    missing = []
    for path in sorted(pkg.rglob("*.py")):
        if path.stem in ("__init__", "__main__") or "__pycache__" in path.parts:
            continue
        if not re.search(rf"(?<![\w-]){re.escape(path.stem)}(?![\w-])", text):
            missing.append(str(path.relative_to(ROOT)))
    for folder in sorted(p for p in pkg.iterdir() if p.is_dir() and p.name != "__pycache__"):
        if f"{folder.name}/" not in text:
            missing.append(f"{folder.relative_to(ROOT)}/")
    assert not missing, f"ARCHITECTURE.md does not mention: {', '.join(missing)}"
