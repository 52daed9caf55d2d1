"""`python -m ensemble_dfd.stack --run RUN_DIR`: fit meta-learners on the validation logits
and compare every single model with every ensemble on every other split.

Reads RUN_DIR/logits.parquet (and RUN_DIR/images.parquet for the `group`, and where present
the `video` and `source`, of each image; RUN_DIR/config.toml's [stack] section for the video
aggregate and min_effect), writes RUN_DIR/stack/: comparison.csv/.md (rows per split, level
frame/video and source all/each source; AP, EER, CIs, paired Δ and its minimum detectable
size), claims.json (who beats the best single model on every split large enough to tell),
cross_dataset.csv, weights.csv, predictions.parquet (one row per image, one logit column
per predictor; thresholds in stack.json), roc_<split>.png, metrics_ci_<split>.png,
learners/<name>.json (each learner as data: class, parameters, fitted state), stack.json,
env.json.
Rows of split `validation_oof` use out-of-fold predictions (folds grouped by video), so no
learner is ever scored on rows it was fit on. Everything is built in a temporary folder and
renamed into place, so an error leaves no partial output. No TensorFlow here.

`python -m ensemble_dfd.stack --logits TABLE --out DIR`: the same on logits from elsewhere
(a CSV or parquet table: model, split, path, label, logit; optional run, group, source),
first imported into DIR as a run folder (DIR/logits.parquet, DIR/images.parquet).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from ensemble_dfd.cli_common import run_main, say_done
from ensemble_dfd.config import StackConfig
from ensemble_dfd.ensemble import META_LEARNERS
from ensemble_dfd.reports.comparison import write_stack
from ensemble_dfd.rundir import FIT_SPLIT, OOF_SPLIT, STACK_DIR, Run
from ensemble_dfd.runio import guard_overwrite, staged_dir
from ensemble_dfd.stacking import metrics as M
from ensemble_dfd.stacking.comparison import (
    StackError,
    compare,
    load_groups,
    load_image_columns,
    warn_shared_groups,
)
from ensemble_dfd.stacking.logits import StoreError, logit_matrix, model_sort_key, read_store
from ensemble_dfd.stacking.logits_table import add_input_args, import_for_command
from ensemble_dfd.stacking.videolevel import AGGREGATES
from ensemble_dfd.training.tracking import track_comparison


def _log(msg: str) -> None:
    print(f"[stack {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ensemble_dfd.stack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p, "with --logits: the run folder to write")
    p.add_argument("--models", help="comma-separated model refs (default: all in the store)")
    p.add_argument("--learners", help="comma-separated meta-learners (default: all: "
                   + ", ".join(META_LEARNERS) + ")")
    p.add_argument("--threshold", default="fixed",
                   help="fixed (logit 0 = sigmoid 0.5, the study), eer, or fpr:<rate>; "
                        "eer/fpr thresholds are chosen on validation (out-of-fold for ensembles)")
    p.add_argument("--bootstrap", type=int, default=1000, help="group resamples for CIs (0: none)")
    p.add_argument("--folds", type=int, default=5, help="grouped folds for out-of-fold scores")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--video-aggregate", choices=AGGREGATES,
                   help="frame logits -> video logit (default: the run config's "
                        "stack.video_aggregate, mean_logit)")
    p.add_argument("--min-effect", type=float,
                   help="a split is large enough to judge a claim when its minimum detectable "
                        "ΔACC is <= this (default: the run config's stack.min_effect, 0.03)")
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
    argv = list(argv if argv is not None else sys.argv[1:])
    rule = M.parse_threshold_rule(args.threshold)
    if args.bootstrap < 0:
        raise StackError("--bootstrap must be >= 0")
    if args.folds < 2:
        raise StackError("--folds must be >= 2")
    if args.logits is not None:
        args.run = import_for_command(args.logits, args.out, args.fit_split, args.overwrite,
                                      STACK_DIR, "stack comparison", args.logits_format,
                                      args.dfb_data)
    elif args.out is not None or args.fit_split != FIT_SPLIT:
        raise StackError("--out and --fit-split go with --logits (a run folder's fit split is "
                         f"'{FIT_SPLIT}')")
    rd = Run(args.run)
    guard_overwrite(rd.stack_dir, args.overwrite, "stack comparison")  # fail before any work
    sc = rd.config().stack if rd.config_path.is_file() else StackConfig()
    min_effect = args.min_effect if args.min_effect is not None else sc.min_effect
    if not 0.0 < min_effect < 1.0:
        raise StackError(f"--min-effect must be in (0, 1), got {min_effect}")
    learners = _split_list(args.learners) or list(sc.learners) or list(META_LEARNERS)
    unknown = [n for n in learners if n not in META_LEARNERS]
    if unknown:
        raise StackError(f"unknown meta-learner(s) {', '.join(unknown)} (have: "
                         f"{', '.join(META_LEARNERS)})")
    df = read_store(rd.path)
    splits = list(dict.fromkeys(df["split"]))
    if FIT_SPLIT not in splits:
        raise StoreError(f"{rd.path}: the store has no '{FIT_SPLIT}' split to fit on (has: "
                         f"{', '.join(splits)})")
    models = _split_list(args.models) or sorted(
        df.loc[df.split == FIT_SPLIT, "model"].unique(), key=model_sort_key)
    clash = set(models) & set(learners)
    if clash:
        raise StackError(f"names used both as model and meta-learner: {sorted(clash)}")
    eval_splits = [s for s in sorted(splits) if s != FIT_SPLIT]
    mats = {s: logit_matrix(df, s, models) for s in [FIT_SPLIT, *eval_splits]}
    groups = load_groups(rd.path, mats)
    warn_shared_groups(groups)
    _log(f"{len(models)} models, {len(learners)} meta-learners; fit on {FIT_SPLIT} "
         f"({mats[FIT_SPLIT].y.size} images, {np.unique(groups[FIT_SPLIT]).size} groups), "
         f"evaluate on {', '.join([OOF_SPLIT, *eval_splits])}")
    result = compare(mats, groups, learners, rule, args.bootstrap, args.folds, args.seed, _log,
                     load_image_columns(rd.path, mats), args.video_aggregate or sc.video_aggregate,
                     min_effect)
    _log(f"evaluated {len(result.split_scores)} splits x {len(result.kinds)} predictors "
         f"({args.bootstrap} group resamples) in {time.time() - t0:.1f}s")
    runs = sorted(df["run"].astype(str).unique().tolist())
    with staged_dir(rd.stack_dir, args.overwrite, "stack comparison") as tmp:
        lines = write_stack(tmp, result, rd.path, runs, args.bootstrap, args.seed, argv,
                            time.time() - t0)
    tracking = rd.config().train.tracking if rd.config_path.is_file() else ["tensorboard"]
    # train.tracking = [] turns it off (README)
    track_comparison(rd.path, tracking, result.table, result.claims.get("headline", ""), _log)
    say_done(lines, rd.stack_dir, t0)
    return result.table


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: run(parse_args(argv), argv), short_warnings=True)


if __name__ == "__main__":
    sys.exit(main())
