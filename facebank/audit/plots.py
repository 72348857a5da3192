"""PNG plots for the audit report.

Figures are made with matplotlib's object API on the Agg canvas (no pyplot, no display, no
global backend switch), so this works headless and from threads. Each writer saves through a
temporary file + `os.replace` and returns the path written.
"""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from facebank._io.deps import require

require("matplotlib")  # the `audit` extra: without it, one MissingDependency line naming it

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import norm

from facebank.audit.calibration import Curve
from facebank._io.files import atomic_write_bytes
from facebank.errors import InputError

__all__ = ["merge_close", "plot_det", "plot_eligible_shares", "plot_nn_histogram", "plot_pick_grid", "plot_score_histogram"]

_DPI = 100
_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink")


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    FigureCanvasAgg(fig)  # attaches itself to the figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return atomic_write_bytes(path, buf.getvalue())


def merge_close(thresholds: Mapping[str, float], span: float, *, within: float = 0.01) -> list[tuple[str, float]]:
    """(label, value) lines to draw: thresholds closer than `within` x `span` share one line and one
    label ("build 0.9239 = FAR 0.001 0.9245"), so lines a pixel apart do not hide each other."""
    items = sorted(((float(t), str(label)) for label, t in thresholds.items()), key=lambda x: x[0])
    groups: list[list[tuple[float, str]]] = []
    for t, label in items:
        if groups and t - groups[-1][-1][0] < within * span:
            groups[-1].append((t, label))
        else:
            groups.append([(t, label)])
    if all(len(g) == 1 for g in groups):
        return [(f"{label}: {t:.3f}", t) for g in groups for t, label in g]
    return [(" = ".join(f"{label} {t:.4f}" for t, label in g) if len(g) > 1 else f"{g[0][1]}: {g[0][0]:.3f}",
             float(np.mean([t for t, _ in g]))) for g in groups]


def _mark_thresholds(ax: Any, thresholds: Mapping[str, float]) -> None:
    lo, hi = ax.get_xlim()
    for k, (label, t) in enumerate(merge_close(thresholds, hi - lo)):
        ax.axvline(t, color=_COLOURS[k % len(_COLOURS)], linestyle=("--", ":", "-.")[k % 3], linewidth=1.4,
                   label=label)


def plot_score_histogram(
    path: str | os.PathLike,
    *,
    genuine: Any = None,
    impostor: Any = None,
    bank: Any = None,
    thresholds: Mapping[str, float] | None = None,
    title: str = "Similarity distributions",
    bins: int = 60,
) -> Path:
    """Density histograms of genuine, impostor and bank-pairwise similarities (any subset).

    Args:
        genuine, impostor, bank: 1-d float similarities, each optional (at least one).
        thresholds: label -> value, drawn as labelled vertical dashed lines (e.g. "FAR 1e-3").
    """
    series = [(name, np.asarray(v, dtype=np.float64).ravel(), colour)
              for name, v, colour in (("genuine", genuine, "tab:green"), ("impostor", impostor, "tab:blue"),
                                      ("bank pairs", bank, "tab:gray"))
              if v is not None]
    series = [(n, v[np.isfinite(v)], c) for n, v, c in series]
    if not any(v.size for _, v, _ in series):
        raise InputError("plot_score_histogram needs at least one non-empty series")
    lo = min(v.min() for _, v, _ in series if v.size)
    hi = max(v.max() for _, v, _ in series if v.size)
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)  # shared bins: comparable bars
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for name, v, colour in series:
        if v.size:
            ax.hist(v, bins=edges, density=True, alpha=0.45, color=colour, label=f"{name} (n={v.size:,})")
    _mark_thresholds(ax, thresholds or {})
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_det(
    path: str | os.PathLike,
    curve: Curve,
    *,
    eer: tuple[float, float] | None = None,
    normal_axes: bool = True,
    operating_points: Mapping[str, float] | None = None,
    title: str = "DET curve",
) -> Path:
    """DET curve: FAR against FRR on probit axes (norm.ppf, as bob.measure and pyeer draw them),
    or log-log with `normal_axes=False`.

    Points are drawn where they are. A rate of 0 has no place on either axis: such points are
    drawn on a hatched band below the axis floor (half of one pair, 0.5 / n) and labelled
    "0", so a zero is never mistaken for a small rate.
    Args:
        eer: (eer, threshold) from `calibration.eer`; the marker sits at the curve's own
            (FAR, FRR) at that threshold, labelled with the EER.
        operating_points: label -> threshold (e.g. the build threshold, each FAR's), each
            marked at its (FAR, FRR) on the curve.
    """
    far_floor, frr_floor = 0.5 / curve.n_impostor, 0.5 / curve.n_genuine
    tf = norm.ppf if normal_axes else np.log10
    zero_x, zero_y = tf(far_floor), tf(frr_floor)

    def xy(far: Any, frr: Any) -> tuple[np.ndarray, np.ndarray]:
        far, frr = np.atleast_1d(np.asarray(far, np.float64)), np.atleast_1d(np.asarray(frr, np.float64))
        x = np.where(far > 0, tf(np.clip(far, far_floor, 1 - far_floor)), zero_x)
        y = np.where(frr > 0, tf(np.clip(frr, frr_floor, 1 - frr_floor)), zero_y)
        return x, y

    def at(t: float) -> tuple[float, float]:
        k = int(np.clip(np.searchsorted(curve.thresholds, t, side="right") - 1, 0, len(curve.thresholds) - 1))
        return float(curve.far[k]), float(curve.frr[k])

    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot()
    x, y = xy(curve.far, curve.frr)
    ax.plot(x, y, drawstyle="steps-post", color="tab:blue",
            label=f"{curve.n_genuine:,} genuine / {curve.n_impostor:,} impostor pairs")
    for k, (label, t) in enumerate((operating_points or {}).items()):
        f, r = at(t)
        px, py = xy(f, r)
        ax.plot(px, py, "s", color=_COLOURS[k % len(_COLOURS)], markersize=6,
                label=f"{label}: t={t:.3f}, FAR {f:.2g}, FRR {r:.2g}")
    if eer is not None:
        f, r = at(eer[1])
        px, py = xy(f, r)
        ax.plot(px, py, "o", color="black", markersize=7, fillstyle="none",
                label=f"EER {eer[0]:.3%} at t={eer[1]:.3f} (FAR {f:.2g}, FRR {r:.2g})")
    ticks = np.array([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.8, 0.95])
    for setter, labeller, lo, z in ((ax.set_xticks, ax.set_xticklabels, far_floor, zero_x),
                                    (ax.set_yticks, ax.set_yticklabels, frr_floor, zero_y)):
        keep = ticks[(ticks > 2 * lo) & (ticks <= 0.6)]
        setter(np.r_[z, tf(keep)])
        labeller(["0"] + [f"{t:g}" for t in keep])
    top_x = top_y = tf(0.6) if normal_axes else 0.0  # DET plots stop past the middle: errors above 60% say little
    m = 0.15 if normal_axes else 0.1
    ax.set_xlim(zero_x - m, top_x)
    ax.set_ylim(zero_y - m, top_y)
    # The zero band: between the axis edge and the first real tick, rates there are exactly 0.
    ax.axvspan(zero_x - m, zero_x + m / 2, color="0.9", hatch="//", zorder=0)
    ax.axhspan(zero_y - m, zero_y + m / 2, color="0.9", hatch="//", zorder=0)
    scale = "probit (normal deviate)" if normal_axes else "log10"
    ax.set_xlabel(f"false accept rate (impostor > t), {scale} axis")
    ax.set_ylabel(f"false reject rate (genuine <= t), {scale} axis")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save(fig, path)


def plot_eligible_shares(
    path: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    *,
    build_threshold: float | None = None,
    title: str = "Eligible bank faces per group",
) -> Path:
    """Mean eligible share per age/gender group (lines) against the threshold's FAR (log x axis).

    Args:
        rows: from `capacity.eligible_share_rows` (group, far, threshold, mean_eligible_share).
    """
    if not rows:
        raise InputError("plot_eligible_shares needs rows")
    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    groups = sorted({r["group"] for r in rows})
    ages = sorted({g.split("/")[0] for g in groups})
    for g in groups:  # one colour per age group, solid for female, dashed for male
        colour = f"C{ages.index(g.split('/')[0]) % 10}"
        mine = sorted((r for r in rows if r["group"] == g), key=lambda r: r["far"])
        style = "-" if "female" in g else "--"
        ax.plot([r["far"] for r in mine], [r["mean_eligible_share"] for r in mine], style, marker="o", markersize=3,
                color=colour, label=f"{g} ({mine[0]['faces']})")
    fars = sorted({r["far"] for r in rows})
    unsup = [f for f in fars if not next(r for r in rows if r["far"] == f)["supported"]]
    if unsup:
        ax.axvspan(min(unsup) / 1.5, max(unsup) * 1.5, color="0.92", zorder=0, label="threshold not supported")
    if build_threshold is not None:
        thr = {r["far"]: r["threshold"] for r in rows}
        ax.set_title(f"{title}\n(build threshold {build_threshold:.3f}; FAR thresholds "
                     + ", ".join(f"{f:g}: {thr[f]:.3f}" for f in fars[::2]) + ")", fontsize=9)
    else:
        ax.set_title(title, fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("FAR of the threshold (stricter recogniser, higher cosine <- -> looser recogniser, lower cosine)")
    ax.set_ylabel("share of the group's faces eligible (mean over queries)")
    low = min(r["mean_eligible_share"] for r in rows)
    ax.set_ylim(max(0.0, low - 0.1 * (1.0 - low) - 0.01), 1.0 + 0.05 * (1.0 - low) + 0.002)  # zoom on the spread
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_nn_histogram(
    path: str | os.PathLike,
    nn_sim: Any,
    *,
    near_duplicate_above: float | None = None,
    title: str = "Nearest-neighbour similarity in the bank",
    bins: int = 60,
) -> Path:
    """Histogram of each face's nearest-neighbour similarity, with the near-duplicate cut."""
    v = np.asarray(nn_sim, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise InputError("nn_sim is empty")
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    ax.hist(v, bins=bins, color="tab:gray", alpha=0.7, label=f"faces (n={v.size:,})")
    if near_duplicate_above is not None:
        n_dup = int((v > near_duplicate_above).sum())
        _mark_thresholds(ax, {f"near-duplicate cut ({n_dup:,} faces above)": near_duplicate_above})
    ax.set_xlabel("cosine similarity to nearest other face")
    ax.set_ylabel("faces")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_pick_grid(
    path: str | os.PathLike,
    query_crops: Any,
    target_crops: Any,
    *,
    captions: Sequence[str] | None = None,
    title: str = "Queries and their picked targets",
    max_rows: int = 16,
) -> Path:
    """A grid of query crops (left) beside their picked target crops (right).

    Args:
        query_crops, target_crops: (n, H, W, 3) uint8, paired by row; n > max_rows is cut.
        captions: (n,) one caption per pair, e.g. "arcface 0.08 / dlib 0.41".
    """
    q, t = np.asarray(query_crops), np.asarray(target_crops)
    if q.ndim != 4 or q.shape[-1] != 3 or q.shape != t.shape or q.shape[0] == 0:
        raise InputError(f"query_crops and target_crops must be equal (n>0, H, W, 3), got {q.shape} and {t.shape}")
    if captions is not None and len(captions) != q.shape[0]:
        raise InputError(f"captions has {len(captions)} entries, expected {q.shape[0]}")
    n = min(q.shape[0], max_rows)
    cols = 2 if n <= 4 else 4  # two pairs per row when there are many
    pairs_per_row = cols // 2
    rows = -(-n // pairs_per_row)
    # Captions wrap to the pair's width and each row gets room for its longest caption.
    wrapped = [textwrap.fill(c, 34) for c in (captions or [])[:n]]
    lines = max((w.count("\n") + 1 for w in wrapped), default=0)
    fig = Figure(figsize=(2.2 * cols, (2.3 + 0.16 * lines) * rows + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k in range(n):
        r, c = divmod(k, pairs_per_row)
        aq, at = axes[r, 2 * c], axes[r, 2 * c + 1]
        aq.imshow(q[k])
        at.imshow(t[k])
        aq.set_title(f"query {k}", fontsize=8)
        at.set_title("target", fontsize=8)
        if captions is not None:  # centred under the pair, not under the target alone
            at.text(-0.05, -0.04, wrapped[k], transform=at.transAxes, ha="center", va="top", fontsize=7)
    fig.suptitle(title + (f" (first {n} of {q.shape[0]})" if n < q.shape[0] else ""))
    # Leave the top band to the title: tight_layout alone lets it overlap the first row's labels.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return _save(fig, path)
