"""The audit report's first screen: what the bank can and cannot do, and what to do about each.

One table, one row per finding (`check`, `finding`, `status` ok | warning | info, `what to do`),
built from numbers the other sections (and `facebank info`) compute: the bank's size, its
distinct identities and empty or thin groups at the thresholds (facebank.index.capacity), gender
labels the model disputes (facebank.bank.disputes), the thresholds with their intervals, and,
when they ran, the calibration, held-out transfer and pick audit figures.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from facebank.audit.report import Section
from facebank.bank.disputes import DISPUTE_CONFIDENCE, disputes
from facebank.bank.schema import STATUS_ANNOTATED, STATUS_REJECTED, STATUS_REMOVED
from facebank.index.capacity import THIN_DISTINCT, BankCapacity, bank_capacity, capacity_thresholds

__all__ = ["verdict_section"]

TITLE = "Verdict"


def _row(check: str, finding: str, status: str, todo: str = "") -> dict:
    return {"check": check, "finding": finding, "status": status, "what to do": todo or "nothing"}


def _capacity(bank: Any, session: Any) -> BankCapacity | None:
    if session is not None:
        return bank_capacity(bank, dict(session.thresholds), source=f"build {session.manifest.build_id}",
                             rows=np.asarray(session.rows))
    thr, source = capacity_thresholds(bank)
    return bank_capacity(bank, thr, source=source) if thr else None


def _threshold_rows(session: Any, report: Any) -> list[dict]:
    out = []
    if session is not None:
        for s, v in session.manifest.spaces.items():
            cal = v.threshold_calibration or {}
            if cal.get("ci95"):
                lo, hi = cal["ci95"]
                what = (f"{v.threshold:.4f} at FAR {cal.get('far', 0):g} ({cal.get('bound', 'none')} bound; "
                        f"achieved FAR {cal.get('achieved_far', float('nan')):.2e}, 95% CI {lo:.2e}..{hi:.2e}, "
                        f"{cal.get('n_above', '?')} of {cal.get('n_impostor_pairs', '?'):,} impostor pairs above)")
                out.append(_row(f"threshold {s}", what, "ok"))
            else:
                out.append(_row(f"threshold {s}", f"{v.threshold:.4f} ({v.threshold_source or '?'}): no "
                                                  "calibration interval recorded", "warning",
                                "build with a calibrated threshold: the shipped default or --threshold-from "
                                "calibration.json (facebank audit --labelled)"))
    if report is not None:
        for s, cal in report.spaces.items():
            t = cal.at_far(1e-3) or (cal.thresholds[0] if cal.thresholds else None)
            if t is None:
                continue
            ok = t.supported
            out.append(_row(f"calibration {s}", f"{cal.eer_text}; FAR {t.far:g} at {t.threshold:.4f} "
                                                f"({t.bound} bound, 95% CI {t.ci_low:.2e}..{t.ci_high:.2e}, "
                                                f"{t.n_above} of {t.n_impostor_pairs:,} impostor pairs above)",
                            "ok" if ok else "warning",
                            "" if ok else "more identity-labelled faces: too few impostor pairs above this threshold"))
    return out


def _table(sections: Sequence[Section], name: str) -> list[Mapping[str, Any]]:
    for sec in sections:
        if name in sec.tables:
            return list(sec.tables[name])
    return []


def _transfer_rows(sections: Sequence[Section]) -> list[dict]:
    rows = _table(sections, "held-out transfer")
    out = []
    for h in sorted({r["heldout"] for r in rows}):
        mine = [r for r in rows if r["heldout"] == h]
        key = min((k for k in mine[0] if k.startswith("match@")), key=lambda k: abs(np.log10(float(k[6:]) / 1e-3)),
                  default=None)
        if key is None:
            continue
        base = next((r[key] for r in mine if r["selection"].startswith("uniform")), float("nan"))
        picks = ", ".join(f"{r['selection'].replace('facebank ', '')} with {r['picked_with']} {r[key]:.1%}"
                          for r in mine if r["selection"].startswith("facebank"))
        worse = any(r[key] > base for r in mine if r["selection"].startswith("facebank"))
        out.append(_row(f"held-out {h}", f"matched at {key[6:]}: uniform random face {base:.1%}; {picks}",
                        "warning" if worse else "ok",
                        "furthest mode, or a build that also indexes this recogniser's space" if worse else ""))
    return out


def _pick_rows(sections: Sequence[Section]) -> list[dict]:
    rows = [r for r in _table(sections, "match rates") if r.get("scored_with") == "any"
            and not str(r.get("picked_with", "")).startswith("pixel")]
    return [_row(f"pick audit {r['mode']} with {r['picked_with']}",
                 f"{r['n_matched']} of {r['n_queries'] - r['n_no_pick']} picks matched in some build space",
                 "ok" if r["n_matched"] == 0 else "warning",
                 "" if r["n_matched"] == 0 else "pick with every build space (the guarantee holds per space given)")
            for r in rows]


def verdict_section(bank: Any, session: Any = None, report: Any = None, sections: Sequence[Section] = ()) -> Section:
    """The verdict table over the bank, its build (if any), a calibration report and the other sections."""
    status = bank.column("status")
    n, ann = len(bank), int((status == STATUS_ANNOTATED).sum())
    rows = [_row("bank", f"{n:,} faces: {ann:,} annotated, {int((status == STATUS_REMOVED).sum()):,} removed, "
                         f"{int((status == STATUS_REJECTED).sum()):,} rejected; spaces {', '.join(bank.spaces) or 'none'}",
                 "ok" if ann else "warning", "" if ann else "facebank annotate, then facebank embed")]
    cap = _capacity(bank, session)
    if cap is None:
        rows.append(_row("distinct identities", "not counted: no build and no shipped threshold for these spaces",
                         "info", "give --build"))
    else:
        t = cap.total
        thr = ", ".join(f"{s} {v:.4f}" for s, v in cap.thresholds.items())
        share = t.distinct / t.faces if t.faces else 0.0
        rows.append(_row("distinct identities",
                         f"{t.distinct:,} of {t.faces:,} servable faces are mutually distinct at {thr} "
                         f"({cap.threshold_source}; per space: "
                         + ", ".join(f"{s} {v:,}" for s, v in t.distinct_by_space.items()) + ")",
                         "ok" if share >= 0.5 else "warning",
                         "" if share >= 0.5 else "most faces are look-alikes to the recogniser: add faces from "
                                                 "other seeds or sources, then facebank dedupe the look-alikes"))
        empty = [g.group for g in cap.groups if g.status == "empty"]
        thin = [f"{g.group} ({g.faces}/{g.distinct})" for g in cap.groups if g.status == "thin"]
        rows.append(_row("empty groups", ", ".join(empty) or "none", "warning" if empty else "ok",
                         "a pick for them fails (or widens with fallback widen_age): add faces of those ages"
                         if empty else ""))
        rows.append(_row(f"thin groups (< {THIN_DISTINCT} distinct)", ", ".join(thin) or "none",
                         "warning" if thin else "ok",
                         "different people get look-alike targets: add faces of those groups" if thin else ""))
    found = disputes(bank)
    rows.append(_row("gender labels", f"{len(found)} labels the model contradicts with >= {DISPUTE_CONFIDENCE:g} "
                                      "confidence (not served until settled)" if found else "no disputed label",
                     "warning" if found else "ok",
                     "facebank bank check-labels (second opinion), then facebank bank accept-labels" if found else ""))
    rows += _threshold_rows(session, report)
    rows += _transfer_rows(sections)
    rows += _pick_rows(sections)
    if report is None:
        rows.append(_row("calibration", "not run", "info", "--labelled DIR --identities CSV: thresholds with intervals"))
    if not _table(sections, "held-out transfer"):
        rows.append(_row("held-out transfer", "not run", "info",
                         "--build B --labelled DIR --heldout SPACE=MODEL: how picks fare against a recogniser "
                         "the build does not use"))
    if not _table(sections, "match rates"):
        rows.append(_row("pick audit", "not run", "info",
                         "--build B --queries DIR: every face of real photos picked, then scored in every space"))
    warn = sum(r["status"] == "warning" for r in rows)
    text = (f"**{warn} warning{'s' if warn != 1 else ''}.** One row per check; the sections below hold the numbers.")
    return Section(TITLE, text, {"verdict": rows})
