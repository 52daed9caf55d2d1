"""The main job in one command: prepare -> base_train -> collect -> stack -> report.

Every [evaluate] set of the config (a dataset folder or manifest, or a folder of videos
made into faces by prepare) is collected as its own split; a finished run that gains a set
only collects that set, then redoes stack and report.

python -m ensemble_dfd.pipeline --config experiments/cpu.toml --out RUN_DIR
python -m ensemble_dfd.pipeline --demo --out RUN_DIR
    [--dask-workers N | --scheduler ADDRESS] [--gpus-per-model K]  (prepare's videos and
    base_train's models as Dask tasks, see ensemble_dfd.training.cluster; without the
    flags, [pipeline] dask_workers = N asks for a local cluster: the demo's is 2)

Each step is the step's own command (called in-process), so everything the steps write is
what they write when run alone; finished steps are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ensemble_dfd import base_train, collect, prepare, report, stack
from ensemble_dfd.cli_common import add_config_args, make_logger, resolve_config, run_main
from ensemble_dfd.config import ConfigError, EvalSet, RunConfig, dumps
from ensemble_dfd.data.synthetic import make_dataset
from ensemble_dfd.datasets import Options, read_dataset
from ensemble_dfd.errors import UserError
from ensemble_dfd.reports.training import markdown
from ensemble_dfd.rundir import CLAIMS_FILE, Run
from ensemble_dfd.runio import write_text
from ensemble_dfd.stacking import logits as store
from ensemble_dfd.stacking.power import headline_rows
from ensemble_dfd.training.cluster import (
    ClusterTarget,
    add_cluster_args,
    configured_target,
    target_from_args,
)
from ensemble_dfd.training.mlflow_tracking import require_mlflow
from ensemble_dfd.training.tracking import configured_trackers

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "experiments" / "demo.toml"


class StepFailed(UserError, RuntimeError):
    """A chained step exited non-zero; its own message was printed above."""


def _step(n: int, total: int, name: str, fn: Callable[[list[str]], int], argv: list[str],
          log: Callable[[str], None]) -> None:
    log(f"[{n}/{total}] {name}: python -m ensemble_dfd.{name} {' '.join(argv)}")
    t0 = time.perf_counter()
    rc = fn(argv)
    if rc != 0:
        raise StepFailed(f"step {name} failed with exit code {rc}")
    log(f"[{n}/{total}] {name} finished in {time.perf_counter() - t0:.0f} s")


def _labels_of(es: EvalSet) -> Path:
    return Path(es.labels) if es.labels else Path(es.videos) / "labels.csv"


def layout_args(dataset: str, root: str, compression: str = "", methods: str = "",
                part_splits: str = "") -> list[str]:
    """`prepare all` flags reading a public dataset's download with its reader."""
    return ["--dataset", dataset, "--root", root,
            *(["--compression", compression] if compression else []),
            *(["--methods", methods] if methods else []),
            *(["--part-splits", part_splits] if part_splits else [])]


def unreadable_layout(es: EvalSet) -> str:
    """Why a `dataset = NAME` set cannot be read ('' when it can): its root is absent or
    matches no layout of that dataset (the reader's own message)."""
    if not Path(es.root).exists():
        return f"{es.root}: no such folder"
    try:
        read_dataset(es.dataset, Path(es.root), Options(
            es.compression, tuple(m for m in es.methods.split(",") if m), "",
            es.part_splits))
    except UserError as exc:
        return str(exc)
    return ""


def check_eval_sets(cfg: RunConfig, config_path: Path) -> None:
    """Every [evaluate] input exists, checked before hours of training, naming the key
    (an `optional` dataset set that cannot be read is skipped later, with a line)."""
    for name, es in cfg.evaluate.items():
        where = f"{config_path}: evaluate.{name}"
        if es.dataset and not es.optional:
            why = unreadable_layout(es)
            if why:
                raise ConfigError(f"{where}: {why} (optional = true skips a set that is "
                                  "not downloaded)")
        if es.data and not Path(es.data).exists():
            raise ConfigError(f"{where}: {es.data}: no such dataset folder or manifest")
        if es.videos and not Path(es.videos).is_dir():
            raise ConfigError(f"{where}: {es.videos}: no such folder of videos")
        if es.videos and not _labels_of(es).is_file():
            raise ConfigError(f"{where}: {_labels_of(es)}: no labels CSV (path,label[,source]); "
                              "name it with labels = FILE")


class _Steps:
    """Numbered step lines in the run's log: `[n/total] name: ...`."""

    def __init__(self, total: int, log: Callable[[str], None]):
        self.n, self.total, self.log = 0, total, log

    def run(self, name: str, fn: Callable[[list[str]], int], argv: list[str]) -> None:
        self.n += 1
        _step(self.n, self.total, name, fn, argv, self.log)

    def skip(self, name: str, why: str) -> None:
        self.n += 1
        self.log(f"[{self.n}/{self.total}] {name}: {why}")


def eval_faces(cfg: RunConfig, config_path: Path, out: Path, steps: _Steps
               ) -> dict[str, tuple[Path, str]]:
    """Each [evaluate] set as (dataset folder or manifest, split or ''): a video set is made
    into faces in OUT/extra/<name> by `prepare all` first (which does nothing when that
    folder holds a finished run with the same settings, and refuses other settings)."""
    sets: dict[str, tuple[Path, str]] = {}
    for name, es in cfg.evaluate.items():
        if es.data:
            sets[name] = (Path(es.data), es.split)
            continue
        faces = out / "extra" / name
        pick = (["--frames-per-video", str(es.frames_per_video)] if es.frames_per_video
                else ["--every", str(es.every)] if es.every else [])
        if es.dataset:
            why = unreadable_layout(es) if es.optional else ""
            if why:
                steps.skip("prepare", f"evaluate.{name} skipped (optional, not readable: "
                                      f"{why})")
                steps.skip("collect", f"evaluate.{name} skipped")
                continue
            inputs = layout_args(es.dataset, es.root, es.compression, es.methods,
                                 es.part_splits)
        else:
            inputs = ["--videos", es.videos, "--labels", str(_labels_of(es))]
        steps.run("prepare", prepare.main,
                  ["all", *inputs, "--out", str(faces), "--config", str(config_path), *pick])
        sets[name] = (faces, es.split if es.dataset else "")
    return sets


def collect_sets(sets: dict[str, tuple[Path, str]], out: Path, overwrite: bool,
                 steps: _Steps) -> None:
    """Score each evaluation set with every finished model that has no logits on it yet."""
    refs = list(Run(out).trained_models())
    for name, (folder, split) in sets.items():
        todo = base_train.uncollected(out, refs, [name], overwrite)
        if not todo:
            steps.skip("collect", f"{name}: every model's logits are in the store, skipping")
            continue
        steps.run("collect", collect.main,
                  ["--run", str(out), "--data", str(folder), "--as-split", name,
                   "--models", ",".join(todo), *(["--split", split] if split else []),
                   *(["--overwrite"] if overwrite else [])])


def _older(target: Path, than: Path) -> bool:
    """make's rule: `target` is missing or older than its input `than`."""
    return not target.exists() or (than.exists()
                                   and target.stat().st_mtime_ns < than.stat().st_mtime_ns)


def make_demo_data(out: Path, seed: int) -> tuple[Path, Path]:
    """Synthetic faces: a dataset, and a shifted 'wild' set (other identities, smaller
    and more compressed faces) to show how extra splits flow through the pipeline."""
    data, wild = out / "demo_data" / "synthetic-faces", out / "demo_data" / "synthetic-wild"
    if not (data / "manifest.csv").exists():
        make_dataset(data, identities=80, frames=5, seed=seed)
    if not (wild / "manifest.csv").exists():
        make_dataset(wild, identities=8, frames=4, ratios=(0.0, 0.0, 1.0),
                     size_range=(40, 64), seed=seed + 1)
    return data, wild


def summary_table(run_dir: Path) -> pd.DataFrame:
    """Per split (frame level, all sources): the best single model (chosen on validation)
    and every ensemble, with the smallest ΔACC/ΔAUC the split can detect."""
    run = Run(run_dir)
    comp = headline_rows(pd.read_csv(run.stack_dir / "comparison.csv"))
    best = run.best_single(store.read_store(run_dir))
    keep = comp[(comp["kind"] == "ensemble") | (comp["predictor"] == best)]
    keep = keep[keep["split"] != "validation"]
    cols = [c for c in ("split", "predictor", "kind", "n", "acc", "acc_lo", "acc_hi", "auc",
                        "auc_lo", "auc_hi", "mcc", "mcc_lo", "mcc_hi", "d_acc_lo", "mdd_acc",
                        "mdd_auc", "beats_best") if c in keep.columns]
    return keep[cols].reset_index(drop=True)


def summary_header(run_dir: Path) -> str:
    """The stack's headline and the splits too small to judge a claim (stack/claims.json);
    empty for a stack run before claims.json existed."""
    path = Run(run_dir).stack_dir / CLAIMS_FILE
    if not path.is_file():
        return ""
    claims = json.loads(path.read_text())
    small = [f"{s} (n={i['n']}, {i['n_groups']} groups, can detect ΔACC >= {i['mdd_acc']:.3f})"
             for s, i in claims.get("splits", {}).items() if not i.get("large_enough")]
    return (f"**{claims.get('headline', '')}**\n\nSplits too small to judge a claim "
            f"(minimum detectable ΔACC > {claims.get('min_effect')}): "
            f"{', '.join(small) if small else 'none'}.\n\n")


def run_pipeline(cfg: RunConfig, config_path: Path, out: Path, overwrite: bool,
                 log: Callable[[str], None],
                 cluster: ClusterTarget | None = None) -> pd.DataFrame:
    """prepare (videos) -> base_train -> prepare + collect for each [evaluate] set -> stack ->
    report. Finished work is skipped: models by base_train, evaluation sets already in the
    store, and stack/report unless their input changed since they ran (make's rule).
    With a `cluster`, prepare maps its videos and base_train its models over it."""
    p = cfg.pipeline
    n_videos = sum(bool(es.videos or es.dataset) for es in cfg.evaluate.values())
    steps = _Steps(1 + bool(p.videos or p.dataset) + n_videos + len(cfg.evaluate)
                   + bool(p.stack) + bool(p.report), log)
    data = Path(p.data) if p.data else None
    if p.videos or p.dataset:
        data = out / "dataset"
        inputs = (layout_args(p.dataset, p.root, p.compression, p.methods)
                  + (["--splits", p.splits] if p.splits else []) if p.dataset
                  else ["--videos", p.videos, "--labels", p.labels])
        if (data / "manifest.csv").exists():
            steps.skip("prepare", f"{data} is finished, skipping")
        else:
            steps.run("prepare", prepare.main,
                      ["all", *inputs, "--out", str(data), "--config", str(config_path)]
                      + (cluster.argv(gpus=False) if cluster else []))
    if data is None:
        raise ConfigError("the config's [pipeline] names no data = DIR nor videos = DIR")
    sets = eval_faces(cfg, config_path, out, steps)  # minutes; before hours of training
    steps.run("base_train", base_train.main,
              ["--data", str(data), "--out", str(out), "--config", str(config_path)]
              + (["--overwrite"] if overwrite else []) + (cluster.argv() if cluster else []))
    collect_sets(sets, out, overwrite, steps)
    comparison = out / "stack" / "comparison.csv"
    if p.stack:
        if overwrite or _older(comparison, out / store.LOGITS_FILE):
            steps.run("stack", stack.main, ["--run", str(out), "--overwrite"])
        else:
            steps.skip("stack", "finished earlier and the store has not changed, skipping")
    if p.report:
        index = out / "report" / "index.html"
        if overwrite or _older(index, out / store.LOGITS_FILE) or _older(index, comparison):
            folders = [f.parent if f.is_file() else f
                       for f in [data, *(folder for folder, _ in sets.values())]]
            data_args = [a for d in dict.fromkeys(folders) for a in ("--data", str(d))]
            steps.run("report", report.main, ["--run", str(out), *data_args, "--overwrite"])
        else:
            steps.skip("report", "finished earlier and its inputs have not changed, skipping")
    table = summary_table(out)
    write_text(out / "pipeline_summary.csv", table.to_csv(index=False))
    write_text(out / "pipeline_summary.md", summary_header(out) + markdown(table, ".3f"))
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ensemble_dfd.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--demo", action="store_true",
                   help="synthetic faces and tiny models (experiments/demo.toml), no download")
    add_config_args(p)
    p.add_argument("--overwrite", action="store_true", help="redo finished steps")
    add_cluster_args(p)
    args = p.parse_args(argv)

    def body() -> int:
        if args.demo:
            args.config = args.config or DEMO_CONFIG
        if args.config is None:
            p.error("give --config FILE or --demo")
        log = make_logger(args.out / "pipeline.log")
        t0 = time.perf_counter()
        args.out.mkdir(parents=True, exist_ok=True)
        cfg = resolve_config(args, {})
        cluster = configured_target(target_from_args(args), cfg.pipeline.dask_workers, log)
        check_eval_sets(cfg, args.config)
        require_mlflow(configured_trackers(cfg.train))  # not after hours of prepare
        if args.demo:
            data, wild = make_demo_data(args.out, cfg.seed)
            cfg = dataclasses.replace(
                cfg, pipeline=dataclasses.replace(cfg.pipeline, data=str(data)),
                evaluate={**cfg.evaluate, "wild": EvalSet(data=str(wild))})
        # the steps read one file, so --set overrides reach them through a resolved copy
        resolved = args.out / "pipeline_config.toml"
        write_text(resolved, dumps(cfg))
        try:
            table = run_pipeline(cfg, resolved, args.out, args.overwrite, log, cluster)
        except UserError as exc:  # also into the run's log
            log(f"error: {exc}")
            return 2
        log(f"pipeline finished in {(time.perf_counter() - t0) / 60:.1f} min; summary "
            f"({args.out / 'pipeline_summary.md'}):\n" + summary_header(args.out)
            + markdown(table, ".3f"))
        return 0

    return run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())


