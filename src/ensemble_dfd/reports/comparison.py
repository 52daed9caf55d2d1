"""Writers of the stack step's outputs: comparison tables (CSV/Markdown), weights, the
wide predictions table, learner files, figures and stack.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble_dfd import metrics as M
from ensemble_dfd.comparison import Comparison, SplitScores
from ensemble_dfd.ensemble.saved import save_meta_learner
from ensemble_dfd.reports.figures import ci_figure, roc_figure, save_figure
from ensemble_dfd.reports.tables import fmt_ci, fmt_value, write_csv, write_markdown
from ensemble_dfd.rundir import FIT_SPLIT, LEARNERS_DIR, OOF_SPLIT, PREDICTIONS_FILE, STACK_FILE
from ensemble_dfd.runio import atomic_write, environment, write_json


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


def comparison_markdown(table: pd.DataFrame, header: str) -> str:
    out = [header, ""]
    for split, part in table.groupby("split", sort=False):
        best = part["vs"].iloc[0]
        out.append(f"## {split}\n")
        out.append(f"n = {int(part['n'].iloc[0])} images in {int(part['n_groups'].iloc[0])} "
                   f"groups ({int(part['n_real'].iloc[0])} real, {int(part['n_fake'].iloc[0])}"
                   f" fake). Best single model (chosen on validation): **{best}**. "
                   "Δ = predictor − best single, paired over the same group resamples.\n")
        cols = ["predictor", "kind", "TP", "TN", "FP", "FN", "ACC [95% CI]", "TPR", "TNR",
                "PPV", "NPV", "F1", "MCC [95% CI]", "AUC [95% CI]", "log-loss", "Brier",
                "ECE", "ΔACC [95% CI]", "McNemar p"]
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|")
        for _, r in part.iterrows():
            name = f"**{r.predictor}**" if r.predictor == best else r.predictor
            cells = [name, r.kind, *(fmt_value(int(r[c])) for c in ("tp", "tn", "fp", "fn")),
                     fmt_ci(r.acc, r.acc_lo, r.acc_hi),
                     *(fmt_value(r[c]) for c in ("tpr", "tnr", "ppv", "npv", "f1")),
                     fmt_ci(r.mcc, r.mcc_lo, r.mcc_hi), fmt_ci(r.auc, r.auc_lo, r.auc_hi),
                     fmt_value(r.logloss), fmt_value(r.brier), fmt_value(r.ece),
                     fmt_ci(r.d_acc, r.d_acc_lo, r.d_acc_hi, 3), fmt_value(r.mcnemar_p, 4)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def summary_lines(table: pd.DataFrame) -> list[str]:
    lines = []
    for split, part in table.groupby("split", sort=False):
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
                         f"ΔACC {fmt_ci(r.d_acc, r.d_acc_lo, r.d_acc_hi)}  "
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


def write_stack(folder: Path, c: Comparison, run_dir: Path, runs: list[str], n_boot: int,
                seed: int, argv: list[str], seconds: float) -> list[str]:
    """Every file of RUN/stack into `folder`; returns the summary lines."""
    write_csv(folder / "comparison.csv", c.table)
    header = (f"# Single models vs meta-learners: {run_dir.name}\n\n"
              f"Meta-learners fit on `{FIT_SPLIT}`; rows `{OOF_SPLIT}` are out-of-fold "
              f"({c.n_folds} folds grouped by video). Threshold rule: `{c.rule}` "
              "(positive class = Real). CIs: 95% percentile bootstrap over groups "
              f"({n_boot} resamples, seed {seed}). McNemar: exact, vs the best "
              "single model chosen on validation.\n\n"
              "Command: `python -m ensemble_dfd.stack " + " ".join(argv) + "`\n")
    write_markdown(folder / "comparison.md", comparison_markdown(c.table, header))
    write_csv(folder / "weights.csv", weights_table(c.fitted, c.models))
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
    lines = summary_lines(c.table)
    write_json(folder / STACK_FILE, {
        "models": c.models, "learners": c.learners, "best_single": c.best,
        "recommended": c.recommended, "threshold_rule": c.rule, "thresholds": c.thresholds,
        "bootstrap": n_boot, "folds": c.n_folds, "seed": seed, "fit_split": FIT_SPLIT,
        "eval_splits": list(c.split_scores), "summary": lines, "seconds": round(seconds, 2)})
    write_json(folder / "env.json", environment({"command": ["python", "-m",
                                                             "ensemble_dfd.stack", *argv]}))
    return lines
