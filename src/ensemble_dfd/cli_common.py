"""Small pieces every command-line entry point shares: logging, config flags, and the one
way a command exits (`run_main`: user errors in one line, bugs with their traceback)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ensemble_dfd.config import RunConfig, dumps, flags_win, load_config, parse_overrides
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


def record_config(run_dir: Path, cfg: RunConfig, overwrite: bool) -> None:
    """Write run_dir/config.toml; an existing one must describe the same run.

    Models may differ (one run folder can be filled by several --models calls), so may the
    [pipeline] inputs, and keys added to the code since the file was written take their
    defaults on both sides.
    """
    path = run_dir / "config.toml"
    if path.exists() and not overwrite:
        recorded = load_config(path)
        same_models = dataclasses.replace(recorded.train, models=cfg.train.models)
        recorded = dataclasses.replace(recorded, train=same_models, pipeline=cfg.pipeline,
                                       stack=cfg.stack)
        if recorded != cfg:
            raise RunExistsError(
                f"{path}: this run folder was made with a different config; use another "
                "--out, or --overwrite to replace its config")
        return
    write_text(path, dumps(cfg))


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
