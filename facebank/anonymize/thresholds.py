"""The result thresholds: how dissimilar the swapped face must stay from the real one, per space.

Stricter than the pick's: the check runs in the build's spaces while an attacker runs another
recogniser, whose scores transfer imperfectly, so the result is held to the build space's
FAR 1e-2 point (a recogniser run 10x looser than the build's 1e-3) where facebank ships that
calibration for the space's model (facebank/index/default_thresholds.json, checked by model
checksum), never above the build's own threshold; otherwise to the build's threshold.
"""

from __future__ import annotations

from collections.abc import Mapping

from facebank.errors import InputError, UnknownSpace
from facebank.pick.options import check_threshold
from facebank.pick.session import FaceBank

__all__ = ["RESULT_FAR", "result_thresholds"]

RESULT_FAR = "0.01"  # the key of the shipped calibration used by default


def result_thresholds(session: FaceBank, given: float | Mapping[str, float] | None) -> dict[str, dict]:
    """space -> {"value": cosine, "source": where it comes from}, for every space of the build."""
    from facebank.index.build import default_thresholds

    if given is not None and not isinstance(given, Mapping):
        if len(session.spaces) != 1:  # cosines of different models are not on one scale
            raise InputError(f"a single result threshold needs a one-space build; give SPACE=COS for each of "
                             f"{', '.join(session.spaces)}")
        given = {session.spaces[0]: given}
    given = dict(given or {})
    for s in given:
        if s not in session.spaces:
            raise UnknownSpace(f"result threshold for space {s!r}, which is not in this build; it has: "
                               f"{', '.join(session.spaces)}")
    shipped = default_thresholds().get("spaces", {})
    out = {}
    for s in session.spaces:
        build_t = session.thresholds[s]
        if s in given:
            out[s] = {"value": check_threshold(given[s], s), "source": "given"}
            continue
        cal = shipped.get(s, {})
        entry = cal.get("at_far", {}).get(RESULT_FAR)
        same_model = cal.get("sha256") and cal.get("sha256") == session.manifest.spaces[s].model_sha256
        if entry and same_model and entry.get("supported", False):
            t = min(float(entry["threshold"]), build_t)
            out[s] = {"value": t, "source": f"FAR {float(RESULT_FAR):g} of the shipped calibration "
                                            f"({entry['n_above']} of {entry['n_impostor_pairs']:,} impostor pairs above)"
                                            + ("" if t == float(entry["threshold"]) else ", capped at the build's")}
        else:
            out[s] = {"value": build_t, "source": "the build's threshold (no FAR 1e-2 calibration for this model)"}
    return out
