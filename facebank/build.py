"""Deprecated path: the whole-pipeline build lives in `facebank.workflow` (re-exported here unchanged)."""

from facebank.workflow import ProgressFactory, run_build  # noqa: F401
