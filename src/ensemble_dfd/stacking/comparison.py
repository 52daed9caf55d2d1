"""The single-vs-ensemble comparison behind `python -m ensemble_dfd.stack` (pure: logit
matrices in, tables out). Meta-learners are fit on the validation split; every predictor is
scored on every other split (out of fold on validation) with grouped-bootstrap CIs, paired
differences and McNemar's exact test against the best single model chosen on validation."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble_dfd.ensemble import (
    MetaLearnerError,
    check_labels,
    grouped_folds,
    make_meta_learner,
    oof_decision,
)
from ensemble_dfd.errors import UserError
from ensemble_dfd.rundir import FIT_SPLIT, OOF_SPLIT, choose_best_single, recommend
from ensemble_dfd.stacking import metrics as M
from ensemble_dfd.stacking import power
from ensemble_dfd.stacking import videolevel as V
from ensemble_dfd.stacking.logits import IMAGES_FILE, LogitMatrix, StoreError


class StackError(UserError, ValueError):
    """Input the stack step cannot use (explained in the message)."""


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


def warn_shared_groups(groups: dict[str, np.ndarray]) -> None:
    fit = set(groups.get(FIT_SPLIT, []))
    for split, g in groups.items():
        if split == FIT_SPLIT:
            continue
        shared = fit & set(g)
        if shared:
            warnings.warn(f"{len(shared)} group(s) appear in both {FIT_SPLIT} and {split} "
                          f"(e.g. {sorted(shared)[:2]}): the {split} estimates are optimistic",
                          stacklevel=2)


def load_image_columns(run_dir: Path, mats: dict[str, LogitMatrix],
                       columns: tuple[str, ...] = ("video", "source")
                       ) -> dict[str, dict[str, np.ndarray]]:
    """Optional per-image columns of images.parquet (`video`, `source`), aligned with each
    split's rows; a column that is absent or has gaps is left out."""
    ipath = run_dir / IMAGES_FILE
    if not ipath.is_file():
        return {s: {} for s in mats}
    img = pd.read_parquet(ipath)
    have = [c for c in columns if c in img.columns]
    img = img.drop_duplicates(["split", "path"]).set_index(["split", "path"])
    out: dict[str, dict[str, np.ndarray]] = {}
    for split, m in mats.items():
        idx = pd.MultiIndex.from_arrays([np.full(len(m.paths), split, dtype=object),
                                         np.asarray(m.paths, dtype=object)])
        cols = img.reindex(idx)
        out[split] = {c: cols[c].astype(str).to_numpy() for c in have
                      if not cols[c].isna().any()}
    return out


@dataclass
class SplitScores:
    """Logit-scale scores of every predictor on one split (frames, or videos when
    `level` is "video"); `videos`/`sources` come from images.parquet when it has them."""

    split: str
    y: np.ndarray
    groups: np.ndarray
    paths: np.ndarray
    scores: dict[str, np.ndarray]
    videos: np.ndarray | None = None
    sources: np.ndarray | None = None
    level: str = "frame"
    source: str = "all"

    def subset(self, mask: np.ndarray, source: str) -> SplitScores:
        return SplitScores(self.split, self.y[mask], self.groups[mask], self.paths[mask],
                           {k: v[mask] for k, v in self.scores.items()}, None,
                           None if self.sources is None else self.sources[mask],
                           self.level, source)

    def to_videos(self, how: str) -> SplitScores:
        """Frame logits aggregated per video (see videolevel); bootstrap groups are kept."""
        keys, codes, first = V.unit_index(V.video_units(self.groups, self.y, self.videos))
        agg = {k: V.aggregate(v, codes, keys.size, how) for k, v in self.scores.items()}
        return SplitScores(self.split, self.y[first], self.groups[first], keys, agg, None,
                           None if self.sources is None else self.sources[first], "video")

    def by_source(self) -> list[SplitScores]:
        """One subset per source (when there are at least two). A source holding a single
        class is scored against every image of the other class in the split (e.g. one
        manipulation's fakes against all reals); a subset that is the whole split is left
        out."""
        if self.sources is None:
            return []
        names = sorted(set(self.sources.tolist()))
        out = []
        for name in names if len(names) > 1 else []:
            mask = self.sources == name
            if np.unique(self.y[mask]).size == 1:
                mask = mask | (self.y != self.y[mask][0])
            if not mask.all():  # e.g. the one source of all reals: its rows would be "all"
                out.append(self.subset(mask, name))
        return out

    def breakdown(self, how: str) -> list[SplitScores]:
        """This split at frame and video level, all sources and per source."""
        video = self.to_videos(how)
        return [self, *self.by_source(), video, *video.by_source()]


def evaluate_split(ss: SplitScores, kinds: dict[str, str], thresholds: dict[str, float],
                   best: str, n_boot: int, seed: int, alpha: float = 0.05,
                   warn: bool = True) -> pd.DataFrame:
    """One row per predictor: counts, metrics, group-bootstrap CIs, paired differences, their
    minimum detectable size (power.mdd) and the exact McNemar test against `best` (the best
    single model chosen on validation)."""
    codes, n_groups = M.group_codes(ss.groups)
    counts = (M.bootstrap_counts(n_groups, n_boot, seed).astype(np.float32) if n_boot > 0
              else None)
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
        row: dict[str, Any] = {"split": ss.split, "level": ss.level, "source": ss.source,
                               "predictor": name, "kind": kinds[name],
                               "threshold": thr, "n": r.pop("n"), "n_groups": n_groups,
                               "n_real": n_real, "n_fake": int(ss.y.size - n_real)}
        row.update(r)
        if counts is not None:
            bs = M.bootstrap_samples(ss.y, z, codes, counts, thr)
            boot[name] = bs
            for m in (*M.CI_METRICS, "ap"):
                row[f"{m}_lo"], row[f"{m}_hi"] = bs.ci(m, alpha)
        else:
            for m in (*M.CI_METRICS, "ap"):
                row[f"{m}_lo"] = row[f"{m}_hi"] = float("nan")
        rows.append(row)
    df = pd.DataFrame(rows)
    if one_class and warn:
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
        for m in ("acc", "auc"):
            e[f"mdd_{m}"] = (power.mdd(getattr(boot[name], m) - getattr(boot[best], m))
                             if counts is not None and name != best else float("nan"))
        extra.append(e)
    df = pd.concat([df, pd.DataFrame(extra)], axis=1)
    best_hi = float(df.loc[df.predictor == best, "acc_hi"].iloc[0])
    df["beats_best"] = df["d_acc_lo"] > 0
    df["acc_lo_above_best_hi"] = df["acc_lo"] > best_hi
    return df


COLUMNS = ["split", "level", "source", "predictor", "kind", "threshold", "n", "n_groups",
           "n_real", "n_fake", "tp", "tn", "fp", "fn", "acc", "tpr", "tnr", "ppv", "npv", "f1",
           "mcc", "auc", "ap", "eer", "logloss", "brier", "ece", "acc_lo", "acc_hi", "auc_lo",
           "auc_hi", "mcc_lo", "mcc_hi", "ap_lo", "ap_hi", "vs", "mcnemar_b", "mcnemar_c",
           "mcnemar_p", "d_acc", "d_acc_lo", "d_acc_hi", "d_auc", "d_auc_lo", "d_auc_hi",
           "d_mcc", "d_mcc_lo", "d_mcc_hi", "mdd_acc", "mdd_auc", "beats_best",
           "acc_lo_above_best_hi"]


@dataclass
class Comparison:
    """Everything the stack step decided and measured (what its writers write)."""

    models: list[str]
    learners: list[str]
    rule: str
    fitted: dict[str, Any]
    thresholds: dict[str, float]
    best: str
    kinds: dict[str, str]
    split_scores: dict[str, SplitScores]
    table: pd.DataFrame
    n_folds: int
    fit: SplitScores  # the fit split (in-sample base-model logits, labels, groups)
    claims: dict[str, Any] = field(default_factory=dict)  # power.claims (stack/claims.json)
    video_aggregate: str = "mean_logit"

    @property
    def recommended(self) -> str | None:
        return recommend(self.table, self.learners)


def fit_learners(learners: list[str], val: LogitMatrix, groups: np.ndarray, n_folds: int,
                 seed: int) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
    """Fit every meta-learner on the fit split, and score it out of fold (grouped folds)."""
    fitted: dict[str, Any] = {}
    oof: dict[str, np.ndarray] = {}
    folds = grouped_folds(val.y, groups, n_folds, seed)
    for name in learners:
        est = make_meta_learner(name, random_state=seed)
        fitted[name] = est.fit(val.X, val.y, groups=groups)
        oof[name], _ = oof_decision(est, val.X, val.y, groups, folds=folds)
    return fitted, oof, len(folds)


def evaluate_all(split_scores: dict[str, SplitScores], kinds: dict[str, str],
                 thresholds: dict[str, float], best: str, n_boot: int, seed: int,
                 video_aggregate: str) -> pd.DataFrame:
    """Every split at frame and video level, all sources and per source (frame/all rows
    first, with the seeds they always had)."""
    tables = []
    for i, ss in enumerate(split_scores.values()):
        frame_rows: dict[str, tuple[int, pd.DataFrame]] = {}
        for j, sub in enumerate(ss.breakdown(video_aggregate)):
            twin = frame_rows.get(sub.source) if sub.level == "video" else None
            if twin is not None and sub.y.size == twin[0]:
                # one frame per video: the video rows are the frame rows (the aggregate of
                # one logit is that logit), so no second bootstrap
                tables.append(twin[1].assign(level="video"))
                continue
            t = evaluate_split(sub, kinds, thresholds, best, n_boot, seed + i + 1000 * j,
                               warn=j == 0)
            if sub.level == "frame":
                frame_rows[sub.source] = (sub.y.size, t)
            tables.append(t)
    return pd.concat(tables, ignore_index=True)[COLUMNS]


def compare(mats: dict[str, LogitMatrix], groups: dict[str, np.ndarray], learners: list[str],
            rule: str, n_boot: int, n_folds: int, seed: int,
            log: Callable[[str], None] = lambda msg: None,
            extras: dict[str, dict[str, np.ndarray]] | None = None,
            video_aggregate: str = "mean_logit",
            min_effect: float = power.DEFAULT_MIN_EFFECT) -> Comparison:
    """Fit the meta-learners on FIT_SPLIT, choose thresholds and the best single model there,
    and score every single model and ensemble on every other split (out-of-fold on the fit
    split) with grouped-bootstrap CIs and paired tests against the best single model, at
    frame and video level and per source (`extras`: per split, images.parquet's `video` and
    `source` columns where present). Video rows use the frame thresholds."""
    V.check_aggregate(video_aggregate)
    extras = extras or {}
    val, gval = mats[FIT_SPLIT], groups[FIT_SPLIT]
    models = list(val.models)
    try:
        check_labels(val.y, val.y.size)
    except MetaLearnerError as e:
        raise StackError(f"split {FIT_SPLIT}: {e}") from None
    t0 = time.time()
    fitted, oof, folds = fit_learners(learners, val, gval, n_folds, seed)
    log(f"fitted {len(learners)} meta-learners (+{folds} grouped folds each) "
        f"in {time.time() - t0:.1f}s")
    kinds = {m: "single" for m in models} | {n: "ensemble" for n in learners}
    val_scores = {m: val.X[:, k] for k, m in enumerate(models)} | oof
    thresholds = {n: M.choose_threshold(rule, val.y, z) for n, z in val_scores.items()}
    best = choose_best_single(val.y, val.X, models, thresholds)
    ex = extras.get(FIT_SPLIT, {})
    split_scores = {OOF_SPLIT: SplitScores(OOF_SPLIT, val.y, gval, val.paths, val_scores,
                                           ex.get("video"), ex.get("source"))}
    for s, mat in mats.items():
        if s == FIT_SPLIT:
            continue
        sc = {m: mat.X[:, k] for k, m in enumerate(models)}
        sc |= {n: est.decision_function(mat.X) for n, est in fitted.items()}
        ex = extras.get(s, {})
        split_scores[s] = SplitScores(s, mat.y, groups[s], mat.paths, sc, ex.get("video"),
                                      ex.get("source"))
    t0 = time.time()
    table = evaluate_all(split_scores, kinds, thresholds, best, n_boot, seed, video_aggregate)
    log(f"scored {len(table)} rows (frame/video level, per source) in {time.time() - t0:.1f}s")
    fit = SplitScores(FIT_SPLIT, val.y, gval, val.paths, {})
    return Comparison(models, learners, rule, fitted, thresholds, best, kinds, split_scores,
                      table, folds, fit, power.claims(table, best, min_effect),
                      video_aggregate)
