"""Small pieces every command-line entry point shares: logging, config flags, and the one
way a command exits (`run_main`: user errors in one line, bugs with their traceback)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ensemble_dfd.config import (
    ConfigError,
    RunConfig,
    dumps,
    flags_win,
    load_config,
    load_recorded,
    parse_overrides,
)
from ensemble_dfd.errors import UserError
from ensemble_dfd.runio import RunExistsError, write_text


def make_logger(path: Path | None) -> Callable[[str], None]:
    """Print to stderr and append to `path` (the run's log), each line timestamped."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, file=sys.stderr, flush=True)
        if path is not None:
            with path.open("a") as fh:
                fh.write(line + "\n")

    return log


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="experiment TOML (experiments/*.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config value, e.g. --set train.lr_frozen=1e-3")


def resolve_config(args: argparse.Namespace, flags: dict[str, Any]) -> RunConfig:
    """Defaults < config file < --set overrides < dedicated flags (those not None).

    A dedicated flag the user typed wins for every model: it also replaces the file's
    per-model values of its key (`train.per_model`, `data.image_size_per_model`), while a
    --set of the same key leaves them (`--set train.per_model={}` empties the table)."""
    overrides = parse_overrides(args.set)
    typed = [dotted for dotted, value in flags.items() if value is not None]
    for dotted in typed:
        section, key = dotted.split(".")
        overrides.setdefault(section, {})[key] = flags[dotted]
    return flags_win(load_config(args.config, overrides), typed)


# Sections that say what is done with a run's models, not how they were made: a finished
# run may be resumed with other values there (a new [evaluate] set, another stack setting).
AFTER_TRAINING = ("pipeline", "evaluate", "stack", "report")


def record_config(run_dir: Path, cfg: RunConfig, overwrite: bool) -> None:
    """Write run_dir/config.toml; an existing one must describe the same run.

    Models may differ (one run folder can be filled by several --models calls), so may the
    trackers (train.tracking: where progress is logged, not what is trained), the
    sections in AFTER_TRAINING, and keys added to the code since the file was written take
    their defaults on both sides.
    """
    path = run_dir / "config.toml"
    if path.exists() and not overwrite:
        recorded = load_recorded(path)
        same = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                if f.name in AFTER_TRAINING}
        same_models = dataclasses.replace(recorded.train, models=cfg.train.models,
                                          tracking=cfg.train.tracking)
        recorded = dataclasses.replace(recorded, train=same_models, **same)
        recorded = _added_since(path, recorded, cfg)
        if recorded != cfg:
            differ = [f.name for f in dataclasses.fields(cfg)
                      if getattr(recorded, f.name) != getattr(cfg, f.name)]
            raise RunExistsError(
                f"{path}: this run folder was made with a different config (it differs in "
                f"{', '.join(differ)}); use another --out, or --overwrite to replace its "
                "config")
        return
    write_text(path, dumps(cfg))


def _added_since(path: Path, recorded: RunConfig, cfg: RunConfig) -> RunConfig:
    """``recorded`` with the keys its file lacks (added to the code since it was written,
    e.g. ``prepare.detect_size``) taken from ``cfg``, for the comparison only: the file is
    not rewritten, so the run keeps reading them as it was made."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return recorded
    changes = {}
    for f in dataclasses.fields(recorded):
        section = getattr(recorded, f.name)
        if not dataclasses.is_dataclass(section) or not isinstance(raw.get(f.name), dict):
            continue
        missing = {k.name: getattr(getattr(cfg, f.name), k.name)
                   for k in dataclasses.fields(section) if k.name not in raw[f.name]}
        if missing:
            changes[f.name] = dataclasses.replace(section, **missing)
    return dataclasses.replace(recorded, **changes) if changes else recorded


def dask_client(scheduler: str | None) -> tuple[Any, Any]:
    """``(distributed, client)``: the ``dask.distributed`` module and, when ``--scheduler
    ADDRESS`` is given, a client of that running scheduler (else None: the caller starts a
    local cluster). One ConfigError when dask is missing or the address does not answer;
    prepare's and base_train's Dask flags share this."""
    try:
        from dask import distributed
    except ImportError as exc:
        raise ConfigError("--scheduler/--dask-workers need dask[distributed] "
                          "(pip install -e '.[dask]')") from exc
    if not scheduler:
        return distributed, None
    try:
        return distributed, distributed.Client(scheduler, timeout="30s")
    except OSError as exc:
        raise ConfigError(f"--scheduler {scheduler}: cannot connect ({exc})") from exc


def say_done(lines: list[str], wrote: Path, t0: float) -> None:
    """A step's closing words on stdout: its summary lines, then what it wrote and when."""
    for line in lines:
        print(line)
    print(f"wrote {wrote} in {time.time() - t0:.1f}s")


def run_main(body: Callable[[], Any], short_warnings: bool = False) -> int:
    """Run a command's body. A `UserError` (every package error derives from it) becomes
    one line on stderr and exit code 2; any other exception is a bug and propagates with
    its traceback.

    short_warnings: every warning is printed once per occurrence as one `warning:` line,
    without the source line Python's default format adds.
    """
    try:
        with warnings.catch_warnings():
            if short_warnings:
                warnings.simplefilter("always")
                warnings.showwarning = _show_warning
            rc = body()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return rc if isinstance(rc, int) else 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)
