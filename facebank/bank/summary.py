"""What `facebank info` reports: counts per source, per age x gender group, per space, rejections."""

from __future__ import annotations

from collections import Counter

import numpy as np

from facebank.bank.store import Bank
from facebank.index.groups import AGE_GROUPS, age_group


def bank_summary(bank: Bank) -> dict:
    ages, genders = bank.column("age"), bank.column("gender")
    groups: Counter = Counter()
    for age, gender in zip(ages, genders):
        a = age_group(float(age)) if np.isfinite(age) else "unknown"
        g = {0: "female", 1: "male"}.get(int(gender), "unknown")
        groups[f"{a}/{g}"] += 1
    order = {label: i for i, label in enumerate(AGE_GROUPS)}
    rejections = bank.rejections()
    duplicates = []
    for event in bank.log():
        duplicates.extend(event.get("duplicates", []))
    sources = bank.column("source")
    seeds = [s for s, src in zip(bank.column("source_id"), sources) if src == "stylegan"]
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
        "stylegan_seeds": len(seeds),
    }
