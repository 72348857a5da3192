"""`facebank audit --transfer`: what each privacy margin buys against a recogniser the build does not use.

Leave one out: each build space in turn is held out, picks are made in the other build spaces
(and every `--heldout SPACE=MODEL` recogniser scores picks made in all build spaces), with each
margin. The held-out recogniser's own thresholds come from the labelled impostor pairs (FAR 1e-2,
1e-3, 1e-4). Per margin: the held-out match rate as the exact expectation over each query's
eligible set (every face the pick could return, equally likely), the rate over actual picks with
a Clopper-Pearson interval, the eligible share of the bank and of each age/gender group, distinct
targets and the repeat rate. `choose_margin` applies the rule that set the shipped default.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from facebank.audit.calibration import calibrate
from facebank.audit.labelled import embed_crop
from facebank.audit.stats import clopper_pearson
from facebank.index import groups as G
from facebank.progress import Progress, ProgressEvent

__all__ = ["MARGINS", "TransferConfig", "TransferResult", "choose_margin", "margin_transfer", "plot_transfer"]

MARGINS = (1.0, 0.75, 0.5, 0.25, 0.1)
FARS = (1e-2, 1e-3, 1e-4)


@dataclass(frozen=True)
class TransferConfig:
    """margins to measure; picks per query; the default rule: held-out match at FAR `rule_far` at
    most `max_match` in every direction, and at least `min_share` of every group of `min_group`+
    faces still eligible (mean over queries)."""

    margins: tuple[float, ...] = MARGINS
    picks_per_query: int = 5
    max_queries: int = 1000
    group_queries: int = 200  # queries the per-group shares are averaged over
    rule_far: float = 1e-2
    max_match: float = 1e-3
    min_share: float = 0.25
    min_group: int = 20
    seed: int = 0


@dataclass(frozen=True)
class Direction:
    """One held-out recogniser: picks made in `pick_spaces`, scored by `heldout`."""

    heldout: str
    pick_spaces: tuple[str, ...]
    queries: Mapping[str, np.ndarray]  # pick space -> (q, d) unit query rows
    bank_h: np.ndarray  # (n, dh) unit rows of the build's faces in the held-out space
    query_h: np.ndarray  # (q, dh) unit rows of the queries in the held-out space
    thresholds: Mapping[float, float]  # FAR -> held-out threshold


@dataclass(frozen=True)
class TransferResult:
    rows: list[dict]  # per direction and margin
    groups: list[dict]  # per direction, margin and age/gender group
    thresholds: list[dict]  # held-out thresholds per FAR
    default: float | None  # the margin the rule picks, None when no margin meets it
    rule: str
    config: TransferConfig = field(repr=False, default=TransferConfig())


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _heldout_thresholds(emb: np.ndarray, labels: Sequence[str]) -> dict[float, float]:
    cal = calibrate({"h": emb}, np.asarray(labels), fars=FARS).spaces["h"]
    return {t.far: t.threshold for t in cal.thresholds}


def directions(session: Any, bank: Any, *, labels: Sequence[str], embeddings: Mapping[str, np.ndarray],
               crops: Sequence[np.ndarray], heldout: Mapping[str, Any], query_idx: np.ndarray,
               progress: Progress | None = None) -> list[Direction]:
    """Every leave-one-out direction of the build's spaces, and each `heldout` recogniser."""
    rows = np.asarray(session.rows)
    spaces = list(session.spaces)
    out = []
    if len(spaces) > 1:
        for h in spaces:
            others = tuple(s for s in spaces if s != h)
            out.append(Direction(h, others, {s: _unit(embeddings[s][query_idx]) for s in others},
                                 _unit(bank.vectors(h)[rows]), _unit(embeddings[h][query_idx]),
                                 _heldout_thresholds(_unit(embeddings[h]), labels)))
    for h, embedder in heldout.items():
        emb_l = np.stack([embed_crop(c, h, embedder) for c in crops])
        bank_h = np.empty((rows.size, emb_l.shape[1]))
        for k, r in enumerate(rows):
            if progress is not None and k % 50 == 0:
                progress(ProgressEvent(f"held-out {h}: bank", k, rows.size))
            bank_h[k] = embed_crop(bank.crop(int(r)), h, embedder)
        out.append(Direction(h, tuple(spaces), {s: _unit(embeddings[s][query_idx]) for s in spaces}, _unit(bank_h),
                             _unit(emb_l)[query_idx], _heldout_thresholds(_unit(emb_l), labels)))
    return out


def margin_transfer(session: Any, bank: Any, *, labels: Sequence[str], embeddings: Mapping[str, np.ndarray],
                    crops: Sequence[np.ndarray], heldout: Mapping[str, Any] | None = None,
                    config: TransferConfig = TransferConfig(), progress: Progress | None = None) -> TransferResult:
    """Measure every margin in every direction (module docstring); embeddings: build space -> the
    labelled faces' embeddings, in the order of `labels` and `crops`."""
    rng = np.random.default_rng(config.seed)
    n_lab = len(labels)
    q_idx = np.arange(n_lab) if n_lab <= config.max_queries else \
        np.sort(rng.choice(n_lab, config.max_queries, replace=False))
    dirs = directions(session, bank, labels=labels, embeddings=embeddings, crops=crops, heldout=heldout or {},
                      query_idx=q_idx, progress=progress)
    picker = session.picker
    codes = np.asarray(session.codes)
    group_codes = [int(c) for c in np.unique(codes)]
    pos = {int(r): k for k, r in enumerate(np.asarray(session.rows))}
    rows, group_rows, thr_rows = [], [], []
    for d in dirs:
        thr_rows += [{"heldout": d.heldout, "far": f, "threshold": t} for f, t in d.thresholds.items()]
        x = {s: _unit(bank.vectors(s)[np.asarray(session.rows)]) for s in d.pick_spaces}
        sims = {s: d.queries[s] @ x[s].T for s in d.pick_spaces}  # (q, n)
        sims_h = d.query_h @ d.bank_h.T
        build_thr = {s: session.thresholds[s] for s in d.pick_spaces}
        for m in config.margins:
            if progress is not None:
                progress(ProgressEvent(f"transfer {d.heldout} margin {m}", 0, 1))
            rows.append(_measure(session, picker, d, m, sims, sims_h, build_thr, pos, config, rng))
            group_rows += _group_shares(picker, d, m, sims, build_thr, codes, group_codes, config)
            small = [g for g in group_rows if g["heldout"] == d.heldout and g["margin"] == m
                     and g["faces"] >= config.min_group]
            rows[-1]["min_group_share"] = min((g["share_mean"] for g in small), default=float("nan"))
    default, rule = choose_margin(rows, config)
    return TransferResult(rows, group_rows, thr_rows, default, rule, config)


def _cut_thresholds(picker, qry_faces: dict, build_thr: dict, margin: float, groups) -> dict[str, float]:
    if margin == 1.0:
        return dict(build_thr)
    qry = picker.prepare([qry_faces], build_thr)
    return picker.margin_cut(qry, groups, margin).thresholds


def _measure(session, picker, d: Direction, m: float, sims, sims_h, build_thr, pos, config: TransferConfig, rng) -> dict:
    nq = sims_h.shape[0]
    expected = {f: [] for f in FARS}
    shares = []
    picked: list[int] = []
    pick_match = {f: 0 for f in FARS}
    for i in range(nq):
        faces = {s: d.queries[s][i].astype(np.float32) for s in d.pick_spaces}
        thr = _cut_thresholds(picker, faces, build_thr, m, None)
        elig = np.ones(sims_h.shape[1], bool)
        for s in d.pick_spaces:
            elig &= sims[s][i] <= thr[s]
        shares.append(elig.mean())
        for f, t in d.thresholds.items():
            expected[f].append(float(np.mean(sims_h[i, elig] > t)) if elig.any() else np.nan)
        for _ in range(config.picks_per_query):
            try:
                t = session.pick_target(faces, margin=m, rng=rng)
            except Exception as exc:  # noqa: BLE001 - counted, not fatal: NoEligibleTarget for this query
                if type(exc).__name__ != "NoEligibleTarget":
                    raise
                continue
            k = pos[t.row]
            picked.append(k)
            for f, th in d.thresholds.items():
                pick_match[f] += int(sims_h[i, k] > th)
    out = {"heldout": d.heldout, "picked_with": "+".join(d.pick_spaces), "margin": m, "queries": nq,
           "eligible_share_mean": float(np.mean(shares)), "eligible_share_p10": float(np.percentile(shares, 10))}
    for f in FARS:
        out[f"expected_match@{f:g}"] = float(np.nanmean(expected[f]))
    n = len(picked)
    for f in FARS:
        lo, hi = clopper_pearson(pick_match[f], n) if n else (float("nan"), float("nan"))
        out[f"picks_match@{f:g}"] = pick_match[f] / n if n else float("nan")
        out[f"picks_match@{f:g}_ci95"] = f"[{lo:.2e}, {hi:.2e}]"
    counts = Counter(picked)
    out["picks"] = n
    out["distinct_targets"] = len(counts)
    out["repeat_rate"] = float(sum(c for c in counts.values() if c > 1) / n) if n else float("nan")
    return out


def _group_shares(picker, d: Direction, m: float, sims, build_thr, codes, group_codes, config) -> list[dict]:
    nq = min(config.group_queries, next(iter(sims.values())).shape[0])
    out = []
    for c in group_codes:
        members = np.flatnonzero(codes == c)
        shares = []
        for i in range(nq):
            faces = {s: d.queries[s][i].astype(np.float32) for s in d.pick_spaces}
            thr = _cut_thresholds(picker, faces, build_thr, m, [c])
            ok = np.ones(members.size, bool)
            for s in d.pick_spaces:
                ok &= sims[s][i, members] <= thr[s]
            shares.append(ok.mean())
        out.append({"heldout": d.heldout, "margin": m, "group": G.group_label(c), "faces": int(members.size),
                    "share_mean": float(np.mean(shares)), "share_p10": float(np.percentile(shares, 10))})
    return out


def choose_margin(rows: Sequence[Mapping], config: TransferConfig = TransferConfig()) -> tuple[float | None, str]:
    """The largest margin whose expected held-out match at `rule_far` is at most `max_match` in every
    direction, with every group of `min_group`+ faces at least `min_share` eligible."""
    key = f"expected_match@{config.rule_far:g}"
    rule = (f"largest margin with held-out {key} <= {config.max_match:g} in every direction and >= "
            f"{config.min_share:.0%} of every group of {config.min_group}+ faces eligible")
    ok = []
    for m in sorted({r["margin"] for r in rows}, reverse=True):
        mine = [r for r in rows if r["margin"] == m]
        if all(r[key] <= config.max_match and not (r["min_group_share"] < config.min_share) for r in mine):
            ok.append(m)
    return (ok[0] if ok else None), rule


def plot_transfer(path: Path, result: TransferResult, *, current: float = 1.0, chosen: float | None = None) -> Path:
    """Held-out match (expected, FAR `rule_far`) against the eligible share, a curve per direction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"expected_match@{result.config.rule_far:g}"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for h in dict.fromkeys(r["heldout"] for r in result.rows):
        mine = sorted((r for r in result.rows if r["heldout"] == h), key=lambda r: r["eligible_share_mean"])
        x = [r["eligible_share_mean"] for r in mine]
        y = [100 * r[key] for r in mine]
        line, = ax.plot(x, y, marker="o", label=f"held out: {h} (picked with {mine[0]['picked_with']})")
        for r in mine:
            ax.annotate(f"{r['margin']:g}", (r["eligible_share_mean"], 100 * r[key]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=line.get_color())
            if r["margin"] == current:
                ax.scatter([r["eligible_share_mean"]], [100 * r[key]], s=120, facecolors="none", edgecolors="grey")
            if chosen is not None and r["margin"] == chosen:
                ax.scatter([r["eligible_share_mean"]], [100 * r[key]], s=160, marker="*", color=line.get_color())
    ax.axhline(100 * result.config.max_match, color="red", lw=0.8, ls="--", label=f"rule: {result.config.max_match:.1%}")
    ax.set_xlabel("eligible share of the bank (mean over queries)")
    ax.set_ylabel(f"held-out match at FAR {result.config.rule_far:g} (%)")
    ax.set_title("Privacy margin: transfer to a recogniser the build does not use\n"
                 "(circle: margin 1, no margin; star: the chosen default)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def transfer_section(session: Any, bank: Any, *, labels: Sequence[str], embeddings: Mapping[str, np.ndarray],
                     crops: Sequence[np.ndarray], heldout: Mapping[str, Any], out: Path,
                     config: TransferConfig = TransferConfig(), progress: Progress | None = None):
    """The report section of `--transfer`: the tables (also CSV) and the plot."""
    from facebank.audit.report import Section

    res = margin_transfer(session, bank, labels=labels, embeddings=embeddings, crops=crops, heldout=heldout,
                          config=config, progress=progress)
    image = plot_transfer(out / "images" / "margin_transfer.png", res, current=1.0,
                          chosen=res.default)
    build_margin = session.default_margin
    text = (f"{res.rows[0]['queries'] if res.rows else 0} labelled real faces as queries. Each row holds one "
            "recogniser out: picks are made in the other spaces (`picked_with`) with each margin, and the "
            "held-out recogniser, at its own thresholds from the labelled impostor pairs, says how often it "
            "would match the target to the real face. `expected_match@FAR`: the exact expectation over each "
            "query's eligible set (every face the pick could return); `picks_match@FAR`: over the actual picks, "
            "with its 95% Clopper-Pearson interval. `min_group_share`: the smallest mean eligible share of a "
            f"group of {config.min_group}+ faces. Rule for the default: {res.rule}. "
            f"It picks **{res.default if res.default is not None else 'no margin'}** on this build and data; "
            f"this build's default margin is {build_margin:g}.")
    return Section("Privacy margin: transfer to recognisers the build does not use", text,
                   {"margin transfer": res.rows, "margin transfer by group": res.groups,
                    "held-out thresholds (transfer)": res.thresholds}, [image])
