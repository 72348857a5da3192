"""PNG plots for the audit report.

Figures are made with matplotlib's object API on the Agg canvas (no pyplot, no display, no
global backend switch), so this works headless and from threads. Each writer saves through a
temporary file + `os.replace` and returns the path written.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import norm

from facebank.audit.calibration import Curve
from facebank._io.files import atomic_write_bytes
from facebank.errors import InputError

__all__ = ["plot_det", "plot_nn_histogram", "plot_pick_grid", "plot_score_histogram"]

_DPI = 100
_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink")


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    FigureCanvasAgg(fig)  # attaches itself to the figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return atomic_write_bytes(path, buf.getvalue())


def _mark_thresholds(ax: Any, thresholds: Mapping[str, float]) -> None:
    for k, (label, t) in enumerate(thresholds.items()):
        ax.axvline(t, color=_COLOURS[k % len(_COLOURS)], linestyle="--", linewidth=1.2, label=f"{label}: {t:.3f}")


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
    normal_axes: bool = False,
    title: str = "DET curve",
) -> Path:
    """DET curve: FAR against FRR, log-log (or probit axes, norm.ppf, with `normal_axes`).

    A rate of 0 has no place on either axis, so it is drawn at the axis floor, half of one pair
    (0.5 / n), which the axes start at; a rate of 1 on probit axes is drawn at 1 - that.
    Args:
        eer: (eer, threshold) from `calibration.eer`, marked as a point.
    """
    far_floor, frr_floor = 0.5 / curve.n_impostor, 0.5 / curve.n_genuine
    far = np.clip(np.asarray(curve.far, dtype=np.float64), far_floor, 1 - far_floor if normal_axes else 1)
    frr = np.clip(np.asarray(curve.frr, dtype=np.float64), frr_floor, 1 - frr_floor if normal_axes else 1)
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    tf = norm.ppf if normal_axes else (lambda v: v)
    ax.plot(tf(far), tf(frr), drawstyle="steps-post", color="tab:blue",
            label=f"{curve.n_genuine:,} genuine / {curve.n_impostor:,} impostor pairs")
    if eer is not None:
        e = float(np.clip(eer[0], max(far_floor, frr_floor), 0.5))
        ax.plot(tf(e), tf(e), "o", color="tab:red", label=f"EER {eer[0]:.3%} at {eer[1]:.3f}")
    lo_x, lo_y = tf(far_floor), tf(frr_floor)
    if normal_axes:
        ticks = np.array([1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.8, 0.95])
        for setter, label, lo in ((ax.set_xticks, ax.set_xticklabels, far_floor),
                                  (ax.set_yticks, ax.set_yticklabels, frr_floor)):
            keep = ticks[ticks >= lo]
            setter(norm.ppf(keep))
            label([f"{t:g}" for t in keep])
        # A margin below the floor keeps a line lying on it visible.
        ax.set_xlim(lo_x - 0.1, norm.ppf(1 - far_floor))
        ax.set_ylim(lo_y - 0.1, norm.ppf(1 - frr_floor))
    else:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo_x * 0.7, 1.0)  # margin: a line on the floor stays visible
        ax.set_ylim(lo_y * 0.7, 1.0)
    ax.set_xlabel("false accept rate (impostor > t)")
    ax.set_ylabel("false reject rate (genuine <= t)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
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
    fig = Figure(figsize=(2.2 * cols, 2.5 * rows + 0.4))
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
        if captions is not None:
            at.text(0.5, -0.06, captions[k], transform=at.transAxes, ha="center", va="top", fontsize=7)
    fig.suptitle(title + (f" (first {n} of {q.shape[0]})" if n < q.shape[0] else ""))
    # Leave the top band to the title: tight_layout alone lets it overlap the first row's labels.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return _save(fig, path)
