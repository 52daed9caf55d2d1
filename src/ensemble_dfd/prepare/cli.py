"""The `prepare` sub-commands and their argument parser."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from ensemble_dfd.cli_common import run_main
from ensemble_dfd.config import (
    ALIGNS,
    FRAME_RULES,
    ConfigError,
    PrepareConfig,
    load_config,
    parse_overrides,
)
from ensemble_dfd.data import faces as facelib
from ensemble_dfd.data import manifest as mf
from ensemble_dfd.data.dataset import load_dataset
from ensemble_dfd.datasets import DESCRIPTIONS, IMAGE_DATASETS, READERS, Index, Options
from ensemble_dfd.datasets import read_dataset as read_layout
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
from ensemble_dfd.prepare.faceimages import items_from_index
from ensemble_dfd.prepare.plan import (
    plan_dataset,
    plan_images,
    plan_videos,
    read_index,
    read_labels,
    write_index,
)
from ensemble_dfd.prepare.recipe import with_crop_of
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
             "upsample": args.upsample, "detect_size": args.detect_size,
             "margin": args.margin,
             "ratios": args.ratios, "jpeg_quality": args.jpeg_quality,
             "align": args.align, "frame_rule": args.frame_rule}
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
    # outputs made before these keys existed still match while they keep their defaults
    for key, default in (("frames_per_video", 0), ("detect_size", 0), ("align", "none"),
                         ("frame_rule", "round")):
        if settings[key] == default:
            del settings[key]
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


def _read_layout(args: argparse.Namespace) -> Index | None:
    """The dataset reader's index for --dataset NAME --root ROOT (None without --dataset);
    logs what it read and what the download lacks."""
    if not getattr(args, "dataset", None):
        if getattr(args, "videos", None) is None and getattr(args, "frames", None) is None:
            raise ConfigError("give --videos DIR (with --labels CSV) or --dataset NAME "
                              "--root ROOT")
        return None
    if args.root is None:
        raise ConfigError(f"--dataset {args.dataset} needs --root ROOT (its download folder)")
    if args.videos is not None or args.labels is not None:
        raise ConfigError("--dataset reads ROOT's own labels and splits: drop --videos/--labels")
    index = read_layout(args.dataset, args.root, Options(
        args.compression or "", tuple(m for m in (args.methods or "").split(",") if m),
        str(args.splits or ""), args.part_splits or "", str(getattr(args, "index", "") or "")))
    log(index.summary())
    for note in index.notes:
        log(f"note: {note}")
    for m in index.missing[:10]:
        log(f"missing: {m.path}: {m.reason}")
    if len(index.missing) > 10:
        log(f"missing: ... {len(index.missing) - 10} more (all in missing.csv)")
    return index


def _layout_inputs(args: argparse.Namespace) -> dict[str, Any]:
    return {"dataset": args.dataset, "root": str(Path(args.root).resolve()),
            "compression": args.compression or "", "methods": args.methods or "",
            "splits": str(args.splits or ""), "part_splits": args.part_splits or "",
            **({"index": file_sha256(args.index)} if getattr(args, "index", None) else {})}


def _record_layout(out: Path, index: Index) -> dict[str, Any]:
    """index.csv/index.json and missing.csv in OUT; the report's summary of them."""
    write_index(out, index)
    write_csv(out / "missing.csv", pd.DataFrame([asdict(m) for m in index.missing],
                                                columns=["path", "reason"]))
    return {"dataset": index.dataset, "videos_listed": len(index.rows),
            "missing": len(index.missing), "missing_files": [asdict(m) for m in index.missing],
            "notes": index.notes}


def _tasks(args: argparse.Namespace, problems: Problems, what: str
           ) -> tuple[list[Any], Index | None, dict[str, Any]]:
    """The videos to process: from --dataset's reader, else --videos and --labels."""
    index = _read_layout(args)
    if index is not None:
        return plan_dataset(index), index, _layout_inputs(args)
    labels = read_labels(args.labels, problems) if args.labels else None
    tasks = plan_videos(args.videos, labels, problems, args.labels)
    if not tasks:
        raise NothingUsable(f"{args.videos}: {what}")
    return tasks, None, {"videos": str(args.videos.resolve()),
                         "labels": file_sha256(args.labels) if args.labels else ""}


def _no_detection(index: Index | None, command: str) -> None:
    if index is not None and index.dataset in IMAGE_DATASETS:
        raise ConfigError(f"--dataset {index.dataset} holds face crops already (no frames or "
                          f"detection): use `prepare all` (or import-dfb), not `{command}`")


def frames_command(args: argparse.Namespace) -> int:
    cfg, seed = resolve(args)
    problems = Problems()
    tasks, index, inputs = _tasks(args, problems, "no video to read")
    _no_detection(index, "frames")
    if not tasks:
        raise NothingUsable(f"{args.root}: no video to read")
    params = _params(cfg, seed, True, **inputs)
    if _finished_before(args, "frames", params):
        return 0
    if index is not None:
        args.layout_summary = _record_layout(args.out, index)
    table = _extract(args, "frames", tasks, settings_from(cfg, True, detect=False), problems)
    if table.empty:
        raise NothingUsable("no frame could be read")
    return 0


def _extract(args: argparse.Namespace, stage: str, tasks: list, settings: Any,
             problems: Problems) -> pd.DataFrame:
    """Run the per-video stage, record what it made, and say so."""
    table = run_faces_stage(args.out, tasks, settings, args.workers, problems, _mapper(args))
    _finish(args.out, problems, {stage: len(table), "videos": len(tasks),
                                 **getattr(args, "layout_summary", {})})
    made = "frame(s)" if stage == "frames" else "crop(s)"
    where = "" if stage == "frames" else f"; per-video log in {args.out / 'face_log.csv'}"
    log(f"{stage}: {len(table)} {made} from {len(tasks)} video(s) in {args.out}; "
        f"{len(problems)} problem(s){where}")
    return table


def faces_command(args: argparse.Namespace) -> int:
    cfg, seed = resolve(args)
    problems = Problems()
    if sum(x is not None for x in (args.videos, args.frames, args.dataset)) != 1:
        raise ConfigError("faces: give exactly one of --videos DIR, --frames DIR or "
                          "--dataset NAME --root ROOT")
    if args.frames is None:
        tasks, index, inputs = _tasks(args, problems, "nothing to detect faces in")
        _no_detection(index, "faces")
        src = args.root or args.videos
    else:
        labels = read_labels(args.labels, problems) if args.labels else None
        tasks, index, src = plan_images(args.frames, labels, problems, args.labels), None, \
            args.frames
        inputs = {"input": str(src.resolve()),
                  "labels": file_sha256(args.labels) if args.labels else ""}
    if not tasks:
        raise NothingUsable(f"{src}: nothing to detect faces in")
    params = _params(cfg, seed, args.save_frames, **inputs)
    if _finished_before(args, "faces", params):
        return 0
    facelib.check_detector(cfg.detector)
    if index is not None:
        args.layout_summary = _record_layout(args.out, index)
    elif args.frames is not None and read_index(args.frames)[0] is not None:
        for name in ("index.csv", "index.json"):  # `frames --dataset` ran first: keep its index
            shutil.copy2(args.frames / name, args.out / name)
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
        cfg = with_crop_of(args.faces, cfg)  # the dataset records how its faces were made
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
    fill = read_index(args.faces)[1] if args.faces is not None else mf.SPLITS
    manifest = make_split(items, args.out, cfg, seed, problems, args.workers, fill)
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
    if args.dataset is None and args.labels is None:
        raise ConfigError("all: --videos DIR needs --labels CSV (or give --dataset NAME "
                          "--root ROOT)")
    tasks, index, inputs = _tasks(args, problems, "no labelled video to process")
    if not tasks:
        raise NothingUsable(f"{args.root}: no video to process")
    params = _params(cfg, seed, args.save_frames, **inputs)
    if _finished_before(args, "all", params):
        return 0
    facelib.check_detector(cfg.detector)
    faces_dir = args.out / "faces"
    faces_dir.mkdir(parents=True, exist_ok=True)
    summary = _record_layout(faces_dir, index) if index is not None else {}
    if index is not None:
        write_csv(args.out / "missing.csv", read_csv(faces_dir / "missing.csv"))
    if index is not None and index.dataset in IMAGE_DATASETS:
        items = items_from_index(index, faces_dir / "crops", cfg.frames_per_video, problems)
        summary.update(videos=len(tasks), faces=len(items))
    else:
        items, counts = _detect(args, cfg, tasks, faces_dir, problems)
        summary.update(videos=len(tasks), **counts)
    if items.empty:
        raise NothingUsable("no labelled face to split")
    manifest = make_split(items, args.out, cfg, seed, problems, args.workers,
                          index.fill if index is not None else mf.SPLITS)
    return _after_split(args.out, manifest, problems, args.near_threshold, summary)


def import_dfb_command(args: argparse.Namespace) -> int:
    """`all` over a DeepfakeBench index. Its frames are DeepfakeBench's aligned crops of
    dlib HOG faces (upsampled once, on the frame as read), picked by linspace(dtype=int):
    that recipe is recorded (unless flags say otherwise), so runs trained on them detect,
    crop and pick new media the same way. Set here, not with set_defaults: the
    sub-commands share the parent parser's actions."""
    dfb = {"align": "dfb", "frame_rule": "floor", "detector": "hog", "upsample": 1,
           "detect_size": 0, "max_width": 0}
    for key, value in dfb.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return all_command(args)


def _detect(args: argparse.Namespace, cfg: PrepareConfig, tasks: list[Any], faces_dir: Path,
            problems: Problems) -> tuple[pd.DataFrame, dict[str, int]]:
    """Faces of every video into FACES_DIR; the split items and the face log's counts."""
    table = run_faces_stage(faces_dir, tasks, settings_from(cfg, args.save_frames),
                            args.workers, problems, _mapper(args))
    if table.empty:
        raise NothingUsable("no face was found in any video")
    items = split_items_from_faces(faces_dir, problems)
    face_log = read_csv(faces_dir / "face_log.csv")
    return items, {"videos_failed": int((face_log["status"] != "done").sum()),
                   "faces": len(table)}


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


def _common_parser() -> argparse.ArgumentParser:
    """The settings every sub-command that makes faces shares."""
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
    g.add_argument("--detector", choices=facelib.DETECTORS,
                   help="BlazeFace (default: MediaPipe's, packaged, under ONNX Runtime), dlib HOG "
                        "(the study's), or dlib's CNN")
    g.add_argument("--upsample", type=int, help="times to upsample before detecting (1; "
                   "with --detect-size 0)")
    g.add_argument("--detect-size", type=int, metavar="PX",
                   help="detect on a copy of the frame whose longer side is PX (no further "
                        "upsampling), boxes mapped back; 0 = the study's search (upsample x "
                        "on the frame). Default from [prepare] detect_size")
    g.add_argument("--margin", type=float,
                   help="border added on each side of dlib's tight face box, as a fraction "
                        "of its height (top/bottom) and width (left/right): the crop is "
                        "(1 + 2 x margin) x the box. 0 (default) = the study's tight box; "
                        "0.15 = 1.3x, DeepfakeBench's crop scale (which it applies to a "
                        "landmark-aligned face: see --align)")
    g.add_argument("--align", choices=ALIGNS,
                   help="the crop: 'none' (default) = the detector's box (with --margin); "
                        "'dfb' = DeepfakeBench's: five dlib landmarks, similarity transform "
                        "to its template, 1.3x, 256 x 256 px (with --max-width 0: its crop, "
                        "from the full frame); recorded, predict/serve crop new media the "
                        "same way")
    g.add_argument("--frame-rule", choices=FRAME_RULES,
                   help="how --frames-per-video positions become frames: 'round' (default) "
                        "or 'floor' = DeepfakeBench's np.linspace(0, n-1, N, dtype=int)")
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
    return common


def _layout_parser() -> argparse.ArgumentParser:
    """--dataset NAME --root ROOT and the readers' options."""
    layout = argparse.ArgumentParser(add_help=False)
    g = layout.add_argument_group(
        "a public dataset in its own download layout (instead of --videos/--labels)")
    g.add_argument("--dataset", choices=[n for n in READERS if n != "dfb"],
                   help="; ".join(f"{n}: {d}" for n, d in DESCRIPTIONS.items() if n != "dfb"))
    g.add_argument("--root", type=Path, help="the dataset's download folder")
    g.add_argument("--compression", help="FF++/DFD compression level: raw, c23 (default), c40")
    g.add_argument("--methods", help="comma-separated methods to read (FF++: Deepfakes,"
                                     "Face2Face,FaceSwap,NeuralTextures,FaceShifter; default "
                                     "every one on disk)")
    g.add_argument("--splits", type=Path, metavar="DIR",
                   help="FF++: folder of the official train/val/test.json (ROOT/splits)")
    g.add_argument("--part-splits", metavar="SPEC",
                   help="DFDC: parts per split (train=0-34,validation=35-39,test=40-49), or "
                        "'group' for a grouped split by --ratios (DFD: 'group' splits it "
                        "instead of all-test)")
    return layout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ensemble_dfd.prepare",
        description="Videos -> frames -> face crops -> grouped train/validation/test splits.")
    sub = parser.add_subparsers(dest="command", required=True)
    common, layout = _common_parser(), _layout_parser()
    p = sub.add_parser("frames", parents=[common, layout], help="videos -> frames (JPEG)")
    p.add_argument("--videos", type=Path)
    p.add_argument("--labels", type=Path, help="CSV path,label[,source] (carried along)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=frames_command)

    p = sub.add_parser("faces", parents=[common, layout],
                       help="videos or frames -> face crops")
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

    p = sub.add_parser("all", parents=[common, layout],
                       help="videos + labels (or --dataset) -> dataset")
    p.add_argument("--videos", type=Path)
    p.add_argument("--labels", type=Path, help="CSV path,label[,source][,group][,split]")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--save-frames", action="store_true", help="also write kept frames as JPEG")
    p.set_defaults(func=all_command)
    p = sub.add_parser("import-dfb", parents=[common],
                       help="a DeepfakeBench dataset JSON and its frames -> dataset")
    p.add_argument("index", type=Path, help="DeepfakeBench dataset JSON (rearrange.py's)")
    p.add_argument("--root", type=Path, required=True,
                   help="folder its relative frame paths start from")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--compression", help="keep only this FF++ level (c23, ...) of the index")
    p.set_defaults(func=import_dfb_command, dataset="dfb", videos=None, labels=None,
                   methods=None, splits=None, part_splits=None, save_frames=False)
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
