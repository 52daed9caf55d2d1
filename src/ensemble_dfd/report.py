"""`python -m ensemble_dfd.report --run RUN_DIR [--data DIR]...`: per-image disagreement,
diversity, blur/size attribution and the degradation (intervention) study, as one offline
HTML page plus CSV tables and PNG figures in RUN_DIR/report/.

Reads RUN_DIR/logits.parquet, RUN_DIR/images.parquet (image properties, written by collect)
and RUN_DIR/stack/ (thresholds, best single model, meta-learners). The intervention study
needs the images and the trained models: store paths are `<dataset folder>/<relative
path>`, so give each dataset folder (or a folder holding several) with --data.
Everything is written into a temporary folder and renamed into place. TensorFlow is loaded
only by the intervention study.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble_dfd.analysis import attribution as A
from ensemble_dfd.analysis import disagreement as D
from ensemble_dfd.analysis import intervention as IV
from ensemble_dfd.cli_common import run_main
from ensemble_dfd.errors import UserError
from ensemble_dfd.logits import (
    IMAGES_FILE,
    LogitMatrix,
    StoreError,
    logit_matrix,
    model_sort_key,
    read_store,
)
from ensemble_dfd.reports.tables import write_csv
from ensemble_dfd.runio import environment, guard_overwrite, publish_dir, write_json

REPORT_DIR = "report"
FIT_SPLIT = "validation"
PROPERTIES = ("width", "height", "area", "blur", "jpeg_quality", "brightness", "contrast")


class ReportError(UserError, ValueError):
    """Input the report cannot use (explained in the message)."""


def _log(msg: str) -> None:
    print(f"[report {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# inputs


@dataclass
class StackInfo:
    """What the stack step decided: thresholds, best single model, learner scores."""

    available: bool
    best: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    learners: list[str] = field(default_factory=list)
    predictions: pd.DataFrame | None = None
    primary: str | None = None  # the ensemble the headline findings quote


def load_stack(run_dir: Path) -> StackInfo:
    sdir = run_dir / "stack"
    info_path = sdir / "stack.json"
    if not info_path.is_file():
        return StackInfo(False)
    info = json.loads(info_path.read_text())
    preds = None
    if (sdir / "predictions.parquet").is_file():
        preds = pd.read_parquet(sdir / "predictions.parquet")
    learners = list(info.get("learners", []))
    # stack's recommendation: chosen on validation (out-of-fold), never on a judged split
    primary = info.get("recommended")
    if primary is None and learners:
        primary = "soft_vote" if "soft_vote" in learners else learners[0]
    return StackInfo(True, info.get("best_single"),
                     {k: float(v) for k, v in info.get("thresholds", {}).items()},
                     learners, preds, primary)


def learner_scores(run_dir: Path, stack: StackInfo, split: str, mat: LogitMatrix
                   ) -> dict[str, np.ndarray]:
    """Each meta-learner's logits on the split's rows: from stack/predictions.parquet
    (out-of-fold on validation), else by applying the saved learner to the stored logits
    (a split collected after stacking, e.g. wild)."""
    if not stack.available or not stack.learners:
        return {}
    key = "validation_oof" if split == FIT_SPLIT else split
    out: dict[str, np.ndarray] = {}
    p = stack.predictions
    if p is not None and key in set(p["split"]):
        part = p[p["split"] == key].drop_duplicates("path").set_index("path")
        if set(mat.paths) <= set(part.index):
            for name in stack.learners:
                if name in part.columns:
                    out[name] = part.loc[mat.paths, name].to_numpy(dtype=np.float64)
            return out
    if split == FIT_SPLIT:
        return out  # in-sample scores would flatter the learners: leave them out
    loaded = IV.load_learners(run_dir / "stack", mat.models, stack.learners, warn=_warn)
    for name, lm in loaded.items():
        X = np.column_stack([mat.X[:, mat.models.index(m)] for m in lm.models])
        out[name] = lm.decision(X)
    return out


def _warn(msg: str) -> None:
    warnings.warn(msg, stacklevel=2)


def split_props(images: pd.DataFrame | None, split: str, paths: np.ndarray) -> pd.DataFrame:
    """Per-image properties (and source) in the matrix's row order; NaN where unknown."""
    cols = ["source", *PROPERTIES]
    if images is None:
        return pd.DataFrame({"source": [""] * len(paths)} | {c: np.nan for c in PROPERTIES},
                            index=pd.Index(paths, name="path"))
    part = images[images["split"] == split].drop_duplicates("path").set_index("path")
    out = part.reindex(paths)[[c for c in cols if c in part.columns]].copy()
    if "source" not in out:
        out["source"] = ""
    out["source"] = out["source"].fillna("").astype(str)
    for c in PROPERTIES:
        if c not in out:
            out[c] = np.nan
        out[c] = pd.to_numeric(out[c], errors="coerce")
    if out["area"].isna().all() and out["width"].notna().any():
        out["area"] = out["width"] * out["height"]
    out.index.name = "path"
    return out[cols]


# ---------------------------------------------------------------------------------------
# the analysis of one split (pure: arrays and tables in, tables out)


@dataclass
class SplitResult:
    split: str
    per_image: pd.DataFrame
    hard: pd.DataFrame
    thresholds: D.HardThresholds
    diversity: D.Diversity
    bins: pd.DataFrame
    ranks: pd.DataFrame
    logistic: pd.DataFrame
    has_props: bool
    findings: list[str]


def analyse_split(split: str, mat: LogitMatrix, props: pd.DataFrame,
                  learners: dict[str, np.ndarray], thresholds: dict[str, float],
                  best: str | None, primary: str | None, hard_thr: D.HardThresholds,
                  n_bins: int) -> SplitResult:
    models = list(mat.models)
    table = D.per_image_table(mat.paths, mat.y, mat.X, models, thresholds, learners,
                              props["source"].tolist())
    hard = D.hard_images(table, models, hard_thr, best if best in models else None, props)
    div = D.diversity(mat.X, mat.y, models, thresholds)
    wrong = {m: ~D.correct_matrix(mat.X[:, [k]], mat.y, [m], thresholds)[:, 0]
             for k, m in enumerate(models)}
    wrong |= {n: (z > thresholds.get(n, 0.0)) != (mat.y == 1) for n, z in learners.items()}
    kinds = {m: "single" for m in models} | {n: "ensemble" for n in learners}
    have = [c for c in PROPERTIES if props[c].notna().any()]
    if have:
        bins = A.error_by_bin(props, wrong, have, n_bins, kinds)
        ranks = A.rank_tests(props, wrong, have, kinds)
        sources = props["source"].tolist() if props["source"].nunique() > 1 else None
        logistic = A.logistic_attribution(props, wrong, mat.y, sources, kinds)
    else:
        bins = pd.DataFrame(columns=A.BIN_COLUMNS)
        ranks = pd.DataFrame(columns=A.RANK_COLUMNS)
        logistic = pd.DataFrame(columns=A.LOGIT_COLUMNS)
    res = SplitResult(split, table, hard, hard_thr, div, bins, ranks, logistic, bool(have), [])
    res.findings = split_findings(res, best, primary)
    return res


def _pct(v: float) -> str:
    return "—" if not np.isfinite(v) else f"{100 * v:.1f}%"


def split_findings(r: SplitResult, best: str | None, primary: str | None) -> list[str]:
    """Headline sentences with numbers (also written to summary.json)."""
    s = r.diversity.summary
    n_real_hard = int((r.hard["label"] == 1).sum())
    n_fake_hard = int((r.hard["label"] == 0).sum())
    out = [f"{r.split}: {s['n_images']} images ({s['n_real']} real, {s['n_fake']} fake), "
           f"{s['n_models']} models. Oracle accuracy (some model right) "
           f"{_pct(s['oracle_accuracy'])}; majority vote {_pct(s['majority_accuracy'])}; "
           f"best model {_pct(s['best_model_accuracy'])}; every model wrong on "
           f"{_pct(s['all_wrong_share'])} of images.",
           f"{r.split}: hard images (reals wrong for >= {100 * r.thresholds.real:.0f}% of "
           f"models, fakes >= {100 * r.thresholds.fake:.0f}%): {n_real_hard} of {s['n_real']} "
           f"reals, {n_fake_hard} of {s['n_fake']} fakes"
           + (f"; the best single model ({best}) was wrong on "
              f"{int(r.hard['best_wrong'].fillna(False).sum())} of them" if best else "") + ".",
           f"{r.split}: mean pairwise disagreement {s['mean_disagreement']:.3f}, Yule's Q "
           f"{s['mean_yule_q']:.3f}, double fault {s['mean_double_fault']:.3f}, kappa "
           f"{s['mean_kappa']:.3f}, logit correlation {s['mean_logit_corr']:.3f}."]
    if not r.has_props:
        return out
    rk = r.ranks[r.ranks["kind"] == "single"]
    meaning = {"blur": "wrong images are blurrier", "area": "wrong images are smaller"}
    for prop in ("blur", "area"):
        sub = rk[rk["property"] == prop]
        if sub.empty:
            continue
        sig = sub[sub["p"] < 0.05]
        out.append(f"{r.split}: {prop}: misclassified vs correct (Mann-Whitney, per model): "
                   f"median rank-biserial r = {sub['rank_biserial'].median():.3f} "
                   f"(r < 0: {meaning[prop]}); p < 0.05 for {len(sig)} of "
                   f"{len(sub)} models ({int((sig['rank_biserial'] < 0).sum())} lower, "
                   f"{int((sig['rank_biserial'] > 0).sum())} higher).")
    for who in [p for p in (primary, best) if p]:
        b = r.bins[(r.bins["predictor"] == who)]
        for prop in ("blur", "area"):
            g = b[b["property"] == prop]
            if len(g) >= 2:
                lo, hi = g.iloc[0], g.iloc[-1]
                out.append(f"{r.split}: {who}: error rate in the lowest {prop} bin "
                           f"({lo['lo']:.3g}–{lo['hi']:.3g}) {_pct(lo['error_rate'])} "
                           f"[{_pct(lo['ci_lo'])}, {_pct(lo['ci_hi'])}] vs highest "
                           f"({hi['lo']:.3g}–{hi['hi']:.3g}) {_pct(hi['error_rate'])} "
                           f"[{_pct(hi['ci_lo'])}, {_pct(hi['ci_hi'])}].")
        lg = r.logistic[(r.logistic["predictor"] == who)
                        & r.logistic["term"].isin(["log_blur", "log_area"])]
        for _, row in lg.iterrows():
            out.append(f"{r.split}: {who}: logistic regression of wrong: {row['term']} "
                       f"odds ratio per SD {row['odds_ratio']:.2f} (coef {row['coef']:.2f} "
                       f"[{row['ci_lo']:.2f}, {row['ci_hi']:.2f}], p = {row['p']:.3g}).")
    return out


def intervention_findings(res: pd.DataFrame, best: str | None, primary: str | None
                          ) -> list[str]:
    out = []
    for (split, deg), g in res.groupby(["split", "degradation"], sort=False):
        top = int(g["level"].max())
        for who in [p for p in (best, primary) if p]:
            a = g[g["predictor"] == who].set_index("level")
            if a.empty or top == 0:
                continue
            v = a.loc[top, "value"]
            out.append(f"{split}: {deg} ({a.loc[top, 'unit']} {v:g}): {who} accuracy "
                       f"{a.loc[0, 'acc']:.3f} -> {a.loc[top, 'acc']:.3f}, AUC "
                       f"{a.loc[0, 'auc']:.3f} -> {a.loc[top, 'auc']:.3f}.")
        singles = g[g["kind"] == "single"]
        d = (singles[singles["level"] == top].set_index("predictor")["acc"]
             - singles[singles["level"] == 0].set_index("predictor")["acc"])
        if top and len(d):
            out.append(f"{split}: {deg}: base models' accuracy change at the strongest level: "
                       f"median {d.median():+.3f} (range {d.min():+.3f} to {d.max():+.3f}; "
                       f"{int((d < 0).sum())} of {len(d)} models lose accuracy).")
    return out


# ---------------------------------------------------------------------------------------
# writing


def write_split(folder: Path, r: SplitResult, best: str | None, primary: str | None
                ) -> dict[str, Path]:
    from ensemble_dfd.reports.figures import (
        error_by_bin_figure,
        heatmaps_figure,
        save_figure,
        wrong_count_figure,
    )

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
    from ensemble_dfd.reports.html import HtmlReport

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
    from ensemble_dfd.data.images import read_rgb
    from ensemble_dfd.reports.html import thumbnail_jpeg

    out = []
    for _, row in hard.iterrows():
        cap = f"{row['ref']} {row['pct_wrong']:.0f}% wrong {row['size']}"
        out.append((cap, thumbnail_jpeg(read_rgb(files[row['path']]))))
    return out


# ---------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ensemble_dfd.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="run folder with logits.parquet")
    p.add_argument("--data", type=Path, action="append", default=[],
                   help="dataset folder (or a folder holding dataset folders); repeatable. "
                        "Store paths <name>/<rel> match a folder named <name>")
    p.add_argument("--splits", help="comma-separated splits (default: all but validation)")
    p.add_argument("--no-intervention", action="store_true",
                   help="skip the degradation study (no models, images or TensorFlow needed)")
    p.add_argument("--intervention-splits",
                   help="splits to degrade (default: test if reported, else the first)")
    p.add_argument("--intervention-limit", type=int,
                   help="degrade at most N images per split (balanced by class)")
    p.add_argument("--degradations", help="comma-separated subset of: "
                   + ", ".join(A.DEGRADATIONS))
    p.add_argument("--levels", action="append", metavar="NAME=V1,V2,...",
                   help="levels of one degradation, e.g. blur=1,2,4 or jpeg=50,10 (the "
                        "original, level 0, is always added); repeatable")
    p.add_argument("--bins", type=int, default=4, help="quantile bins per property")
    p.add_argument("--hard-real", type=float,
                   help="share of models wrong that makes a real hard (default 0.8; wild 0.5)")
    p.add_argument("--hard-fake", type=float,
                   help="share of models wrong that makes a fake hard (default 0.5; wild 0.7)")
    p.add_argument("--thumbnails", action="store_true",
                   help="embed thumbnails of hard images (face images: never commit them)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="for --intervention-limit sampling")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace RUN_DIR/report")
    return p.parse_args(argv)


def _list(text: str | None, what: str) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or len(set(items)) != len(items):
        raise ReportError(f"bad {what} {text!r}: give distinct comma-separated names")
    return items


def _hard_thresholds(split: str, real: float | None, fake: float | None) -> D.HardThresholds:
    base = D.thresholds_for(split)
    return D.HardThresholds(base.real if real is None else real,
                            base.fake if fake is None else fake)


def run(args: argparse.Namespace, argv: list[str] | None = None) -> Path:
    t0 = time.time()
    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run folder")
    out = run_dir / REPORT_DIR
    guard_overwrite(out, args.overwrite, "report")  # fail before any work
    if args.bins < 1:
        raise ReportError("--bins must be >= 1")
    if args.batch_size < 1:
        raise ReportError("--batch-size must be >= 1")
    for name in ("hard_real", "hard_fake"):
        v = getattr(args, name)
        if v is not None and not 0.0 <= v <= 1.0:
            raise ReportError(f"--{name.replace('_', '-')} must be a share in [0, 1], got {v}")
    df = read_store(run_dir)
    have = list(dict.fromkeys(sorted(df["split"].unique())))
    splits = _list(args.splits, "--splits") or [s for s in have if s != FIT_SPLIT] or have
    absent = [s for s in splits if s not in have]
    if absent:
        raise StoreError(f"{run_dir}: no logits for split(s) {', '.join(absent)} (have: "
                         f"{', '.join(have)})")
    images = None
    ipath = run_dir / IMAGES_FILE
    if ipath.is_file():
        images = pd.read_parquet(ipath)
    else:
        _warn(f"{ipath} is absent: no image properties, so no attribution or sizes")
    stack = load_stack(run_dir)
    if not stack.available:
        _warn(f"{run_dir / 'stack'} is absent: thresholds 0, no meta-learners; run "
              "`python -m ensemble_dfd.stack` first for the full report")
    mats = {s: logit_matrix(df, s) for s in splits}
    models = sorted(set().union(*(m.models for m in mats.values())), key=model_sort_key)
    best = stack.best
    if best is None and FIT_SPLIT in have:
        from ensemble_dfd.stack import choose_best_single

        val = logit_matrix(df, FIT_SPLIT)
        best = choose_best_single(val.y, val.X, val.models, {m: 0.0 for m in val.models})

    # everything the intervention and thumbnails need is checked before any analysis
    inter_splits: list[str] = []
    steps: list[IV.Step] = []
    files: dict[str, str] = {}
    need_images: list[str] = []
    if not args.no_intervention:
        inter_splits = _list(args.intervention_splits, "--intervention-splits") or (
            ["test"] if "test" in splits else splits[:1])
        bad = [s for s in inter_splits if s not in splits]
        if bad:
            raise ReportError(f"--intervention-splits {', '.join(bad)} not among the reported "
                              f"splits ({', '.join(splits)})")
        steps = IV.make_steps(_list(args.degradations, "--degradations"),
                             IV.parse_levels(args.levels))
        from ensemble_dfd.collect import trained_models

        trained = trained_models(run_dir)
        for s in inter_splits:
            lacking = [m for m in mats[s].models if m not in trained]
            if lacking:
                raise ReportError(f"the intervention needs the trained models, but "
                                  f"{run_dir / 'models'} has none for {', '.join(lacking)}; "
                                  "pass --no-intervention")
        need_images += [str(p) for s in inter_splits for p in mats[s].paths]
    if args.thumbnails:
        need_images += [str(p) for s in splits for p in mats[s].paths]
    if need_images:
        why = "the intervention" if not args.no_intervention else "--thumbnails"
        if not args.data:
            raise ReportError(f"{why} needs the images: pass --data DIR (a dataset folder, or "
                              "a folder holding them), or --no-intervention")
        uniq = list(dict.fromkeys(need_images))
        found, missing = IV.resolve_files(uniq, args.data)
        if missing:
            raise ReportError(f"{why}: {len(missing)} of {len(uniq)} images not found under "
                              f"--data {', '.join(map(str, args.data))}, e.g. {missing[0]} "
                              "(a store path is <dataset folder name>/<relative path>)")
        files = dict(zip(uniq, found, strict=True))  # type: ignore[arg-type]

    results, thumbs = [], {}
    for s in splits:
        mat = mats[s]
        lscores = learner_scores(run_dir, stack, s, mat)
        r = analyse_split(s, mat, split_props(images, s, mat.paths), lscores,
                          stack.thresholds, best, stack.primary,
                          _hard_thresholds(s, args.hard_real, args.hard_fake), args.bins)
        results.append(r)
        _log(f"{s}: {len(r.per_image)} images, {len(r.hard)} hard, oracle accuracy "
             f"{r.diversity.summary['oracle_accuracy']:.3f}")
        if args.thumbnails:
            thumbs[s] = make_thumbnails(r.hard, files)

    inter = None
    if inter_splits:
        frames = []
        for s in inter_splits:
            mat = mats[s]
            idx = IV.subsample(mat.y, args.intervention_limit, args.seed)
            learners = IV.load_learners(run_dir / "stack", mat.models, stack.learners,
                                       warn=_warn) if stack.available else {}
            _log(f"intervention on {s}: {idx.size} images x {len(steps)} steps, "
                 f"{len(mat.models)} models, {len(learners)} meta-learners")
            res, _ = IV.run_intervention(run_dir, s, [files[str(p)] for p in mat.paths[idx]],
                                        mat.y[idx], mat.models, steps, stack.thresholds,
                                        learners, args.batch_size, not args.no_progress)
            frames.append(res)
        inter = pd.concat(frames, ignore_index=True)

    findings = [f for r in results for f in r.findings]
    if inter is not None:
        findings += intervention_findings(inter, best, stack.primary)
    command = "python -m ensemble_dfd.report " + " ".join(
        argv if argv is not None else sys.argv[1:])
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{REPORT_DIR}.tmp-", dir=run_dir))
    try:
        figs = {r.split: write_split(tmp, r, best, stack.primary) for r in results}
        inter_fig = None
        if inter is not None:
            from ensemble_dfd.reports.figures import degradation_figure, save_figure

            write_csv(tmp / "intervention.csv", inter)
            for s, g in inter.groupby("split", sort=False):
                path = tmp / ("intervention.png" if len(inter_splits) == 1
                              else f"intervention_{s}.png")
                inter_fig = save_figure(degradation_figure(
                    g, f"{s}: accuracy and AUC vs degradation (n={int(g['n'].iloc[0])})",
                    best), path)
        meta = {"command": command, "models": models, "learners": stack.learners,
                "best": best, "findings": findings}
        build_html(run_dir, tmp, results, figs, inter, inter_fig, meta,
                   thumbs if args.thumbnails else None)
        write_json(tmp / "summary.json", {
            "command": command, "splits": splits, "models": models,
            "learners": stack.learners, "best_single": best, "primary_ensemble": stack.primary,
            "thresholds": stack.thresholds, "thumbnails": bool(args.thumbnails),
            "diversity": {r.split: r.diversity.summary for r in results},
            "hard_thresholds": {r.split: {"real": r.thresholds.real,
                                          "fake": r.thresholds.fake} for r in results},
            "n_hard": {r.split: len(r.hard) for r in results},
            "intervention": {"splits": inter_splits, "limit": args.intervention_limit,
                             "steps": [vars(s) for s in steps]},
            "findings": findings, "seconds": round(time.time() - t0, 2)})
        write_json(tmp / "env.json", environment({"command": command.split()}))
        publish_dir(tmp, out, args.overwrite, "report")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for f in findings:
        print(f)
    print(f"wrote {out / 'index.html'} in {time.time() - t0:.1f}s")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args, argv), short_warnings=True)


if __name__ == "__main__":
    sys.exit(main())
