"""Writers of the report step: per-split CSV tables and figures, and the HTML page."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ensemble_dfd.analysis import answers as AN
from ensemble_dfd.analysis.answers import Answer
from ensemble_dfd.analysis.report_analysis import SplitResult
from ensemble_dfd.data.images import read_rgb
from ensemble_dfd.reports import comparison_tables as CT
from ensemble_dfd.reports.figures import (
    degradation_figure,
    error_by_bin_figure,
    forest_figure,
    heatmaps_figure,
    save_figure,
    wrong_count_figure,
)
from ensemble_dfd.reports.html import HtmlReport, thumbnail_jpeg
from ensemble_dfd.reports.tables import write_csv
from ensemble_dfd.stacking.logits import IMAGES_FILE


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


@dataclass
class Front:
    """What the page opens with: the answers, each with its figures, and the stack's
    comparison table (None when the run has no stack/comparison.csv)."""

    answers: list[Answer]
    figures: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)
    comparison: pd.DataFrame | None = None


def write_forest(folder: Path, comparison: pd.DataFrame, claims: dict[str, Any] | None
                 ) -> tuple[Path, str] | None:
    """forest.png: every predictor's ΔACC/ΔAUC vs the best single model per evaluation
    split (frame level, all sources; video level hollow), and its caption."""
    frame = AN.headline_rows(comparison, "frame")
    if frame.empty:
        return None
    best, min_effect, infos = AN.evaluation_splits(comparison, claims)
    notes = {i.split: f"{i.n} faces, {i.n_groups} groups"
             + ("" if i.large_enough else ", too small") for i in infos}
    mdd = {i.split: i.mdd_acc for i in infos}
    video = AN.headline_rows(comparison, "video")
    fig = forest_figure(frame, video if len(video) else None, best, notes,
                        f"Difference to the best single model ({best}), 95% CIs", mdd)
    cap = (f"Every predictor minus {best} on each evaluation split (paired group "
           f"bootstrap). Shaded: ± the smallest ΔACC the split can detect; a split is "
           f"large enough when that is ≤ {100 * min_effect:g} points.")
    return save_figure(fig, folder / "forest.png"), cap


def _answer(page: HtmlReport, a: Answer, figs: list[tuple[Path, str]]) -> None:
    page.open("div", f"answer v-{a.verdict.replace(' ', '-')}", f"answer-{a.key}")
    page.heading(a.question, 3)
    page.paragraph(a.headline, "headline", f"headline-{a.key}", a.verdict.upper())
    page.open("div", "cols")
    page.open("div", "text")
    if a.details:
        page.bullets(a.details)
    page.close("div")
    if figs:
        page.open("div", "fig")
        for k, (path, cap) in enumerate(figs):
            page.figure(path, cap, f"figure-{a.key}" if k == 0 else None)
        page.close("div")
    page.close("div")
    if a.table is not None and len(a.table):
        page.table(a.table)
    page.close("div")


def _comparison_tables(page: HtmlReport, comparison: pd.DataFrame | None) -> None:
    page.heading("Comparison tables (stack)", anchor="comparison")
    if comparison is None:
        page.paragraph("No stack/comparison.csv: run `python -m ensemble_dfd.stack` first "
                       "for the single-vs-ensemble comparison.", "note")
        return
    page.paragraph("From stack/comparison.csv (click to open). Δ = predictor − best single "
                   "model, paired over the same group resamples; the split's detectable "
                   "difference is shown where the stack step computed it.")
    groups = CT.table_groups(comparison)
    for level, source in dict.fromkeys((lv, src) for lv, src, _, _ in groups):
        splits = [(sp, rows) for lv, src, sp, rows in groups if (lv, src) == (level, source)]
        who = "all sources" if source == "all" else f"source {source}"
        page.open("details", summary=f"{level.capitalize()} level, {who}: "
                                     f"{', '.join(sp for sp, _ in splits)}")
        for split, rows in splits:
            page.paragraph(CT.group_caption(level, source, split, rows), "caption")
            page.table(CT.display_table(rows), max_rows=None)
        page.close("details")


def build_html(run_dir: Path, folder: Path, results: list[SplitResult],
               figs: dict[str, dict[str, Path]], inter: pd.DataFrame | None,
               meta: dict[str, Any], thumbs: dict[str, list[tuple[str, bytes]]] | None,
               front: Front) -> Path:
    """The page: the answers with their figures first, then the comparison tables, then
    the details (findings, disagreement, diversity, attribution, degradation tables)."""
    page = HtmlReport(f"Ensemble report: {run_dir.name}")
    page.open("section", anchor="answers")
    for a in front.answers:
        _answer(page, a, front.figures.get(a.key, []))
    page.paragraph(f"Models: {', '.join(meta['models'])}. Meta-learners: "
                   f"{', '.join(meta['learners']) or 'none (no stack step)'}. Best single "
                   f"model (chosen on validation by the stack step): {meta['best'] or '—'}.",
                   "meta")
    page.close("section")
    _comparison_tables(page, front.comparison)
    page.heading("Details", anchor="details")
    page.paragraph("Command: " + meta["command"])
    page.paragraph("Decision thresholds (logit scale) as chosen by the stack step; "
                   "positive class = Real. TP/FN are reals called real/fake, TN/FP fakes "
                   "called fake/real.")
    if thumbs:
        page.paragraph("This page embeds thumbnails of face images from research-only "
                       "datasets (--thumbnails). Do not commit this run folder or publish "
                       "this page: no face images may enter the repository.", "warn")
    else:
        page.paragraph("No face images are embedded (run with --thumbnails to see the hard "
                       "images; a report made that way must never be committed).", "note")
    page.heading("Findings", 3)
    page.bullets(meta["findings"])
    for r in results:
        _split_details(page, r, figs[r.split], thumbs)
    _intervention_tables(page, inter)
    return page.write(folder / "index.html")


def _split_details(page: HtmlReport, r: SplitResult, figs: dict[str, Path],
                   thumbs: dict[str, list[tuple[str, bytes]]] | None) -> None:
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
    page.figure(figs["wrong_counts"], f"{s}: how many models get each image wrong")
    page.figure(figs["diversity"], f"{s}: pairwise diversity")
    page.table(pd.DataFrame([r.diversity.summary]))
    page.table(r.diversity.pairs)
    page.heading("Blur/size attribution (observational)", 3)
    if r.has_props:
        page.figure(figs["error_by_bin"], f"{s}: error rate by property bin")
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


def _intervention_tables(page: HtmlReport, inter: pd.DataFrame | None) -> None:
    page.heading("Intervention: controlled degradation", anchor="intervention")
    if inter is None or inter.empty:
        page.paragraph("Not run (--no-intervention).", "note")
        return
    page.paragraph("Each image is degraded at its native resolution, resized to each "
                   "model's input, rescored by every base model; meta-learners combine "
                   "the degraded logits. Level 0 is the original image. Accuracy at the "
                   "stack step's thresholds. The curves are in the answers above.")
    for metric in ("acc", "auc"):
        piv = inter.pivot_table(index=["split", "degradation", "level", "value"],
                                columns="predictor", values=metric, sort=False)
        piv = piv[[c for c in dict.fromkeys(inter["predictor"]) if c in piv.columns]]
        page.paragraph(f"{metric.upper()} per predictor:")
        page.table(piv.reset_index())


def make_thumbnails(hard: pd.DataFrame, files: dict[str, str]) -> list[tuple[str, bytes]]:
    out = []
    for _, row in hard.iterrows():
        cap = f"{row['ref']} {row['pct_wrong']:.0f}% wrong {row['size']}"
        out.append((cap, thumbnail_jpeg(read_rgb(files[row['path']]))))
    return out


def write_intervention(folder: Path, inter: pd.DataFrame, n_splits: int, best: str | None
                       ) -> list[tuple[Path, str]]:
    """intervention.csv and one degradation figure per split, with their captions."""
    write_csv(folder / "intervention.csv", inter)
    out = []
    for s, g in inter.groupby("split", sort=False):
        path = folder / ("intervention.png" if n_splits == 1 else f"intervention_{s}.png")
        n = int(g["n"].iloc[0])
        out.append((save_figure(degradation_figure(
            g, f"{s}: accuracy and AUC vs degradation (n={n})", best), path),
            f"{s}: accuracy and AUC of every predictor vs degradation level (orig = the "
            f"original image; {n} images)"))
    return out


def front_matter(folder: Path, comparison: pd.DataFrame | None,
                 claims: dict[str, Any] | None, inter: pd.DataFrame | None,
                 inter_figs: list[tuple[Path, str]], best: str | None,
                 primary: str | None) -> Front:
    """The answers and their figures (forest.png written here)."""
    front = Front([], {}, comparison)
    if comparison is not None:
        front.answers += AN.answers(comparison, claims)
        forest = write_forest(folder, comparison, claims)
        if forest is not None:
            front.figures["ensembles"] = [forest]
    else:
        front.answers.append(Answer(
            "ensembles", AN.QUESTION, "not measured",
            "The run has no stack/comparison.csv: run `python -m ensemble_dfd.stack` "
            "first."))
    front.answers.append(AN.degradation_answer(inter, best, primary))
    front.figures["degradation"] = inter_figs
    return front
