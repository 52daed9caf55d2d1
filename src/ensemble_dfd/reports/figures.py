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
    palette = dict(zip(ens, sns.color_palette("husl", max(1, len(ens))), strict=False))
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


# ---------------------------------------------------------------------------------------
# report figures (analysis/): diversity heatmaps, error by bin, degradation curves

_DIVERSITY_TITLES = {"disagreement": "disagreement rate", "yule_q": "Yule's Q",
                     "double_fault": "double fault", "kappa": "Cohen's kappa",
                     "logit_corr": "logit correlation"}


def heatmaps_figure(matrices: Mapping[str, pd.DataFrame], title: str):
    """One seaborn heatmap per square (model x model) matrix, side by side."""
    plt = pyplot()
    import seaborn as sns

    sns.set_theme(style="white")
    k = len(matrices)
    m = max((len(v) for v in matrices.values()), default=1)
    side = max(3.2, 0.38 * m + 1.6)
    fig, axes = plt.subplots(1, k, figsize=(side * k, side), squeeze=False)
    for ax, (name, mat) in zip(axes[0], matrices.items(), strict=True):
        signed = name in ("yule_q", "kappa", "logit_corr")
        sns.heatmap(mat.astype(float), ax=ax, annot=m <= 12, fmt=".2f", square=True,
                    cmap="RdBu_r" if signed else "viridis", vmin=-1 if signed else 0,
                    vmax=1 if signed else None, cbar=False, annot_kws={"fontsize": 7})
        ax.set_title(_DIVERSITY_TITLES.get(name, name), fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def wrong_count_figure(counts: pd.DataFrame, title: str):
    """Stacked bars: how many reals and fakes k models get wrong, for each k."""
    plt = pyplot()
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(counts) + 2), 3.4))
    x = counts["n_wrong"].to_numpy()
    ax.bar(x, counts["real"], color="tab:green", label="real")
    ax.bar(x, counts["fake"], bottom=counts["real"], color="tab:red", label="fake")
    ax.set(xlabel="number of models wrong", ylabel="images", title=title, xticks=x)
    ax.legend(fontsize=8)
    return fig


def _style(kind: str, name: str, best: str | None, palette: Mapping[str, object]) -> dict:
    if kind == "ensemble":
        return {"color": palette[name], "lw": 2.0, "label": name}
    if name == best:
        return {"color": "black", "lw": 2.0, "ls": "--", "label": f"{name} (best single)"}
    return {"color": "0.6", "lw": 0.8, "alpha": 0.8, "label": name}


def error_by_bin_figure(bins: pd.DataFrame, title: str, best: str | None = None,
                        primary: str | None = None, ncols: int = 4):
    """One panel per property: error rate per quantile bin for every predictor (other
    models thin grey, ensembles coloured); the best single model and the `primary`
    ensemble carry their Wilson intervals (all of them would hide the lines)."""
    plt = pyplot()
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    props = list(dict.fromkeys(bins["property"]))
    ncols = max(1, min(ncols, len(props)))
    nrows = max(1, -(-len(props) // ncols))
    fig, grid = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.3 * nrows), squeeze=False,
                             sharey=True)
    axes = [grid.ravel()]
    for ax in grid.ravel()[len(props):]:
        ax.set_visible(False)
    ens = list(dict.fromkeys(bins.loc[bins["kind"] == "ensemble", "predictor"]))
    palette = dict(zip(ens, sns.color_palette("husl", max(1, len(ens))), strict=False))
    for ax, prop in zip(axes[0], props, strict=False):
        part = bins[bins["property"] == prop]
        for (name, kind), g in part.groupby(["predictor", "kind"], sort=False):
            st = _style(kind, name, best, palette)
            x = g["bin"].to_numpy()
            yv = g["error_rate"].to_numpy(float)
            if name in (best, primary):
                err = np.vstack([yv - g["ci_lo"].to_numpy(float), g["ci_hi"].to_numpy(float) - yv])
                ax.errorbar(x + (0.04 if kind == "ensemble" else 0), yv,
                            yerr=np.clip(np.nan_to_num(err), 0, None), capsize=2, marker="o",
                            ms=3, **st)
            else:
                ax.plot(x, yv, marker=".", **st)
        first = part.drop_duplicates("bin")
        ax.set_xticks(first["bin"], [f"{lo:.3g}–{hi:.3g}" for lo, hi in
                                     zip(first["lo"], first["hi"], strict=True)],
                      rotation=35, fontsize=7, ha="right")
        ax.set_title(prop, fontsize=10)
        ax.set_ylim(0, 1)
    for row in grid:
        row[0].set_ylabel("error rate")
    return _finish(fig, axes, ens, title, -0.08)


def _finish(fig, axes, ens: list[str], title: str, legend_y: float):
    """One legend below the grid for the ensembles and the best single model, the title,
    and a tight layout."""
    handles, labels = axes[0][0].get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels, strict=True)
            if lab in ens or lab.endswith("(best single)")]
    if keep:
        fig.legend(*zip(*keep, strict=True), loc="lower center", ncol=min(6, len(keep)),
                   fontsize=7, bbox_to_anchor=(0.5, legend_y))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def degradation_figure(results: pd.DataFrame, title: str, best: str | None = None,
                       metrics: tuple[str, ...] = ("acc", "auc")):
    """Rows: metrics; columns: degradations; x: level (0 = original) labelled by value."""
    plt = pyplot()
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    degs = list(dict.fromkeys(results["degradation"]))
    fig, axes = plt.subplots(len(metrics), max(1, len(degs)),
                             figsize=(3.6 * max(1, len(degs)), 2.9 * len(metrics)),
                             squeeze=False, sharey="row")
    ens = list(dict.fromkeys(results.loc[results["kind"] == "ensemble", "predictor"]))
    palette = dict(zip(ens, sns.color_palette("husl", max(1, len(ens))), strict=False))
    for r, metric in enumerate(metrics):
        for c, deg in enumerate(degs):
            ax = axes[r][c]
            part = results[results["degradation"] == deg]
            for (name, kind), g in part.groupby(["predictor", "kind"], sort=False):
                ax.plot(g["level"], g[metric].astype(float), marker="o", ms=3,
                        **_style(kind, name, best, palette))
            lv = part.drop_duplicates("level")
            ax.set_xticks(lv["level"], ["orig" if lvl == 0 else f"{v:g}" for lvl, v in
                                        zip(lv["level"], lv["value"], strict=True)])
            ax.set_ylim(0, 1.02)
            if r == 0:
                ax.set_title(f"{deg}: {part['unit'].iloc[0]}", fontsize=9)
            if c == 0:
                ax.set_ylabel(metric.upper())
    return _finish(fig, axes, ens, title, -0.05)


# ---------------------------------------------------------------------------------------
# the report's answers: forest plot of every predictor's difference to the best single model

_FOREST_COLORS = {"above": "tab:green", "below": "tab:red", "ensemble": "tab:blue",
                  "single": "0.55", "best": "black"}


def _forest_color(kind: str, name: str, best: str | None, lo: float, hi: float) -> str:
    if name == best:
        return _FOREST_COLORS["best"]
    if lo > 0:
        return _FOREST_COLORS["above"]
    if hi < 0:
        return _FOREST_COLORS["below"]
    return _FOREST_COLORS["ensemble" if kind == "ensemble" else "single"]


def _forest_panel(ax, part: pd.DataFrame, video: pd.DataFrame | None, preds: list[str],
                  metric: str, best: str | None) -> None:
    """Differences `d_<metric>` with CIs, one row per predictor (video level hollow,
    slightly below its frame-level point)."""
    scale = 100.0 if metric == "acc" else 1.0
    for off, tab, hollow in ((0.0, part, False), (0.3, video, True)):
        if tab is None or tab.empty:
            continue
        t = tab.drop_duplicates("predictor").set_index("predictor")
        for i, name in enumerate(preds):
            if name not in t.index:
                continue
            r = t.loc[name]
            v, lo, hi = (float(r.get(f"d_{metric}{s}", np.nan)) for s in ("", "_lo", "_hi"))
            if not np.isfinite(v):
                continue
            c = _forest_color(str(r["kind"]), name, best, lo, hi)
            err = np.array([[max(v - lo, 0.0)], [max(hi - v, 0.0)]]) * scale
            ax.errorbar(v * scale, i + off, xerr=np.nan_to_num(err), fmt="s" if hollow else "o",
                        ms=4.5, color=c, mfc="white" if hollow else c, capsize=2.5,
                        lw=1.0 if hollow else 1.6)
    ax.axvline(0.0, color="black", lw=0.9)
    ax.set_xlabel("ΔACC (points)" if metric == "acc" else "ΔAUC", fontsize=9)
    ax.tick_params(labelsize=8)


def forest_figure(frame: pd.DataFrame, video: pd.DataFrame | None = None,
                  best: str | None = None, notes: Mapping[str, str] | None = None,
                  title: str = "", mdd: Mapping[str, float] | None = None, ncols: int = 3):
    """Forest plot: every predictor's ΔACC and ΔAUC vs the best single model with 95% CIs,
    one panel (a ΔACC and a ΔAUC axis) per evaluation split. Green: CI above 0, red: below,
    blue: an ensemble whose CI holds 0, grey: a single model; hollow squares: video level.

    `frame` (and `video`) hold comparison.csv rows: split, predictor, kind, d_acc[_lo/_hi],
    d_auc[_lo/_hi]. `notes` adds a word to a split's title (e.g. 'too small'); `mdd`
    shades ± the split's detectable ΔACC (differences inside it go unseen at its size)."""
    plt = pyplot()
    import seaborn as sns
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    sns.set_theme(style="whitegrid")
    splits = list(dict.fromkeys(frame["split"]))
    preds = list(dict.fromkeys(frame["predictor"].astype(str)))
    ncols = max(1, min(ncols, len(splits)))
    nrows = max(1, -(-len(splits) // ncols))
    fig = plt.figure(figsize=(4.2 * ncols, (0.25 * len(preds) + 1.5) * nrows + 0.6),
                     layout="constrained")
    subs = fig.subfigures(nrows, ncols, squeeze=False).ravel()
    for k, sf in enumerate(subs):
        if k >= len(splits):
            sf.set_visible(False)
            continue
        split = splits[k]
        axes = sf.subplots(1, 2, sharey=True)
        vpart = video[video["split"] == split] if video is not None else None
        for ax, metric in zip(axes, ("acc", "auc"), strict=True):
            _forest_panel(ax, frame[frame["split"] == split], vpart, preds, metric, best)
        band = float((mdd or {}).get(split, np.nan))
        if np.isfinite(band):
            axes[0].axvspan(-100 * band, 100 * band, color="0.88", zorder=0)
        kinds = frame[frame["split"] == split].drop_duplicates("predictor")
        n_single = int((kinds["kind"] != "ensemble").sum())
        if 0 < n_single < len(preds):
            for ax in axes:
                ax.axhline(n_single - 0.5 + 0.15, color="0.5", lw=0.6, ls=":")
        axes[0].set_yticks(range(len(preds)), preds, fontsize=8)
        axes[0].set_ylim(len(preds) - 0.4, -0.6)
        note = (notes or {}).get(split)
        sf.suptitle(split + (f" ({note})" if note else ""), fontsize=10)
    handles = [Line2D([], [], marker="o", ls="", color=_FOREST_COLORS["above"],
                      label="CI above 0"),
               Line2D([], [], marker="o", ls="", color=_FOREST_COLORS["below"],
                      label="CI below 0"),
               Line2D([], [], marker="o", ls="", color=_FOREST_COLORS["ensemble"],
                      label="ensemble, CI holds 0"),
               Line2D([], [], marker="o", ls="", color=_FOREST_COLORS["single"],
                      label="single model"),
               ]
    if mdd:
        handles.append(Patch(color="0.88", label="± detectable ΔACC"))
    if video is not None and len(video):
        handles += [Line2D([], [], marker="o", ls="", color="0.3", label="frame level"),
                    Line2D([], [], marker="s", ls="", color="0.3", mfc="white",
                           label="video level")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
