"""The main job in one command: prepare -> base_train -> collect -> stack -> report.

python -m ensemble_dfd.pipeline --config experiments/cpu.toml --out RUN_DIR
python -m ensemble_dfd.pipeline --demo --out RUN_DIR

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
from ensemble_dfd import logits as store
from ensemble_dfd.cli_common import add_config_args, make_logger, resolve_config, run_main
from ensemble_dfd.config import ConfigError, RunConfig, dumps
from ensemble_dfd.data.synthetic import make_dataset
from ensemble_dfd.errors import UsageError, UserError
from ensemble_dfd.power import headline_rows
from ensemble_dfd.reports.training import markdown
from ensemble_dfd.rundir import CLAIMS_FILE, Run
from ensemble_dfd.runio import write_text

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


def _labels_of(folder: Path) -> Path:
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise UsageError(f"{folder}: no labels.csv (columns path,label[,source])")
    return labels


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
                 log: Callable[[str], None]) -> pd.DataFrame:
    p = cfg.pipeline
    total = (1 + bool(p.videos) + 2 * len(p.extra_videos) + len(p.extra_data) + bool(p.stack)
             + bool(p.report))
    n = 0
    data = Path(p.data) if p.data else None
    if p.videos:
        n += 1
        data = out / "dataset"
        if not (data / "manifest.csv").exists():
            _step(n, total, "prepare", prepare.main,
                  ["all", "--videos", p.videos, "--labels", p.labels, "--out", str(data),
                   "--config", str(config_path)], log)
    if data is None:
        raise ConfigError("the config's [pipeline] names no data = DIR nor videos = DIR")
    n += 1
    _step(n, total, "base_train", base_train.main,
          ["--data", str(data), "--out", str(out), "--config", str(config_path)]
          + (["--overwrite"] if overwrite else []), log)
    extras: dict[str, Path] = dict((k, Path(v)) for k, v in p.extra_data.items())
    for name, folder in p.extra_videos.items():
        n += 1
        faces = out / "extra" / name
        every = str(p.extra_every or cfg.prepare.every)
        if not (faces / "manifest.csv").exists():
            _step(n, total, "prepare", prepare.main,
                  ["all", "--videos", folder, "--labels", str(_labels_of(Path(folder))),
                   "--out", str(faces), "--config", str(config_path), "--every", every], log)
        extras[name] = faces
    have = set()
    if (out / store.LOGITS_FILE).exists():
        have = set(pd.read_parquet(out / store.LOGITS_FILE, columns=["split"])["split"])
    for name, folder in extras.items():
        n += 1
        if name in have and not overwrite:
            log(f"collect {name}: already in the store, skipping")
            continue
        _step(n, total, "collect", collect.main,
              ["--run", str(out), "--data", str(folder), "--as-split", name, "--overwrite"], log)
    if p.stack:
        n += 1
        if (out / "stack" / "comparison.csv").exists() and not overwrite:
            log(f"[{n}/{total}] stack: finished earlier, skipping")
        else:
            _step(n, total, "stack", stack.main,
                  ["--run", str(out)] + (["--overwrite"] if overwrite else []), log)
    if p.report:
        n += 1
        if (out / "report" / "index.html").exists() and not overwrite:
            log(f"[{n}/{total}] report: finished earlier, skipping")
        else:
            data_args = [a for d in [data, *extras.values()] for a in ("--data", str(d))]
            _step(n, total, "report", report.main,
                  ["--run", str(out), *data_args] + (["--overwrite"] if overwrite else []), log)
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
        if args.demo:
            data, wild = make_demo_data(args.out, cfg.seed)
            cfg = dataclasses.replace(cfg, pipeline=dataclasses.replace(
                cfg.pipeline, data=str(data), extra_data={"wild": str(wild)}))
        # the steps read one file, so --set overrides reach them through a resolved copy
        resolved = args.out / "pipeline_config.toml"
        write_text(resolved, dumps(cfg))
        try:
            table = run_pipeline(cfg, resolved, args.out, args.overwrite, log)
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


