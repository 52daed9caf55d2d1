"""Writers of the stack step's outputs: comparison tables (CSV/Markdown), weights, the
wide predictions table, learner files, figures and stack.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble_dfd.ensemble.saved import save_meta_learner
from ensemble_dfd.reports.figures import ci_figure, roc_figure, save_figure
from ensemble_dfd.reports.tables import fmt_ci, fmt_value, write_csv, write_markdown
from ensemble_dfd.rundir import (
    CLAIMS_FILE,
    CROSS_FILE,
    FIT_SPLIT,
    LEARNERS_DIR,
    OOF_SPLIT,
    PREDICTIONS_FILE,
    STACK_FILE,
    train_set_name,
)
from ensemble_dfd.runio import atomic_write, environment, write_json
from ensemble_dfd.stacking import metrics as M
from ensemble_dfd.stacking.comparison import Comparison, SplitScores
from ensemble_dfd.stacking.power import headline_rows


def weights_table(fitted: dict[str, Any], models: list[str]) -> pd.DataFrame:
    rows = []
    for name, est in fitted.items():
        for quantity, v in est.weight_table().items():
            arr = np.asarray(v, dtype=float)
            if arr.ndim == 0:
                rows.append({"learner": name, "quantity": quantity, "model": "",
                             "value": float(arr)})
            else:
                rows.extend({"learner": name, "quantity": quantity, "model": m,
                             "value": float(x)} for m, x in zip(models, arr, strict=True))
    return pd.DataFrame(rows, columns=["learner", "quantity", "model", "value"])


def _main_table(part: pd.DataFrame, best: str) -> list[str]:
    """Frame level, all sources: every metric, the paired Δ and its power."""
    cols = ["predictor", "kind", "TP", "TN", "FP", "FN", "ACC [95% CI]", "TPR", "TNR",
            "PPV", "NPV", "F1", "MCC [95% CI]", "AUC [95% CI]", "AP", "EER", "log-loss",
            "Brier", "ECE", "ΔACC [95% CI]", "MDD ACC", "ΔAUC [95% CI]", "MDD AUC",
            "McNemar p"]
    out = ["| " + " | ".join(cols) + " |",
           "|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|"]
    for _, r in part.iterrows():
        name = f"**{r.predictor}**" if r.predictor == best else r.predictor
        cells = [name, r.kind, *(fmt_value(int(r[c])) for c in ("tp", "tn", "fp", "fn")),
                 fmt_ci(r.acc, r.acc_lo, r.acc_hi),
                 *(fmt_value(r[c]) for c in ("tpr", "tnr", "ppv", "npv", "f1")),
                 fmt_ci(r.mcc, r.mcc_lo, r.mcc_hi), fmt_ci(r.auc, r.auc_lo, r.auc_hi),
                 fmt_ci(r.ap, r.ap_lo, r.ap_hi), fmt_value(r.eer), fmt_value(r.logloss),
                 fmt_value(r.brier), fmt_value(r.ece),
                 fmt_ci(r.d_acc, r.d_acc_lo, r.d_acc_hi, 3), fmt_value(r.mdd_acc),
                 fmt_ci(r.d_auc, r.d_auc_lo, r.d_auc_hi, 3), fmt_value(r.mdd_auc),
                 fmt_value(r.mcnemar_p, 4)]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _detail_table(part: pd.DataFrame, best: str) -> list[str]:
    """Video level or one source: the headline metrics, Δ and power."""
    cols = ["predictor", "ACC [95% CI]", "AUC [95% CI]", "AP", "EER", "ΔACC [95% CI]",
            "MDD ACC", "ΔAUC [95% CI]", "MDD AUC"]
    out = ["| " + " | ".join(cols) + " |", "|---|" + "|".join(["---:"] * (len(cols) - 1)) + "|"]
    for _, r in part.iterrows():
        name = f"**{r.predictor}**" if r.predictor == best else r.predictor
        out.append("| " + " | ".join([
            name, fmt_ci(r.acc, r.acc_lo, r.acc_hi), fmt_ci(r.auc, r.auc_lo, r.auc_hi),
            fmt_ci(r.ap, r.ap_lo, r.ap_hi), fmt_value(r.eer),
            fmt_ci(r.d_acc, r.d_acc_lo, r.d_acc_hi), fmt_value(r.mdd_acc),
            fmt_ci(r.d_auc, r.d_auc_lo, r.d_auc_hi), fmt_value(r.mdd_auc)]) + " |")
    return out


def _sizes(r: pd.Series, unit: str) -> str:
    return (f"n = {int(r['n'])} {unit} in {int(r['n_groups'])} groups ({int(r['n_real'])} "
            f"real, {int(r['n_fake'])} fake)")


def comparison_markdown(table: pd.DataFrame, header: str) -> str:
    out = [header, ""]
    for split, whole in table.groupby("split", sort=False):
        part = headline_rows(whole)
        best = part["vs"].iloc[0]
        out.append(f"## {split}\n")
        out.append(f"{_sizes(part.iloc[0], 'images')}. Best single model (chosen on "
                   f"validation): **{best}**. Δ = predictor − best single, paired over the "
                   "same group resamples; MDD = the smallest Δ this split can detect (80% "
                   "power, two-sided 5%).\n")
        out += _main_table(part, best)
        out.append("")
        for (level, source), sub in whole.groupby(["level", "source"], sort=False):
            if level == "frame" and source == "all":
                continue
            unit = "videos" if level == "video" else "images"
            out.append(f"### {split}: {level} level, source {source}\n")
            out.append(f"{_sizes(sub.iloc[0], unit)}.\n")
            out += _detail_table(sub, best)
            out.append("")
    return "\n".join(out)


def summary_lines(table: pd.DataFrame) -> list[str]:
    lines = []
    for split, part in headline_rows(table).groupby("split", sort=False):
        best = part["vs"].iloc[0]
        b = part[part.predictor == best].iloc[0]
        lines.append(f"{split} (n={int(b.n)}, {int(b.n_groups)} groups): best single {best} "
                     f"ACC {fmt_ci(b.acc, b.acc_lo, b.acc_hi)}  "
                     f"AUC {fmt_ci(b.auc, b.auc_lo, b.auc_hi)}")
        ens = part[part.kind == "ensemble"]
        for _, r in ens.iterrows():
            if r.d_acc_lo > 0:
                verdict = "BEATS the best single model beyond the CI"
            elif r.d_acc_hi < 0:
                verdict = "worse than the best single model beyond the CI"
            else:
                verdict = "no clear difference"
            lines.append(f"  {r.predictor:<16} ACC {fmt_ci(r.acc, r.acc_lo, r.acc_hi)}  "
                         f"ΔACC {fmt_ci(r.d_acc, r.d_acc_lo, r.d_acc_hi)} "
                         f"(MDD {fmt_value(r.mdd_acc)})  "
                         f"McNemar p={fmt_value(r.mcnemar_p, 4)}  -> {verdict}")
        winners = ens.loc[ens.d_acc_lo > 0, "predictor"].tolist()
        lines.append(f"  => {split}: " + (f"yes, {', '.join(winners)} beat(s) {best} beyond "
                                           "the 95% CI of the accuracy difference"
                                           if winners else
                                           f"no ensemble beats {best} beyond the 95% CI of "
                                           "the accuracy difference"))
    return lines


def write_figures(folder: Path, split_scores: dict[str, SplitScores], table: pd.DataFrame,
                   kinds: dict[str, str], best: str) -> None:
    table = headline_rows(table)
    for split, ss in split_scores.items():
        part = table[table.split == split]
        if np.unique(ss.y).size == 2:
            curves = {}
            for name, z in ss.scores.items():
                fpr, tpr, _ = M.roc_points(ss.y, z)
                curves[name] = (fpr, tpr, float(part.loc[part.predictor == name, "auc"].iloc[0]))
            fig = roc_figure(curves, kinds, f"ROC on {split} (n={ss.y.size})", best)
            save_figure(fig, folder / f"roc_{split}.png")
        fig = ci_figure(part.reset_index(drop=True), ("acc", "auc", "mcc"),
                        f"{split}: metrics with 95% group-bootstrap CIs", best)
        save_figure(fig, folder / f"metrics_ci_{split}.png")


CROSS_COLUMNS = ["train_set", "eval_set", "level", "source", "predictor", "n", "n_groups",
                 "auc", "auc_lo", "auc_hi"]


def cross_dataset(table: pd.DataFrame, train_set: str, best: str) -> pd.DataFrame:
    """Train set x evaluation set, frame and video AUC with CIs, for the best single model
    and every ensemble: all sources, then per source (a dataset reader's source names the
    method, e.g. ffpp-c23-FaceSwap: which manipulation fools which model); the fit split's
    out-of-fold rows left out."""
    t = table[(table["split"] != OOF_SPLIT)
              & ((table["kind"] == "ensemble") | (table["predictor"] == best))]
    t = t.assign(_all=t["source"] != "all").sort_values(
        ["split", "level", "_all", "source"], kind="stable")
    t = t.rename(columns={"split": "eval_set"}).assign(train_set=train_set)
    return t[CROSS_COLUMNS].reset_index(drop=True)


def _too_small(claims: dict) -> str:
    small = [f"{s} (n={i['n']}, {i['n_groups']} groups, MDD ACC {fmt_value(i['mdd_acc'])})"
             for s, i in claims.get("splits", {}).items() if not i["large_enough"]]
    return ", ".join(small) if small else "none"


def write_stack(folder: Path, c: Comparison, run_dir: Path, runs: list[str], n_boot: int,
                seed: int, argv: list[str], seconds: float) -> list[str]:
    """Every file of RUN/stack into `folder`; returns the summary lines."""
    write_csv(folder / "comparison.csv", c.table)
    header = (f"# Single models vs meta-learners: {run_dir.name}\n\n"
              f"Meta-learners fit on `{FIT_SPLIT}`; rows `{OOF_SPLIT}` are out-of-fold "
              f"({c.n_folds} folds grouped by video). Threshold rule: `{c.rule}` "
              "(positive class = Real). CIs: 95% percentile bootstrap over groups "
              f"({n_boot} resamples, seed {seed}). McNemar: exact, vs the best "
              "single model chosen on validation. Video level: frame logits aggregated "
              f"per video by `{c.video_aggregate}` (video = images' `video`, else `group`, "
              "split by label), at the frame thresholds. AP: fakes as the positive class. "
              "MDD: (z_.975 + z_.8) × bootstrap SE of the paired Δ.\n\n"
              f"**Headline:** {c.claims.get('headline', '')}\n\n"
              f"Splits too small to judge a claim (MDD ACC > "
              f"{c.claims.get('min_effect')}): {_too_small(c.claims)}.\n\n"
              "Command: `python -m ensemble_dfd.stack " + " ".join(argv) + "`\n")
    write_markdown(folder / "comparison.md", comparison_markdown(c.table, header))
    write_csv(folder / "weights.csv", weights_table(c.fitted, c.models))
    write_json(folder / CLAIMS_FILE, c.claims)
    write_csv(folder / CROSS_FILE, cross_dataset(c.table, train_set_name(run_dir), c.best))
    # wide: one row per image, one logit column per predictor (long would repeat paths)
    preds = pd.concat([pd.DataFrame({"split": ss.split, "path": ss.paths, "group": ss.groups,
                                     "label": ss.y, **ss.scores})
                       for ss in c.split_scores.values()], ignore_index=True)
    atomic_write(folder / PREDICTIONS_FILE, lambda p: preds.to_parquet(p, index=False))
    ldir = folder / LEARNERS_DIR
    ldir.mkdir()
    y, g = c.fit.y, c.fit.groups
    for name, est in c.fitted.items():
        save_meta_learner(ldir, name, est, c.models, c.thresholds[name], {
            "fit_split": FIT_SPLIT, "n": int(y.size), "n_groups": int(np.unique(g).size),
            "n_real": int(y.sum()), "n_fake": int(y.size - y.sum()),
            "threshold_rule": c.rule, "seed": seed, "run_dir": str(run_dir), "runs": runs})
    write_figures(folder, c.split_scores, c.table, c.kinds, c.best)
    lines = summary_lines(c.table) + [f"headline: {c.claims.get('headline', '')}"]
    write_json(folder / STACK_FILE, {
        "models": c.models, "learners": c.learners, "best_single": c.best,
        "recommended": c.recommended, "threshold_rule": c.rule, "thresholds": c.thresholds,
        "bootstrap": n_boot, "folds": c.n_folds, "seed": seed, "fit_split": FIT_SPLIT,
        "eval_splits": list(c.split_scores), "summary": lines, "seconds": round(seconds, 2),
        "video_aggregate": c.video_aggregate, "min_effect": c.claims.get("min_effect")})
    write_json(folder / "env.json", environment({"command": ["python", "-m",
                                                             "ensemble_dfd.stack", *argv]}))
    return lines
