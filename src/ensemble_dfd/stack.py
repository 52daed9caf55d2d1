"""`python -m ensemble_dfd.stack --run RUN_DIR`: fit meta-learners on the validation logits
and compare every single model with every ensemble on every other split.

Reads RUN_DIR/logits.parquet (and RUN_DIR/images.parquet for the `group` of each image),
writes RUN_DIR/stack/: comparison.csv/.md, weights.csv, predictions.parquet (one row per
image, one logit column per predictor; thresholds in stack.json), roc_<split>.png,
metrics_ci_<split>.png, learners/<name>.joblib with a JSON sidecar, stack.json, env.json.
Rows of split `validation_oof` use out-of-fold predictions (folds grouped by video), so no
learner is ever scored on rows it was fit on. Everything is built in a temporary folder and
renamed into place, so an error leaves no partial output. No TensorFlow here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble_dfd import metrics as M
from ensemble_dfd.cli_common import run_main
from ensemble_dfd.ensemble import (
    META_LEARNERS,
    MetaLearnerError,
    check_labels,
    grouped_folds,
    make_meta_learner,
    oof_decision,
)
from ensemble_dfd.errors import UserError
from ensemble_dfd.logits import (
    IMAGES_FILE,
    LogitMatrix,
    StoreError,
    logit_matrix,
    model_sort_key,
    read_store,
)
from ensemble_dfd.reports.tables import fmt_ci, fmt_value, write_csv, write_markdown
from ensemble_dfd.runio import environment, guard_overwrite, publish_dir, write_json

FIT_SPLIT = "validation"
OOF_SPLIT = "validation_oof"
STACK_DIR = "stack"
SIDECAR_FORMAT = 1


class StackError(UserError, ValueError):
    """Input the stack step cannot use (explained in the message)."""


class MetaLearnerMismatch(StackError):
    """A saved meta-learner does not fit the models (or file) at hand."""


# ---------------------------------------------------------------------------------------
# loading a saved meta-learner (used by `predict`)


@dataclass(frozen=True)
class LoadedMetaLearner:
    estimator: Any
    models: list[str]  # column order the estimator expects
    threshold: float  # on the logit scale: Real iff decision_function(X) > threshold
    sidecar: dict[str, Any]

    def decision(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.decision_function(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.decision(X) > self.threshold).astype(np.int64)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_meta_learner(path: str | Path, available_models: list[str] | None = None
                      ) -> LoadedMetaLearner:
    """Load `<name>.joblib` (or its `<name>.json` sidecar) and check the pair, and that every
    model the learner was fit on is among `available_models`. Build X with `.models` order."""
    import joblib

    path = Path(path)
    jpath = path.with_suffix(".joblib")
    spath = path.with_suffix(".json")
    for p in (jpath, spath):
        if not p.is_file():
            raise MetaLearnerMismatch(f"{p}: missing (a meta-learner is a .joblib file with a "
                                      ".json sidecar beside it)")
    side = json.loads(spath.read_text())
    if side.get("format") != SIDECAR_FORMAT:
        raise MetaLearnerMismatch(f"{spath}: unknown sidecar format {side.get('format')!r}")
    if side.get("sha256") != _sha256(jpath):
        raise MetaLearnerMismatch(f"{jpath}: does not match its sidecar {spath.name} "
                                  "(checksum differs); the pair was mixed up or modified")
    models = list(side["models"])
    if available_models is not None:
        have = set(available_models)
        missing = [m for m in models if m not in have]
        if missing:
            raise MetaLearnerMismatch(
                f"{jpath.name} was fit on models {', '.join(models)}; missing here: "
                f"{', '.join(missing)} (have: {', '.join(available_models) or 'none'})")
    est = joblib.load(jpath)
    if getattr(est, "n_features_in_", len(models)) != len(models):
        raise MetaLearnerMismatch(f"{jpath.name}: estimator expects {est.n_features_in_} "
                                  f"columns but its sidecar lists {len(models)} models")
    mine = side.get("versions", {}).get("scikit-learn")
    import sklearn

    if mine and mine != sklearn.__version__:
        warnings.warn(f"{jpath.name} was saved with scikit-learn {mine}, loading with "
                      f"{sklearn.__version__}", stacklevel=2)
    return LoadedMetaLearner(est, models, float(side["threshold"]), side)


# ---------------------------------------------------------------------------------------
# inputs


def _log(msg: str) -> None:
    print(f"[stack {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_groups(run_dir: Path, mats: dict[str, LogitMatrix]) -> dict[str, np.ndarray]:
    """Group (video) of every image, aligned with each split's matrix rows.

    Without images.parquet (or its `group` column) each image is its own group, with a
    warning: CIs and folds then treat frames of one video as independent."""
    ipath = run_dir / IMAGES_FILE
    if not ipath.is_file():
        warnings.warn(f"{ipath} is absent: using each image's path as its group; CIs and "
                      "out-of-fold folds will treat frames of one video as independent",
                      stacklevel=2)
        return {s: np.asarray(m.paths).astype(str) for s, m in mats.items()}
    img = pd.read_parquet(ipath)
    if "group" not in img.columns:
        warnings.warn(f"{ipath} has no 'group' column: using each image's path as its group",
                      stacklevel=2)
        return {s: np.asarray(m.paths).astype(str) for s, m in mats.items()}
    img = img.drop_duplicates(["split", "path"]).set_index(["split", "path"])["group"]
    out = {}
    for split, m in mats.items():
        idx = pd.MultiIndex.from_arrays([np.full(len(m.paths), split, dtype=object),
                                         np.asarray(m.paths, dtype=object)])
        g = img.reindex(idx)
        if g.isna().any():
            miss = np.asarray(m.paths)[g.isna().to_numpy()]
            raise StoreError(f"{ipath}: no group for {len(miss)} image(s) of split {split}, "
                             f"e.g. {list(miss[:3])}; the per-image table and the logits "
                             "disagree (re-run collect)")
        out[split] = g.astype(str).to_numpy()
    return out


def _warn_shared_groups(groups: dict[str, np.ndarray]) -> None:
    fit = set(groups.get(FIT_SPLIT, []))
    for split, g in groups.items():
        if split == FIT_SPLIT:
            continue
        shared = fit & set(g)
        if shared:
            warnings.warn(f"{len(shared)} group(s) appear in both {FIT_SPLIT} and {split} "
                          f"(e.g. {sorted(shared)[:2]}): the {split} estimates are optimistic",
                          stacklevel=2)


# ---------------------------------------------------------------------------------------
# the comparison (pure given the matrices)


@dataclass
class SplitScores:
    """Logit-scale scores of every predictor on one split."""

    split: str
    y: np.ndarray
    groups: np.ndarray
    paths: np.ndarray
    scores: dict[str, np.ndarray]


def evaluate_split(ss: SplitScores, kinds: dict[str, str], thresholds: dict[str, float],
                   best: str, n_boot: int, seed: int, alpha: float = 0.05) -> pd.DataFrame:
    """One row per predictor: counts, metrics, group-bootstrap CIs, paired differences and
    the exact McNemar test against `best` (the best single model chosen on validation)."""
    codes, n_groups = M.group_codes(ss.groups)
    counts = M.bootstrap_counts(n_groups, n_boot, seed) if n_boot > 0 else None
    boot: dict[str, M.BootstrapSamples] = {}
    rows = []
    n_real = int(ss.y.sum())
    one_class = n_real in (0, ss.y.size)
    for name, z in ss.scores.items():
        thr = thresholds[name]
        with warnings.catch_warnings():
            # one warning per split below, not one per predictor
            warnings.simplefilter("ignore", M.OneClassWarning)
            r = M.evaluate(ss.y, z, thr)
        row: dict[str, Any] = {"split": ss.split, "predictor": name, "kind": kinds[name],
                               "threshold": thr, "n": r.pop("n"), "n_groups": n_groups,
                               "n_real": n_real, "n_fake": int(ss.y.size - n_real)}
        row.update(r)
        if counts is not None:
            bs = M.bootstrap_samples(ss.y, z, codes, counts, thr)
            boot[name] = bs
            for m in M.CI_METRICS:
                row[f"{m}_lo"], row[f"{m}_hi"] = bs.ci(m, alpha)
        else:
            for m in M.CI_METRICS:
                row[f"{m}_lo"] = row[f"{m}_hi"] = float("nan")
        rows.append(row)
    df = pd.DataFrame(rows)
    if one_class:
        warnings.warn(f"split {ss.split} holds only {'Real' if n_real else 'Fake'} images: "
                      "AUC is undefined (NaN) and MCC is 0 by convention", stacklevel=2)
    # paired comparisons with the best single model, on the same resamples
    zb = ss.scores[best]
    right_b = (zb > thresholds[best]) == (ss.y == 1)
    extra = []
    for name, z in ss.scores.items():
        right = (z > thresholds[name]) == (ss.y == 1)
        b, c, p = M.mcnemar_exact(right, right_b)
        e: dict[str, Any] = {"vs": best, "mcnemar_b": b, "mcnemar_c": c, "mcnemar_p": p}
        for m in M.CI_METRICS:
            point = df.loc[df.predictor == name, m].iloc[0] - df.loc[df.predictor == best,
                                                                     m].iloc[0]
            e[f"d_{m}"] = point
            if counts is not None:
                e[f"d_{m}_lo"], e[f"d_{m}_hi"] = M.percentile_ci(
                    getattr(boot[name], m) - getattr(boot[best], m), alpha)
            else:
                e[f"d_{m}_lo"] = e[f"d_{m}_hi"] = float("nan")
        extra.append(e)
    df = pd.concat([df, pd.DataFrame(extra)], axis=1)
    best_hi = float(df.loc[df.predictor == best, "acc_hi"].iloc[0])
    df["beats_best"] = df["d_acc_lo"] > 0
    df["acc_lo_above_best_hi"] = df["acc_lo"] > best_hi
    return df


COLUMNS = ["split", "predictor", "kind", "threshold", "n", "n_groups", "n_real", "n_fake",
           "tp", "tn", "fp", "fn", "acc", "tpr", "tnr", "ppv", "npv", "f1", "mcc", "auc",
           "logloss", "brier", "ece", "acc_lo", "acc_hi", "auc_lo", "auc_hi", "mcc_lo",
           "mcc_hi", "vs", "mcnemar_b", "mcnemar_c", "mcnemar_p", "d_acc", "d_acc_lo",
           "d_acc_hi", "d_auc", "d_auc_lo", "d_auc_hi", "d_mcc", "d_mcc_lo", "d_mcc_hi",
           "beats_best", "acc_lo_above_best_hi"]


def recommend(table: pd.DataFrame, learners: list[str]) -> str | None:
    """The ensemble with the best out-of-fold validation accuracy (ties: AUC) — chosen
    without looking at any split it will be judged on; predict and report default to it."""
    oof = table[(table["split"] == OOF_SPLIT) & table["predictor"].isin(learners)]
    if oof.empty:
        return None
    order = oof.sort_values(["acc", "auc"], ascending=False, kind="stable")
    return str(order["predictor"].iloc[0])


def choose_best_single(y: np.ndarray, X: np.ndarray, models: list[str],
                       thresholds: dict[str, float]) -> str:
    """Highest validation accuracy at its threshold; ties go to AUC, then model order."""
    keys = []
    for k, m in enumerate(models):
        acc = M.seven_metrics(y, X[:, k], thresholds[m])["acc"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", M.OneClassWarning)
            auc = M.roc_auc(y, X[:, k])
        keys.append((-acc, -(auc if np.isfinite(auc) else 0.0), k))
    return models[min(keys)[2]]


# ---------------------------------------------------------------------------------------
# writing


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return repr(v)


def save_meta_learner(folder: Path, name: str, est: Any, models: list[str], threshold: float,
                      info: dict[str, Any]) -> Path:
    """`<name>.joblib` plus `<name>.json` (models in column order, threshold, versions)."""
    import joblib
    import sklearn

    from ensemble_dfd.runio import atomic_write, package_versions

    jpath = folder / f"{name}.joblib"
    atomic_write(jpath, lambda p: joblib.dump(est, p))
    side = {
        "format": SIDECAR_FORMAT, "name": name, "class": type(est).__name__,
        "module": type(est).__module__, "models": list(models), "n_models": len(models),
        "threshold": float(threshold), "threshold_prob": float(M.sigmoid(np.array(threshold))),
        "decision_rule": "Real (1) iff decision_function(X) > threshold; X = logits of "
                         "`models` in this order",
        "params": _json_safe(est.get_params()),
        "versions": {**package_versions(), "scikit-learn": sklearn.__version__,
                     "joblib": joblib.__version__, "python": sys.version.split()[0]},
        "sha256": _sha256(jpath),
    }
    side.update(_json_safe(info))
    write_json(folder / f"{name}.json", side)
    return jpath


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


def _write_figures(folder: Path, split_scores: dict[str, SplitScores], table: pd.DataFrame,
                   kinds: dict[str, str], best: str) -> None:
    from ensemble_dfd.reports.figures import ci_figure, roc_figure, save_figure

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


# ---------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ensemble_dfd.stack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="run folder with logits.parquet")
    p.add_argument("--models", help="comma-separated model refs (default: all in the store)")
    p.add_argument("--learners", help="comma-separated meta-learners (default: all: "
                   + ", ".join(META_LEARNERS) + ")")
    p.add_argument("--threshold", default="fixed",
                   help="fixed (logit 0 = sigmoid 0.5, the study), eer, or fpr:<rate>; "
                        "eer/fpr thresholds are chosen on validation (out-of-fold for ensembles)")
    p.add_argument("--bootstrap", type=int, default=1000, help="group resamples for CIs (0: none)")
    p.add_argument("--folds", type=int, default=5, help="grouped folds for out-of-fold scores")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--overwrite", action="store_true", help="replace an existing RUN_DIR/stack")
    return p.parse_args(argv)


def _split_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise StackError("empty list")
    if len(set(items)) != len(items):
        raise StackError(f"duplicate names in {text!r}")
    return items


def run(args: argparse.Namespace, argv: list[str] | None = None) -> pd.DataFrame:
    t0 = time.time()
    rule = M.parse_threshold_rule(args.threshold)
    if args.bootstrap < 0:
        raise StackError("--bootstrap must be >= 0")
    if args.folds < 2:
        raise StackError("--folds must be >= 2")
    run_dir = Path(args.run)
    out = run_dir / STACK_DIR
    guard_overwrite(out, args.overwrite, "stack comparison")  # fail before any work
    learners = _split_list(args.learners) or list(META_LEARNERS)
    unknown = [n for n in learners if n not in META_LEARNERS]
    if unknown:
        raise StackError(f"unknown meta-learner(s) {', '.join(unknown)} (have: "
                         f"{', '.join(META_LEARNERS)})")
    df = read_store(run_dir)
    splits = list(dict.fromkeys(df["split"]))
    if FIT_SPLIT not in splits:
        raise StoreError(f"{run_dir}: the store has no '{FIT_SPLIT}' split to fit on (has: "
                         f"{', '.join(splits)})")
    models = _split_list(args.models)
    if models is None:
        models = sorted(df.loc[df.split == FIT_SPLIT, "model"].unique(), key=model_sort_key)
    clash = set(models) & set(learners)
    if clash:
        raise StackError(f"names used both as model and meta-learner: {sorted(clash)}")
    eval_splits = [s for s in sorted(splits) if s != FIT_SPLIT]
    mats = {s: logit_matrix(df, s, models) for s in [FIT_SPLIT, *eval_splits]}
    groups = load_groups(run_dir, mats)
    _warn_shared_groups(groups)
    val = mats[FIT_SPLIT]
    gval = groups[FIT_SPLIT]
    try:
        check_labels(val.y, val.y.size)
    except MetaLearnerError as e:
        raise StackError(f"split {FIT_SPLIT}: {e}") from None
    _log(f"{len(models)} models, {len(learners)} meta-learners; fit on {FIT_SPLIT} "
         f"({val.y.size} images, {np.unique(gval).size} groups), evaluate on "
         f"{', '.join([OOF_SPLIT, *eval_splits])}")

    fitted: dict[str, Any] = {}
    oof: dict[str, np.ndarray] = {}
    folds = grouped_folds(val.y, gval, args.folds, args.seed)
    for name in learners:
        est = make_meta_learner(name, random_state=args.seed)
        fitted[name] = est.fit(val.X, val.y, groups=gval)
        oof[name], _ = oof_decision(est, val.X, val.y, gval, folds=folds)
    _log(f"fitted {len(learners)} meta-learners (+{len(folds)} grouped folds each) "
         f"in {time.time() - t0:.1f}s")

    kinds = {m: "single" for m in models} | {n: "ensemble" for n in learners}
    val_scores = {m: val.X[:, k] for k, m in enumerate(models)} | oof
    thresholds = {n: M.choose_threshold(rule, val.y, z) for n, z in val_scores.items()}
    best = choose_best_single(val.y, val.X, models, thresholds)

    split_scores = {OOF_SPLIT: SplitScores(OOF_SPLIT, val.y, gval, val.paths, val_scores)}
    for s in eval_splits:
        mat = mats[s]
        sc = {m: mat.X[:, k] for k, m in enumerate(models)}
        sc |= {n: est.decision_function(mat.X) for n, est in fitted.items()}
        split_scores[s] = SplitScores(s, mat.y, groups[s], mat.paths, sc)
    tables = [evaluate_split(ss, kinds, thresholds, best, args.bootstrap, args.seed + i)
              for i, ss in enumerate(split_scores.values())]
    table = pd.concat(tables, ignore_index=True)[COLUMNS]
    _log(f"evaluated {len(split_scores)} splits x {len(kinds)} predictors "
         f"({args.bootstrap} group resamples) in {time.time() - t0:.1f}s")

    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{STACK_DIR}.tmp-", dir=run_dir))
    try:
        write_csv(tmp / "comparison.csv", table)
        header = (f"# Single models vs meta-learners: {run_dir.name}\n\n"
                  f"Meta-learners fit on `{FIT_SPLIT}`; rows `{OOF_SPLIT}` are out-of-fold "
                  f"({len(folds)} folds grouped by video). Threshold rule: `{rule}` "
                  "(positive class = Real). CIs: 95% percentile bootstrap over groups "
                  f"({args.bootstrap} resamples, seed {args.seed}). McNemar: exact, vs the best "
                  "single model chosen on validation.\n\n"
                  "Command: `python -m ensemble_dfd.stack "
                  + " ".join(argv if argv is not None else sys.argv[1:]) + "`\n")
        write_markdown(tmp / "comparison.md", comparison_markdown(table, header))
        write_csv(tmp / "weights.csv", weights_table(fitted, models))
        # wide: one row per image, one logit column per predictor (long would repeat paths)
        preds = pd.concat([pd.DataFrame({"split": ss.split, "path": ss.paths,
                                         "group": ss.groups, "label": ss.y, **ss.scores})
                           for ss in split_scores.values()], ignore_index=True)
        from ensemble_dfd.runio import atomic_write

        atomic_write(tmp / "predictions.parquet", lambda p: preds.to_parquet(p, index=False))
        ldir = tmp / "learners"
        ldir.mkdir()
        for name, est in fitted.items():
            save_meta_learner(ldir, name, est, models, thresholds[name], {
                "fit_split": FIT_SPLIT, "n": int(val.y.size),
                "n_groups": int(np.unique(gval).size), "n_real": int(val.y.sum()),
                "n_fake": int(val.y.size - val.y.sum()), "threshold_rule": rule,
                "seed": args.seed, "run_dir": str(run_dir),
                "runs": sorted(df["run"].astype(str).unique().tolist())})
        _write_figures(tmp, split_scores, table, kinds, best)
        lines = summary_lines(table)
        write_json(tmp / "stack.json", {
            "models": models, "learners": learners, "best_single": best,
            "recommended": recommend(table, learners),
            "threshold_rule": rule, "thresholds": thresholds, "bootstrap": args.bootstrap,
            "folds": len(folds), "seed": args.seed, "fit_split": FIT_SPLIT,
            "eval_splits": [OOF_SPLIT, *eval_splits], "summary": lines,
            "seconds": round(time.time() - t0, 2)})
        write_json(tmp / "env.json", environment({"command": ["python", "-m",
                                                              "ensemble_dfd.stack",
                                                              *(argv or sys.argv[1:])]}))
        publish_dir(tmp, out, args.overwrite, "stack comparison")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print("\n".join(lines))
    print(f"wrote {out} in {time.time() - t0:.1f}s")
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args, argv), short_warnings=True)


if __name__ == "__main__":
    sys.exit(main())
