"""Audits of a bank and its thresholds. Public API: `calibrate` (labelled folders -> thresholds
with counts and intervals) and `audit` (the `facebank audit` report); see `facebank.audit.api`."""

from facebank.audit.api import LabelledSet, audit, calibrate

__all__ = ["LabelledSet", "audit", "calibrate"]
