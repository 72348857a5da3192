"""What `facebank info` reports: counts per source, per age x gender group (annotated faces only: removed
and rejected ones serve no pick), per space, rejections."""

from __future__ import annotations

from collections import Counter

import numpy as np

from facebank.bank.schema import STATUS_ANNOTATED
from facebank.bank.store import Bank
from facebank.labels import AGE_GROUPS, age_group, gender_name


def bank_summary(bank: Bank) -> dict:
    ages, genders = bank.column("age"), bank.column("gender")
    served = bank.column("status") == STATUS_ANNOTATED  # removed and rejected faces are in no group
    groups: Counter = Counter()
    for age, gender in zip(ages[served], genders[served]):
        a = age_group(float(age)) if np.isfinite(age) else "unknown"
        g = gender_name(int(gender))
        groups[f"{a}/{g}"] += 1
    order = {label: i for i, label in enumerate(AGE_GROUPS)}
    rejections = bank.rejections()
    duplicates = []
    for event in bank.log():
        duplicates.extend(event.get("duplicates", []))
    sources = bank.column("source")
    seeds = sorted(int(s.rsplit("seed", 1)[1]) for s, src in zip(bank.column("source_id"), sources) if src == "stylegan")
    status = Counter({0: "generated", 1: "annotated", 2: "rejected", 3: "removed"}.get(int(v), "unknown") for v in bank.column("status"))
    return {
        "bank": str(bank.path),
        "faces": len(bank),
        "content_hash": bank.content_hash,
        "writer": bank.writer,
        "sources": dict(Counter(sources.tolist())),
        "groups": dict(sorted(groups.items(), key=lambda kv: (order.get(kv[0].split("/")[0], 99), kv[0]))),
        "spaces": {
            s: {**bank.space_info(s), "faces": int(bank.present(s).sum())} for s in bank.spaces
        },
        "rejections": dict(Counter(r["reason"] for r in rejections)),
        "rejected": [{k: r[k] for k in ("source", "source_id", "reason", "detail", "stage")} for r in rejections],
        "duplicates": sorted(set(duplicates)),
        "status": dict(status),
        "stylegan_faces": len(seeds),
        "stylegan_seeds": _ranges(seeds),
    }


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5" (the form --seeds takes)."""
    out, start, prev = [], None, None
    for v in values:
        if start is None:
            start = prev = v
        elif v == prev + 1:
            prev = v
        else:
            out.append(f"{start}-{prev}" if prev > start else str(start))
            start = prev = v
    if start is not None:
        out.append(f"{start}-{prev}" if prev > start else str(start))
    return ",".join(out)
