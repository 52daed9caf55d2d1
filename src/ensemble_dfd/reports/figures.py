"""Figure helpers: a headless matplotlib, atomic PNG saving, ROC and metric-with-CI charts.

matplotlib/seaborn are imported inside functions, so importing this module is cheap."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble_dfd.runio import atomic_write


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save `fig` as PNG atomically and close it."""
    plt = pyplot()
    try:
        return atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, format="png",
                                                        bbox_inches="tight"))
    finally:
        plt.close(fig)


def thin_curve(x: np.ndarray, y: np.ndarray, max_points: int = 400
               ) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points of a monotone curve, keeping its ends (plots stay small)."""
    if x.size <= max_points:
        return x, y
    idx = np.unique(np.r_[np.linspace(0, x.size - 1, max_points).astype(int), x.size - 1])
    return x[idx], y[idx]


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]],
               kinds: Mapping[str, str], title: str, best: str | None = None):
    """ROC curves: single models thin, ensembles thick, the best single model dashed."""
    plt = pyplot()
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.4, 6.0))
    ens = [n for n in curves if kinds.get(n) == "ensemble"]
    palette = dict(zip(ens, sns.color_palette("tab10", max(1, len(ens))), strict=False))
    for name, (fpr, tpr, auc) in curves.items():
        x, y = thin_curve(np.asarray(fpr), np.asarray(tpr))
        label = f"{name} (AUC {auc:.3f})" if np.isfinite(auc) else name
        if kinds.get(name) == "ensemble":
            ax.plot(x, y, lw=2.0, color=palette[name], label=label)
        elif name == best:
            ax.plot(x, y, lw=2.0, ls="--", color="black", label=f"{label}, best single")
        else:
            ax.plot(x, y, lw=0.8, color="0.6", alpha=0.8,
                    label=label if len(curves) <= 12 else None)
    ax.plot([0, 1], [0, 1], ls=":", color="0.4", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.005), xlabel="false-positive rate (fakes called real)",
           ylabel="true-positive rate (reals called real)", title=title)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def ci_figure(table: pd.DataFrame, metrics: tuple[str, ...], title: str,
              best: str | None = None):
    """One panel per metric: each predictor's point estimate with its CI as a bar.

    `table` has columns predictor, kind, and for each metric m: m, m_lo, m_hi."""
    plt = pyplot()
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    n = len(table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 0.35 * n + 1.6),
                             sharey=True, squeeze=False)
    y = np.arange(n)
    colors = np.where(table["kind"].to_numpy() == "ensemble", "tab:blue", "0.45")
    for ax, m in zip(axes[0], metrics, strict=True):
        v = table[m].to_numpy(float)
        lo = table[f"{m}_lo"].to_numpy(float)
        hi = table[f"{m}_hi"].to_numpy(float)
        err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
        err = np.where(np.isfinite(err), err, 0.0)
        for i in range(n):
            ax.errorbar(v[i], y[i], xerr=err[:, i:i + 1], fmt="o", color=colors[i],
                        capsize=3, ms=4)
        if best is not None and best in set(table["predictor"]):
            b = table.loc[table["predictor"] == best]
            ax.axvline(float(b[m].iloc[0]), ls="--", color="black", lw=0.8)
            ax.axvspan(float(b[f"{m}_lo"].iloc[0]), float(b[f"{m}_hi"].iloc[0]),
                       color="0.85", alpha=0.5, zorder=0)
        ax.set_title(m.upper())
    axes[0][0].set_yticks(y, table["predictor"].tolist())
    axes[0][0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    return fig
