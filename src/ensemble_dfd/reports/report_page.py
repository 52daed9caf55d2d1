"""Writers of the report step: per-split CSV tables and figures, and the HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ensemble_dfd.analysis.report_analysis import SplitResult
from ensemble_dfd.data.images import read_rgb
from ensemble_dfd.logits import IMAGES_FILE
from ensemble_dfd.reports.figures import (
    degradation_figure,
    error_by_bin_figure,
    heatmaps_figure,
    save_figure,
    wrong_count_figure,
)
from ensemble_dfd.reports.html import HtmlReport, thumbnail_jpeg
from ensemble_dfd.reports.tables import write_csv


def write_split(folder: Path, r: SplitResult, best: str | None, primary: str | None
                ) -> dict[str, Path]:
    s = r.split
    write_csv(folder / f"per_image_{s}.csv", r.per_image)
    write_csv(folder / f"hard_{s}.csv", r.hard)
    write_csv(folder / f"diversity_{s}.csv", r.diversity.pairs)
    write_csv(folder / f"wrong_counts_{s}.csv", r.diversity.wrong_counts)
    write_csv(folder / f"attribution_{s}.csv", r.bins)
    write_csv(folder / f"attribution_rank_{s}.csv", r.ranks)
    write_csv(folder / f"attribution_logit_{s}.csv", r.logistic)
    figs = {
        "diversity": save_figure(heatmaps_figure(r.diversity.matrices,
                                                 f"{s}: pairwise diversity of the base models"),
                                 folder / f"diversity_{s}.png"),
        "wrong_counts": save_figure(wrong_count_figure(r.diversity.wrong_counts,
                                                       f"{s}: models wrong per image"),
                                    folder / f"wrong_counts_{s}.png"),
    }
    if len(r.bins):
        figs["error_by_bin"] = save_figure(
            error_by_bin_figure(r.bins, f"{s}: error rate by quantile bin (95% Wilson CI)",
                                best, primary), folder / f"error_by_bin_{s}.png")
    return figs


def build_html(run_dir: Path, folder: Path, results: list[SplitResult],
               figs: dict[str, dict[str, Path]], inter: pd.DataFrame | None,
               inter_fig: Path | None, meta: dict[str, Any],
               thumbs: dict[str, list[tuple[str, bytes]]] | None) -> Path:
    page = HtmlReport(f"Disagreement and blur/size attribution: {run_dir.name}")
    page.paragraph("Command: " + meta["command"])
    page.paragraph(f"Models: {', '.join(meta['models'])}. Meta-learners: "
                   f"{', '.join(meta['learners']) or 'none (no stack step)'}. Best single "
                   f"model (chosen on validation by the stack step): {meta['best'] or '—'}. "
                   f"Decision thresholds (logit scale) as chosen by the stack step; "
                   "positive class = Real. TP/FN are reals called real/fake, TN/FP fakes "
                   "called fake/real.")
    if thumbs:
        page.paragraph("This page embeds thumbnails of face images from research-only "
                       "datasets (--thumbnails). Do not commit this run folder or publish "
                       "this page: no face images may enter the repository.", "warn")
    else:
        page.paragraph("No face images are embedded (run with --thumbnails to see the hard "
                       "images; a report made that way must never be committed).", "note")
    page.heading("Findings")
    page.bullets(meta["findings"])
    for r in results:
        s = r.split
        page.heading(f"Split {s}", anchor=f"split-{s}")
        page.heading("Hard images", 3)
        page.paragraph(f"Reals misclassified by >= {100 * r.thresholds.real:.0f}% of the "
                       f"models and fakes by >= {100 * r.thresholds.fake:.0f}%. "
                       f"Blur = variance of the Laplacian (lower = blurrier).")
        page.table(r.hard)
        if thumbs and thumbs.get(s):
            page.thumbnails(thumbs[s])
        page.heading("Diversity", 3)
        page.figure(figs[s]["wrong_counts"], f"{s}: how many models get each image wrong")
        page.figure(figs[s]["diversity"], f"{s}: pairwise diversity")
        page.table(pd.DataFrame([r.diversity.summary]))
        page.table(r.diversity.pairs)
        page.heading("Blur/size attribution (observational)", 3)
        if r.has_props:
            page.figure(figs[s]["error_by_bin"], f"{s}: error rate by property bin")
            page.paragraph("Mann-Whitney U, misclassified vs correct; rank-biserial r > 0 "
                           "means misclassified images have larger values.")
            page.table(r.ranks)
            page.paragraph("Logistic regression of 'wrong' on standardised properties "
                           "(log area, log(1 + blur), JPEG quality, brightness, contrast; "
                           "controls: is_real and source). Coefficients are log-odds per "
                           "standard deviation with 95% Wald intervals. Observational: "
                           "source and content are confounded with size and blur.")
            page.table(r.logistic)
        else:
            page.paragraph(f"No image properties for {s} ({IMAGES_FILE} is absent or has "
                           "none); run collect to record them.", "note")
        page.heading("Per-image table", 3)
        page.table(r.per_image, max_rows=250)
    page.heading("Intervention: controlled degradation", anchor="intervention")
    if inter is None or inter.empty:
        page.paragraph("Not run (--no-intervention).", "note")
    else:
        page.paragraph("Each image is degraded at its native resolution, resized to each "
                       "model's input, rescored by every base model; meta-learners combine "
                       "the degraded logits. Level 0 is the original image. Accuracy at the "
                       "stack step's thresholds.")
        if inter_fig is not None:
            page.figure(inter_fig, "accuracy and AUC vs degradation level")
        for metric in ("acc", "auc"):
            piv = inter.pivot_table(index=["split", "degradation", "level", "value"],
                                    columns="predictor", values=metric, sort=False)
            piv = piv[[c for c in dict.fromkeys(inter["predictor"]) if c in piv.columns]]
            page.paragraph(f"{metric.upper()} per predictor:")
            page.table(piv.reset_index())
    return page.write(folder / "index.html")


def make_thumbnails(hard: pd.DataFrame, files: dict[str, str]) -> list[tuple[str, bytes]]:
    out = []
    for _, row in hard.iterrows():
        cap = f"{row['ref']} {row['pct_wrong']:.0f}% wrong {row['size']}"
        out.append((cap, thumbnail_jpeg(read_rgb(files[row['path']]))))
    return out


def write_intervention(folder: Path, inter: pd.DataFrame, n_splits: int, best: str | None
                       ) -> Path | None:
    """intervention.csv and one degradation figure per split (the last one's path)."""
    write_csv(folder / "intervention.csv", inter)
    fig = None
    for s, g in inter.groupby("split", sort=False):
        path = folder / ("intervention.png" if n_splits == 1 else f"intervention_{s}.png")
        fig = save_figure(degradation_figure(
            g, f"{s}: accuracy and AUC vs degradation (n={int(g['n'].iloc[0])})", best), path)
    return fig
