"""`python -m ensemble_dfd.report --run RUN_DIR [--data DIR]...`: per-image disagreement,
diversity, blur/size attribution and the degradation (intervention) study, as one offline
HTML page plus CSV tables and PNG figures in RUN_DIR/report/.

Reads RUN_DIR/logits.parquet, RUN_DIR/images.parquet (image properties, written by collect)
and RUN_DIR/stack/ (thresholds, best single model, meta-learners). The intervention study
needs the images and the trained models: store paths are `<dataset folder>/<relative
path>`, so give each dataset folder (or a folder holding several) with --data.
`--logits TABLE --out DIR` reports on logits from elsewhere (see `ensemble_dfd.stack`),
without the degradation study. Everything is written into a temporary folder and renamed
into place. TensorFlow is loaded
only by the intervention study.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ensemble_dfd.analysis import attribution as A
from ensemble_dfd.analysis import disagreement as D
from ensemble_dfd.analysis import intervention as IV
from ensemble_dfd.analysis.report_analysis import (
    PROPERTIES,
    SplitResult,
    analyse_split,
    intervention_findings,
    learner_scores,
    split_props,
)
from ensemble_dfd.cli_common import run_main, say_done
from ensemble_dfd.errors import UserError
from ensemble_dfd.reports.report_page import (
    build_html,
    front_matter,
    make_thumbnails,
    write_intervention,
    write_split,
)
from ensemble_dfd.rundir import CLAIMS_FILE, FIT_SPLIT, REPORT_DIR, Run
from ensemble_dfd.runio import environment, guard_overwrite, staged_dir, write_json
from ensemble_dfd.stacking.logits import (
    LogitMatrix,
    StoreError,
    logit_matrix,
    model_sort_key,
    read_store,
)
from ensemble_dfd.stacking.logits_table import add_input_args, import_for_command


class ReportError(UserError, ValueError):
    """Input the report cannot use (explained in the message)."""


def _log(msg: str) -> None:
    print(f"[report {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _warn(msg: str) -> None:
    warnings.warn(msg, stacklevel=2)


# ---------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ensemble_dfd.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p, "with --logits: the run folder to write (run `python -m "
                   "ensemble_dfd.stack --logits TABLE --out DIR` first for the comparison; no "
                   "degradation study: it needs the images and models)")
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


@dataclass
class Inputs:
    """What the report reads from the run folder, checked before any analysis."""

    run: Run
    splits: list[str]
    mats: dict[str, LogitMatrix]
    models: list[str]
    images: pd.DataFrame | None
    best: str | None
    comparison: pd.DataFrame | None = None
    claims: dict | None = None
    inter_splits: list[str] = field(default_factory=list)
    steps: list[IV.Step] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def thresholds(self) -> dict[str, float]:
        return self.run.stack.thresholds if self.run.stack else {}

    @property
    def learners(self) -> list[str]:
        return self.run.stack.learners if self.run.stack else []

    @property
    def primary(self) -> str | None:
        return self.run.stack.primary if self.run.stack else None


def _check_args(args: argparse.Namespace) -> None:
    if args.bins < 1:
        raise ReportError("--bins must be >= 1")
    if args.batch_size < 1:
        raise ReportError("--batch-size must be >= 1")
    for name in ("hard_real", "hard_fake"):
        v = getattr(args, name)
        if v is not None and not 0.0 <= v <= 1.0:
            raise ReportError(f"--{name.replace('_', '-')} must be a share in [0, 1], got {v}")


def load_inputs(args: argparse.Namespace, run: Run) -> Inputs:
    """The store's splits, the per-image table and the stack's decisions."""
    df = read_store(run.path)
    have = list(dict.fromkeys(sorted(df["split"].unique())))
    splits = _list(args.splits, "--splits") or [s for s in have if s != FIT_SPLIT] or have
    absent = [s for s in splits if s not in have]
    if absent:
        raise StoreError(f"{run.path}: no logits for split(s) {', '.join(absent)} (have: "
                         f"{', '.join(have)})")
    images = None
    if run.images_path.is_file():
        images = pd.read_parquet(run.images_path)
    else:
        _warn(f"{run.images_path} is absent: no image properties, so no attribution or sizes")
    if run.stack is None:
        _warn(f"{run.stack_dir} is absent: thresholds 0, no meta-learners; run "
              "`python -m ensemble_dfd.stack` first for the full report")
    mats = {s: logit_matrix(df, s) for s in splits}
    models = sorted(set().union(*(m.models for m in mats.values())), key=model_sort_key)
    return Inputs(run, splits, mats, models, images, run.best_single(df),
                  *read_stack_tables(run))


def read_stack_tables(run: Run) -> tuple[pd.DataFrame | None, dict | None]:
    """stack/comparison.csv and stack/claims.json, each None when absent."""
    comp, claims = run.stack_dir / "comparison.csv", run.stack_dir / CLAIMS_FILE
    table = None
    if comp.is_file():
        try:
            table = pd.read_csv(comp)
        except (ValueError, OSError) as exc:
            raise ReportError(f"{comp}: not a readable CSV ({exc})") from exc
        need = {"split", "predictor", "kind", "n", "n_groups", "d_acc", "d_acc_lo",
                "d_acc_hi", "d_auc", "d_auc_lo", "d_auc_hi"}
        if need - set(table.columns):
            raise ReportError(f"{comp}: lacks column(s) "
                              f"{', '.join(sorted(need - set(table.columns)))}; re-run "
                              "`python -m ensemble_dfd.stack --overwrite`")
    if not claims.is_file():
        return table, None
    try:
        info = json.loads(claims.read_text())
    except (ValueError, OSError) as exc:
        raise ReportError(f"{claims}: not readable JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise ReportError(f"{claims}: expected a JSON object, got {type(info).__name__}")
    return table, info


def plan_images(args: argparse.Namespace, inp: Inputs) -> None:
    """The intervention's splits and steps, and every image file it and the thumbnails need
    (all found under --data), checked before any analysis."""
    need: list[str] = []
    if not args.no_intervention:
        inp.inter_splits = _list(args.intervention_splits, "--intervention-splits") or (
            ["test"] if "test" in inp.splits else inp.splits[:1])
        bad = [s for s in inp.inter_splits if s not in inp.splits]
        if bad:
            raise ReportError(f"--intervention-splits {', '.join(bad)} not among the reported "
                              f"splits ({', '.join(inp.splits)})")
        inp.steps = IV.make_steps(_list(args.degradations, "--degradations"),
                                  IV.parse_levels(args.levels))
        trained = inp.run.trained_models()
        for s in inp.inter_splits:
            lacking = [m for m in inp.mats[s].models if m not in trained]
            if lacking:
                raise ReportError(f"the intervention needs the trained models, but "
                                  f"{inp.run.models_dir} has none for "
                                  f"{', '.join(lacking)}; pass --no-intervention")
        need += [str(p) for s in inp.inter_splits for p in inp.mats[s].paths]
    if args.thumbnails:
        need += [str(p) for s in inp.splits for p in inp.mats[s].paths]
    if not need:
        return
    why = "the intervention" if not args.no_intervention else "--thumbnails"
    if not args.data:
        raise ReportError(f"{why} needs the images: pass --data DIR (a dataset folder, or "
                          "a folder holding them), or --no-intervention")
    uniq = list(dict.fromkeys(need))
    found, missing = IV.resolve_files(uniq, args.data)
    if missing:
        raise ReportError(f"{why}: {len(missing)} of {len(uniq)} images not found under "
                          f"--data {', '.join(map(str, args.data))}, e.g. {missing[0]} "
                          "(a store path is <dataset folder name>/<relative path>)")
    inp.files = dict(zip(uniq, found, strict=True))  # type: ignore[arg-type]


def analyse(args: argparse.Namespace, inp: Inputs) -> list[SplitResult]:
    results = []
    for s in inp.splits:
        mat = inp.mats[s]
        r = analyse_split(s, mat, split_props(inp.images, s, mat.paths),
                          learner_scores(inp.run, s, mat, _warn), inp.thresholds, inp.best,
                          inp.primary, _hard_thresholds(s, args.hard_real, args.hard_fake),
                          args.bins)
        results.append(r)
        _log(f"{s}: {len(r.per_image)} images, {len(r.hard)} hard, oracle accuracy "
             f"{r.diversity.summary['oracle_accuracy']:.3f}")
    return results


def intervene(args: argparse.Namespace, inp: Inputs) -> pd.DataFrame | None:
    """The degradation study on each intervention split (None when not asked for)."""
    frames = []
    for s in inp.inter_splits:
        mat = inp.mats[s]
        idx = IV.subsample(mat.y, args.intervention_limit, args.seed)
        learners = (inp.run.load_learners(mat.models, inp.learners, _warn)
                    if inp.run.stack else {})
        _log(f"intervention on {s}: {idx.size} images x {len(inp.steps)} steps, "
             f"{len(mat.models)} models, {len(learners)} meta-learners")
        res, _ = IV.run_intervention(inp.run.path, s,
                                     [inp.files[str(p)] for p in mat.paths[idx]],
                                     mat.y[idx], mat.models, inp.steps, inp.thresholds,
                                     learners, args.batch_size, not args.no_progress)
        frames.append(res)
    return pd.concat(frames, ignore_index=True) if frames else None


def write_report(folder: Path, args: argparse.Namespace, inp: Inputs,
                 results: list[SplitResult], inter: pd.DataFrame | None,
                 findings: list[str], command: str, seconds: float) -> None:
    figs = {r.split: write_split(folder, r, inp.best, inp.primary) for r in results}
    inter_figs = ([] if inter is None else
                  write_intervention(folder, inter, len(inp.inter_splits), inp.best))
    front = front_matter(folder, inp.comparison, inp.claims, inter, inter_figs, inp.best,
                         inp.primary)
    thumbs = ({r.split: make_thumbnails(r.hard, inp.files) for r in results}
              if args.thumbnails else None)
    meta = {"command": command, "models": inp.models, "learners": inp.learners,
            "best": inp.best, "findings": findings}
    build_html(inp.run.path, folder, results, figs, inter, meta, thumbs, front)
    write_json(folder / "summary.json", {
        "command": command, "splits": inp.splits, "models": inp.models,
        "learners": inp.learners, "best_single": inp.best, "primary_ensemble": inp.primary,
        "thresholds": inp.thresholds, "thumbnails": bool(args.thumbnails),
        "diversity": {r.split: r.diversity.summary for r in results},
        "hard_thresholds": {r.split: {"real": r.thresholds.real,
                                      "fake": r.thresholds.fake} for r in results},
        "n_hard": {r.split: len(r.hard) for r in results},
        "answers": [{"key": a.key, "verdict": a.verdict, "headline": a.headline,
                     "details": list(a.details)} for a in front.answers],
        "intervention": {"splits": inp.inter_splits, "limit": args.intervention_limit,
                         "steps": [vars(s) for s in inp.steps]},
        "findings": findings, "skipped": [f for f in findings if f.startswith("Skipped ")],
        "seconds": round(seconds, 2)})
    write_json(folder / "env.json", environment({"command": command.split()}))


def _imported_run(args: argparse.Namespace) -> list[str]:
    """With --logits: import the table into --out (args.run becomes it) and skip the
    degradation study; returns what is skipped and why."""
    if args.logits is None:
        if args.out is not None or args.fit_split != FIT_SPLIT:
            raise ReportError("--out and --fit-split go with --logits")
        return []
    args.run = import_for_command(args.logits, args.out, args.fit_split, args.overwrite,
                                  REPORT_DIR, "report", args.logits_format,
                                  args.dfb_data)
    args.no_intervention = True
    return ["the degradation (blur/size/JPEG intervention) study: a logits table comes "
            "without the images and trained models it re-scores"]


def _skipped_attribution(inp: Inputs) -> list[str]:
    img = inp.images
    if img is not None and any(c in img.columns and img[c].notna().any()
                               for c in PROPERTIES):
        return []
    return ["the blur/size attribution: the per-image table has no image properties "
            f"({', '.join(PROPERTIES)})"]


def run(args: argparse.Namespace, argv: list[str] | None = None) -> Path:
    t0 = time.time()
    skipped = _imported_run(args)
    rd = Run(args.run)
    if not rd.path.is_dir():
        raise ReportError(f"{rd.path}: no such run folder")
    guard_overwrite(rd.report_dir, args.overwrite, "report")  # fail before any work
    _check_args(args)
    inp = load_inputs(args, rd)
    skipped += _skipped_attribution(inp)
    for what in skipped:
        _log(f"skipped {what}")
    plan_images(args, inp)  # everything the intervention and thumbnails need, checked first
    results = analyse(args, inp)
    inter = intervene(args, inp)
    findings = [f for r in results for f in r.findings]
    if inter is not None:
        findings += intervention_findings(inter, inp.best, inp.primary)
    findings += [f"Skipped {what}." for what in skipped]
    command = "python -m ensemble_dfd.report " + " ".join(
        argv if argv is not None else sys.argv[1:])
    with staged_dir(rd.report_dir, args.overwrite, "report") as tmp:
        write_report(tmp, args, inp, results, inter, findings, command, time.time() - t0)
    say_done(findings, rd.report_dir / "index.html", t0)
    return rd.report_dir


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: run(parse_args(argv), argv), short_warnings=True)


if __name__ == "__main__":
    sys.exit(main())
