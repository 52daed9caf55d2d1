"""The `prepare` sub-commands and their argument parser."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from ensemble_dfd.cli_common import run_main
from ensemble_dfd.config import ConfigError, PrepareConfig, load_config, parse_overrides
from ensemble_dfd.data import faces as facelib
from ensemble_dfd.data.dataset import load_dataset
from ensemble_dfd.prepare.common import (
    NEAR_THRESHOLD,
    NothingUsable,
    Problems,
    file_sha256,
    finish_output,
    log,
    open_output,
    read_csv,
    write_csv,
)
from ensemble_dfd.prepare.extract import run_faces_stage, settings_from
from ensemble_dfd.prepare.plan import plan_images, plan_videos, read_labels
from ensemble_dfd.prepare.splitting import (
    dataset_stats,
    inspect_images,
    make_split,
    print_stats,
    split_items_from_faces,
    split_items_from_images,
)
from ensemble_dfd.runio import write_json


def stats_command(args: argparse.Namespace) -> int:
    df = load_dataset(args.dataset)  # DatasetError -> exit 2
    problems = Problems()
    info = inspect_images([Path(f) for f in df["file"]], problems, args.workers)
    keep = [r is not None for r in info]
    df = df.loc[keep].reset_index(drop=True)
    df = pd.concat([df, pd.DataFrame([r for r in info if r is not None],
                                     columns=["width", "height", "sha256", "dhash"])], axis=1)
    stats = dataset_stats(df, args.near_threshold)
    print(f"dataset {args.dataset}: {len(df)} images" +
          (f" ({len(problems)} unreadable, skipped)" if problems else ""))
    print_stats(stats, args.near_threshold)
    return 0


def resolve(args: argparse.Namespace) -> tuple[PrepareConfig, int]:
    """Config file < --set < dedicated flags; returns the prepare config and the seed."""
    overrides = parse_overrides(getattr(args, "set", []) or [])
    flags = {"every": args.every, "every_seconds": args.every_seconds,
             "frames_per_video": args.frames_per_video,
             "max_width": args.max_width, "detector": args.detector,
             "upsample": args.upsample, "margin": args.margin,
             "ratios": args.ratios, "jpeg_quality": args.jpeg_quality}
    sampling = ("every", "every_seconds", "frames_per_video")
    if any(flags[k] is not None for k in sampling):  # a typed way to pick frames is the one
        for key in ("every_seconds", "frames_per_video"):
            flags[key] = 0 if flags[key] is None else flags[key]
    if args.keep_all_faces:
        flags["one_face_only"] = False
    if args.balance:
        flags["balance"] = True
    for key, value in flags.items():
        if value is not None:
            overrides.setdefault("prepare", {})[key] = value
    if args.seed is not None:
        overrides["seed"] = args.seed
    cfg = load_config(args.config, overrides)
    p = cfg.prepare
    if (p.every < 1 or p.every_seconds < 0 or p.max_width < 0 or p.upsample < 0
            or p.margin < 0 or p.frames_per_video < 0):
        raise ConfigError("--every must be >= 1; --every-seconds, --frames-per-video, "
                          "--max-width, --upsample and --margin must be >= 0")
    return p, cfg.seed


def _params(cfg: PrepareConfig, seed: int, save_frames: bool, **inputs: Any) -> dict[str, Any]:
    settings = asdict(cfg)
    if not settings["frames_per_video"]:  # outputs made before the key existed still match
        del settings["frames_per_video"]
    return {**settings, "seed": seed, "save_frames": save_frames, **inputs}


def _finished_before(args: argparse.Namespace, command: str, params: dict[str, Any]) -> bool:
    """Open --out for `command`; True (and says so) when this very run finished earlier."""
    if open_output(args.out, command, params, args.overwrite) != "done":
        return False
    log(f"{args.out}: this run is already finished; nothing to do (--overwrite to redo)")
    return True


def _finish(out: Path, problems: Problems, summary: dict[str, Any]) -> None:
    write_json(out / "report.json", {**summary, "problems": problems.items})
    finish_output(out)


def frames_command(args: argparse.Namespace) -> int:
    cfg, seed = resolve(args)
    problems = Problems()
    labels = read_labels(args.labels, problems) if args.labels else None
    tasks = plan_videos(args.videos, labels, problems, args.labels)
    if not tasks:
        raise NothingUsable(f"{args.videos}: no video to read")
    params = _params(cfg, seed, True, videos=str(args.videos.resolve()),
                     labels=file_sha256(args.labels) if args.labels else "")
    if _finished_before(args, "frames", params):
        return 0
    table = _extract(args, "frames", tasks, settings_from(cfg, True, detect=False), problems)
    if table.empty:
        raise NothingUsable("no frame could be read")
    return 0


def _extract(args: argparse.Namespace, stage: str, tasks: list, settings: Any,
             problems: Problems) -> pd.DataFrame:
    """Run the per-video stage, record what it made, and say so."""
    table = run_faces_stage(args.out, tasks, settings, args.workers, problems, _mapper(args))
    _finish(args.out, problems, {stage: len(table), "videos": len(tasks)})
    made = "frame(s)" if stage == "frames" else "crop(s)"
    where = "" if stage == "frames" else f"; per-video log in {args.out / 'face_log.csv'}"
    log(f"{stage}: {len(table)} {made} from {len(tasks)} video(s) in {args.out}; "
        f"{len(problems)} problem(s){where}")
    return table


def faces_command(args: argparse.Namespace) -> int:
    cfg, seed = resolve(args)
    problems = Problems()
    labels = read_labels(args.labels, problems) if args.labels else None
    if (args.videos is None) == (args.frames is None):
        raise ConfigError("faces: give exactly one of --videos DIR or --frames DIR")
    if args.videos is not None:
        tasks = plan_videos(args.videos, labels, problems, args.labels)
        src = args.videos
    else:
        tasks = plan_images(args.frames, labels, problems, args.labels)
        src = args.frames
    if not tasks:
        raise NothingUsable(f"{src}: nothing to detect faces in")
    params = _params(cfg, seed, args.save_frames, input=str(src.resolve()),
                     labels=file_sha256(args.labels) if args.labels else "")
    if _finished_before(args, "faces", params):
        return 0
    table = _extract(args, "faces", tasks, settings_from(cfg, args.save_frames), problems)
    if table.empty:
        raise NothingUsable("no face was found")
    return 0


def split_command(args: argparse.Namespace) -> int:
    cfg, seed = resolve(args)
    problems = Problems()
    if (args.faces is None) == (args.images is None):
        raise ConfigError("split: give exactly one of --faces DIR or --images DIR")
    if args.faces is not None:
        items = split_items_from_faces(args.faces, problems)
        src = args.faces
    else:
        if args.labels is None:
            raise ConfigError("split --images needs --labels CSV (path,label[,source][,group])")
        items = split_items_from_images(args.images, read_labels(args.labels, problems),
                                        problems, args.labels)
        src = args.images
    if items.empty:
        raise NothingUsable(f"{src}: no labelled image to split")
    params = _params(cfg, seed, False, input=str(src.resolve()),
                     labels=file_sha256(args.labels) if args.labels else "")
    # A split takes seconds: an unfinished one is simply redone.
    if _finished_before(args, "split", params):
        return 0
    manifest = make_split(items, args.out, cfg, seed, problems, args.workers)
    return _after_split(args.out, manifest, problems, args.near_threshold, {})


def _after_split(out: Path, manifest: pd.DataFrame, problems: Problems, near_threshold: int,
                 summary: dict[str, Any]) -> int:
    stats = dataset_stats(manifest, near_threshold)
    write_csv(out / "composition.csv", stats["composition"])
    leak = pd.concat([stats["exact"].assign(kind="identical"),
                      stats["near"].assign(kind="near")], ignore_index=True)
    write_csv(out / "leakage.csv", leak)
    counts = manifest.groupby("split").size().to_dict()
    _finish(out, problems, {**summary, "images": len(manifest), "per_split": counts,
                            "groups_across_splits": stats["groups_across_splits"],
                            "identical_across_splits": len(stats["exact"]),
                            "near_duplicates_across_splits": len(stats["near"])})
    print(f"dataset {out}: {len(manifest)} images; {len(problems)} input(s) skipped "
          "(see report.json)")
    print_stats(stats, near_threshold)
    return 0


def all_command(args: argparse.Namespace) -> int:
    cfg, seed = resolve(args)
    problems = Problems()
    labels = read_labels(args.labels, problems)
    tasks = plan_videos(args.videos, labels, problems, args.labels)
    if not tasks:
        raise NothingUsable(f"{args.videos}: no labelled video to process")
    params = _params(cfg, seed, args.save_frames, videos=str(args.videos.resolve()),
                     labels=file_sha256(args.labels))
    if _finished_before(args, "all", params):
        return 0
    faces_dir = args.out / "faces"
    faces_dir.mkdir(parents=True, exist_ok=True)
    table = run_faces_stage(faces_dir, tasks, settings_from(cfg, args.save_frames),
                            args.workers, problems, _mapper(args))
    if table.empty:
        raise NothingUsable("no face was found in any video")
    items = split_items_from_faces(faces_dir, problems)
    manifest = make_split(items, args.out, cfg, seed, problems, args.workers)
    face_log = read_csv(faces_dir / "face_log.csv")
    return _after_split(args.out, manifest, problems, args.near_threshold,
                        {"videos": len(tasks),
                         "videos_failed": int((face_log["status"] != "done").sum()),
                         "faces": len(table)})


def _mapper(args: argparse.Namespace) -> Any:
    """The Dask mapper when --scheduler or --dask-workers is given, else None (local pool)."""
    if not (args.scheduler or args.dask_workers):
        return None
    from ensemble_dfd.prepare.dask_map import DaskTarget, dask_mapper

    return dask_mapper(DaskTarget(args.scheduler or "", args.dask_workers or 0))


def _ratios(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace("/", ",").split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"ratios: {text!r} is not numbers") from exc
    if len(values) != 3:
        raise argparse.ArgumentTypeError("ratios: give three numbers, e.g. 0.8,0.19,0.01")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ensemble_dfd.prepare",
        description="Videos -> frames -> face crops -> grouped train/validation/test splits.")
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("settings (default: the study's; --config file, then flags)")
    g.add_argument("--config", type=Path, help="experiment TOML ([prepare] table, seed)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set prepare.every=60")
    pick = g.add_mutually_exclusive_group()
    pick.add_argument("--every", type=int, help="keep one frame every N frames (120)")
    pick.add_argument("--every-seconds", type=float,
                      help="keep one frame every S seconds instead")
    pick.add_argument("--frames-per-video", type=int, metavar="N",
                      help="keep N frames spread uniformly over each video instead (32 in "
                           "DeepfakeBench and icpr2020dfdc; all frames of a shorter video)")
    g.add_argument("--max-width", type=int, help="downscale wider frames to this width (640)")
    g.add_argument("--detector", choices=facelib.DETECTORS, help="dlib HOG (default) or CNN")
    g.add_argument("--upsample", type=int, help="times to upsample before detecting (1)")
    g.add_argument("--margin", type=float,
                   help="border added on each side of dlib's tight face box, as a fraction "
                        "of its height (top/bottom) and width (left/right): the crop is "
                        "(1 + 2 x margin) x the box. 0 (default) = the study's tight box; "
                        "0.15 = 1.3x, DeepfakeBench's crop scale (which it applies to a "
                        "landmark-aligned face; prepare does not align)")
    g.add_argument("--keep-all-faces", action="store_true",
                   help="keep every face (default: only frames with exactly one face)")
    g.add_argument("--ratios", type=_ratios, help="train,validation,test (0.80,0.19,0.01)")
    g.add_argument("--balance", action="store_true", help="equal classes within each split")
    g.add_argument("--seed", type=int, help="split seed (config seed, 1234)")
    g.add_argument("--jpeg-quality", type=int, help="JPEG quality of saved crops/frames (95)")
    g.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="map videos over a running Dask cluster, e.g. tcp://host:8786 "
                        "(workers must see --out at the same path)")
    g.add_argument("--dask-workers", type=int, metavar="N",
                   help="map videos over a local Dask cluster of N worker processes")
    g.add_argument("--overwrite", action="store_true",
                   help="replace this command's outputs in a non-empty --out")
    g.add_argument("--near-threshold", type=int, default=NEAR_THRESHOLD,
                   help=f"dHash bits: at most this many differ = near-duplicate "
                        f"({NEAR_THRESHOLD})")

    p = sub.add_parser("frames", parents=[common], help="videos -> frames (JPEG)")
    p.add_argument("--videos", type=Path, required=True)
    p.add_argument("--labels", type=Path, help="CSV path,label[,source] (carried along)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=frames_command)

    p = sub.add_parser("faces", parents=[common], help="videos or frames -> face crops")
    p.add_argument("--videos", type=Path, help="folder of videos (frames stay in memory)")
    p.add_argument("--frames", type=Path, help="a `prepare frames` output or image folder")
    p.add_argument("--labels", type=Path, help="CSV path,label[,source][,group]")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--save-frames", action="store_true", help="also write kept frames as JPEG")
    p.set_defaults(func=faces_command)

    p = sub.add_parser("split", parents=[common], help="labelled crops -> dataset layout")
    p.add_argument("--faces", type=Path, help="a `prepare faces` output (faces.csv)")
    p.add_argument("--images", type=Path, help="folder of labelled images (needs --labels)")
    p.add_argument("--labels", type=Path, help="CSV path,label[,source][,group]")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=split_command)

    p = sub.add_parser("stats", help="composition table and cross-split leakage check")
    p.add_argument("dataset", type=Path, help="dataset folder (manifest.csv or layout)")
    p.add_argument("--near-threshold", type=int, default=NEAR_THRESHOLD)
    p.add_argument("--workers", type=int, default=0)
    p.set_defaults(func=stats_command)

    p = sub.add_parser("all", parents=[common], help="videos + labels -> dataset")
    p.add_argument("--videos", type=Path, required=True)
    p.add_argument("--labels", type=Path, required=True, help="CSV path,label[,source]")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--save-frames", action="store_true", help="also write kept frames as JPEG")
    p.set_defaults(func=all_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    return run_main(lambda: int(args.func(args)))

if __name__ == "__main__":
    sys.exit(main())
