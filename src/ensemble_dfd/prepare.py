"""``python -m ensemble_dfd.prepare``: videos -> frames -> face crops -> grouped splits.

Sub-commands (each usable alone)::

    frames --videos DIR [--labels CSV] --out DIR    kept frames as JPEG + frames.csv
    faces  (--videos DIR | --frames DIR) [--labels CSV] --out DIR
                                                    crops/<video>/<video><frame>F.jpg,
                                                    faces.csv and the per-video face_log.csv
    split  (--faces DIR | --images DIR --labels CSV) --out DIR
                                                    train|validation|test/Fake|Real + manifest.csv
    stats  DATASET_DIR                              composition table + leakage check
    all    --videos DIR --labels CSV --out DIR      faces (in OUT/faces) + split + stats

Face log columns: ``frames_read`` = frames the reader walked through, ``frames_kept`` = frames
selected by --every/--every-seconds, ``faces_saved``, ``dropped_no_face``,
``dropped_multi_face``, ``unreadable`` (bad image files), ``error``, ``status``.

Groups (for `all` and `faces` on videos): a video is its own group, except a fake named
``<a>_<b>`` (FaceForensics++ style, 519_515 = video 519 with the face of 515) whose parts
are stems of real videos in the same input: it joins their group (see manifest.video_groups).

Output folders: an empty or new ``--out`` starts a run and records it in ``.prepare.json``.
Rerunning with the same settings resumes an unfinished run (videos already in the face log
are skipped) and does nothing for a finished one. Anything else in a non-empty ``--out``
is refused unless ``--overwrite`` (which removes this command's outputs, nothing else).

Exit code 0 when the run finished, even with skipped inputs (listed in report.json);
2 when nothing usable was produced or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from ensemble_dfd.config import ConfigError, PrepareConfig, load_config, parse_overrides
from ensemble_dfd.data import faces as facelib
from ensemble_dfd.data import frames as framelib
from ensemble_dfd.data import manifest as mf
from ensemble_dfd.data.dataset import DatasetError, load_dataset, parse_label
from ensemble_dfd.data.images import IMAGE_SUFFIXES, ImageReadError, read_rgb
from ensemble_dfd.runio import RunExistsError, guard_overwrite, read_json, write_json, write_text

MARKER = ".prepare.json"
# Aligned face crops look alike to a 64-bit dHash: on dfd-mini, pairs 3-4 bits apart are
# different people; re-encoded or rescaled copies of one image stay within 2.
NEAR_THRESHOLD = 2
LOG_COLUMNS = ("video", "label", "source", "group", "frames_read", "frames_kept", "faces_saved",
               "dropped_no_face", "dropped_multi_face", "unreadable", "error", "status")
FACE_COLUMNS = ("path", "video", "frame_index", "label", "source", "group",
                "top", "right", "bottom", "left", "width", "height")
FRAME_COLUMNS = ("path", "video", "frame_index", "label", "source", "group")
# What each command may write into --out: --overwrite removes these and nothing else.
OUTPUTS = {
    "frames": ("frames", "frames.csv", "frame_log.csv", "report.json", "prepare.log"),
    "faces": ("crops", "frames", "faces.csv", "face_log.csv", "report.json", "prepare.log"),
    "split": ("train", "validation", "test", "manifest.csv", "composition.csv",
              "leakage.csv", "report.json", "prepare.log"),
}
OUTPUTS["all"] = tuple(dict.fromkeys(("faces",) + OUTPUTS["split"]))


class NothingUsable(RuntimeError):
    """The run finished but produced nothing (exit code 2)."""


# ---------------------------------------------------------------- small helpers


def log(msg: str) -> None:
    # tqdm.write keeps messages from breaking a progress bar in a terminal
    tqdm.write(msg, file=sys.stderr)


def bar(iterable: Iterable[Any] | None = None, **kw: Any) -> tqdm:
    # disable=None: bars in a terminal, silent in logs and tests
    return tqdm(iterable, disable=None, file=sys.stderr, dynamic_ncols=True, **kw)


def label_text(label: int) -> str:
    return mf.class_name(label) if label in (0, 1) else ""


def write_csv(path: Path, df: pd.DataFrame) -> None:
    write_text(path, df.to_csv(index=False))


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _sorted(df: pd.DataFrame, key: str) -> pd.DataFrame:
    # workers finish in any order; files on disk should not depend on it
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def file_sha256(path: Path) -> str:
    return mf.sha256_file(path) if path.is_file() else ""


@dataclass
class Problems:
    """Inputs skipped, each with a message naming the file; printed as found."""

    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, path: str | Path, reason: str, kind: str = "skipped") -> None:
        self.items.append({"path": str(path), "reason": reason, "kind": kind})
        log(f"{kind}: {path}: {reason}")

    def __len__(self) -> int:
        return len(self.items)


# ---------------------------------------------------------------- output folder rules


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def open_output(out: Path, command: str, params: dict[str, Any], overwrite: bool) -> str:
    """Decide what to do with ``out``: 'fresh' (new run), 'resume' (same settings, not
    finished) or 'done' (same settings, finished). Raises RunExistsError when ``out`` holds
    anything else and ``overwrite`` is not set."""
    params = _jsonable(params)
    marker = out / MARKER
    if overwrite and out.exists():
        for name in (*OUTPUTS[command], MARKER):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    if marker.is_file() and not overwrite:
        try:
            old = read_json(marker)
        except (OSError, ValueError):
            old = {}
        if old.get("command") == command and old.get("params") == params:
            return "done" if old.get("status") == "finished" else "resume"
        if old.get("status") != "finished":
            changed = sorted(k for k in set(params) | set(old.get("params", {}))
                             if params.get(k) != old.get("params", {}).get(k))
            raise RunExistsError(
                f"{out}: holds an unfinished `prepare {old.get('command')}` run with other "
                f"settings ({', '.join(changed) or 'command'} differ); rerun it with the same "
                "settings to resume, or pass --overwrite to start again")
    guard_overwrite(out, overwrite, what="prepare output")
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"command": command, "params": params, "status": "running"})
    return "fresh"


def finish_output(out: Path) -> None:
    marker = out / MARKER
    data = read_json(marker)
    data["status"] = "finished"
    write_json(marker, data)


# ---------------------------------------------------------------- inputs


def read_labels(path: Path, problems: Problems) -> pd.DataFrame:
    """Labels CSV ``path,label[,source][,group]`` -> rows with label 0/1; bad rows skipped."""
    if not path.is_file():
        raise ConfigError(f"{path}: labels CSV not found")
    try:
        df = read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ConfigError(f"{path}: not a readable CSV ({exc})") from exc
    missing = {"path", "label"} - set(df.columns)
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(sorted(missing))} "
                          "(expected path,label[,source][,group])")
    rows = []
    seen: set[str] = set()
    for i, rec in enumerate(df.to_dict("records")):
        where = f"{path} row {i + 2}"
        p = str(rec["path"]).strip()
        if not p:
            problems.add(where, "empty path")
            continue
        try:
            label = parse_label(rec["label"], where)
        except DatasetError as exc:
            problems.add(p, str(exc), "missing label")
            continue
        if p in seen:
            problems.add(p, f"listed twice in {path}; first row kept")
            continue
        seen.add(p)
        rows.append({"path": p, "label": label, "source": str(rec.get("source", "")).strip(),
                     "group": str(rec.get("group", "")).strip()})
    return pd.DataFrame(rows, columns=["path", "label", "source", "group"])


@dataclass
class VideoTask:
    """One unit of work: a video, or a folder of images standing for one."""

    video: str  # stem: the name of its crops folder and of its frames
    label: int  # 1 Real, 0 Fake, -1 unknown
    source: str
    group: str
    path: str = ""  # the video file ('' for image tasks)
    images: list[tuple[str, int, str]] = field(default_factory=list)  # (file, index, name)


def plan_videos(videos: Path, labels: pd.DataFrame | None, problems: Problems,
                labels_file: Path | None = None) -> list[VideoTask]:
    """Videos to process, in name order, with labels, sources and groups."""
    if not videos.is_dir():
        raise ConfigError(f"{videos}: no such folder of videos")
    files = sorted(p for p in videos.rglob("*") if p.is_file() and not p.name.startswith("."))
    skip = {labels_file.resolve()} if labels_file is not None else set()
    by_rel = {p.relative_to(videos).as_posix(): p for p in files}
    chosen: list[tuple[Path, int, str, str]] = []
    if labels is not None:
        listed = set()
        for rec in labels.to_dict("records"):
            rel = rec["path"]
            f = Path(rel) if Path(rel).is_absolute() else videos / rel
            listed.add(f.resolve())
            if not f.is_file():
                problems.add(f, "listed in the labels CSV but not found")
                continue
            chosen.append((f, int(rec["label"]), rec["source"], rec["group"]))
        for f in files:
            if f.resolve() in listed or f.resolve() in skip or f.suffix.lower() == ".csv":
                continue
            if f.suffix.lower() in framelib.VIDEO_SUFFIXES:
                problems.add(f, "video has no label in the labels CSV", "missing label")
            else:
                problems.add(f, "not a video file (ignored)")
    else:
        for f in by_rel.values():
            if f.suffix.lower() in framelib.VIDEO_SUFFIXES:
                chosen.append((f, -1, "", ""))
            elif f.suffix.lower() != ".csv":
                problems.add(f, "not a video file (ignored)")
    tasks: list[VideoTask] = []
    stems: dict[str, Path] = {}
    for f, label, source, group in chosen:
        stem = f.stem
        if stem in stems:
            problems.add(f, f"same name as {stems[stem]}: its crops would collide; skipped")
            continue
        stems[stem] = f
        tasks.append(VideoTask(video=stem, label=label, source=source, group=group,
                               path=str(f)))
    groups = mf.video_groups([t.video for t in tasks], [max(t.label, 0) for t in tasks])
    for t in tasks:
        t.group = t.group or groups[t.video]
    if not tasks:
        problems.add(videos, "no usable video found", "error")
    return sorted(tasks, key=lambda t: t.video)


def plan_images(folder: Path, labels: pd.DataFrame | None, problems: Problems,
                labels_file: Path | None = None) -> list[VideoTask]:
    """Frames (a `prepare frames` output) or any image folder -> one task per video/folder."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder of frames or images")
    if (folder / "frames.csv").is_file():
        table = read_csv(folder / "frames.csv")
        tasks = []
        for video, part in table.groupby("video", sort=True):
            first = part.iloc[0]
            lab = parse_label(first["label"], str(folder)) if first["label"] else -1
            imgs = [(str(folder / p), int(i), Path(p).stem)
                    for p, i in zip(part["path"], part["frame_index"], strict=True)]
            tasks.append(VideoTask(str(video), lab, first["source"], first["group"],
                                   images=imgs))
        if not tasks:
            problems.add(folder / "frames.csv", "lists no frame", "error")
        return tasks
    info = {} if labels is None else {r["path"]: r for r in labels.to_dict("records")}
    units: dict[str, VideoTask] = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if labels_file is not None and f.resolve() == labels_file.resolve():
            continue
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            if f.suffix.lower() != ".csv":
                problems.add(f, "not an image file (ignored)")
            continue
        rel = f.relative_to(folder).as_posix()
        unit = f.parent.relative_to(folder).as_posix()
        video = f.stem if unit == "." else unit.replace("/", "_")
        rec = info.get(rel) or info.get(unit) or info.get(video)
        if labels is not None and rec is None:
            problems.add(f, "image has no label in the labels CSV", "missing label")
            continue
        label = int(rec["label"]) if rec is not None else -1
        source = rec["source"] if rec is not None else ""
        group = (rec["group"] if rec is not None else "") or video
        task = units.setdefault(video, VideoTask(video, label, source, group))
        task.images.append((str(f), len(task.images), f.stem))
    if not units:
        problems.add(folder, "no usable image found", "error")
    return list(units.values())


# ---------------------------------------------------------------- per-video work


@dataclass(frozen=True)
class Settings:
    every: int = 120
    every_seconds: float = 0.0
    max_width: int = 640
    detector: str = "hog"
    upsample: int = 1
    margin: float = 0.0
    one_face_only: bool = True
    jpeg_quality: int = 95
    save_frames: bool = False
    detect: bool = True


def settings_from(cfg: PrepareConfig, save_frames: bool, detect: bool = True) -> Settings:
    return Settings(cfg.every, cfg.every_seconds, cfg.max_width, cfg.detector, cfg.upsample,
                    cfg.margin, cfg.one_face_only, cfg.jpeg_quality, save_frames, detect)


def write_jpeg(path: Path, bgr: np.ndarray, quality: int) -> None:
    """Encode then write under a temporary name and rename, so no half-written JPEG."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def crop_name(frame: str, k: int) -> str:
    """The study's ``<frame name>F.jpg``; further faces of one frame (--keep-all-faces)
    get F2, F3..."""
    return f"{frame}F.jpg" if k == 0 else f"{frame}F{k + 1}.jpg"


def process(task: VideoTask, out: str, s: Settings) -> dict[str, Any]:
    """Frames and faces of one video (or image folder); runs in a worker process.

    Writes crops to OUT/crops/<video>/ and frames (if asked) to OUT/frames/<video>/, after
    clearing what an interrupted earlier attempt left there. Never raises for bad input:
    the error goes into the log row.
    """
    root = Path(out)
    crop_dir, frame_dir = root / "crops" / task.video, root / "frames" / task.video
    for d, wanted in ((crop_dir, s.detect), (frame_dir, s.save_frames)):
        if wanted:
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {c: 0 for c in LOG_COLUMNS}
    row.update(video=task.video, label=label_text(task.label), source=task.source,
               group=task.group, error="", status="done")
    faces: list[dict[str, Any]] = []
    frames: list[dict[str, Any]] = []
    errors: list[str] = []
    common = {"video": task.video, "label": label_text(task.label), "source": task.source,
              "group": task.group}

    def handle(index: int, name: str, bgr: np.ndarray) -> None:
        if s.save_frames:
            fpath = frame_dir / f"{name}.jpg"
            write_jpeg(fpath, bgr, s.jpeg_quality)
            frames.append({"path": fpath.relative_to(root).as_posix(), "frame_index": index,
                           **common})
        if not s.detect:
            return
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        kept, why = facelib.kept_boxes(rgb, s.upsample, s.detector, s.one_face_only, s.margin)
        if why:
            row[f"dropped_{why}"] += 1
        for k, box in enumerate(kept):
            face = facelib.crop(bgr, box)
            cpath = crop_dir / crop_name(name, k)
            write_jpeg(cpath, face, s.jpeg_quality)
            top, right, bottom, left = box
            faces.append({"path": cpath.relative_to(root).as_posix(), "frame_index": index,
                          **common, "top": top, "right": right, "bottom": bottom,
                          "left": left, "width": right - left, "height": bottom - top})
            row["faces_saved"] += 1

    try:
        if task.path:
            report = framelib.FrameReport(task.path)
            try:
                for index, bgr in framelib.iter_frames(task.path, s.every, s.every_seconds,
                                                       s.max_width, report):
                    handle(index, framelib.frame_name(task.video, index), bgr)
            finally:
                row["frames_read"], row["frames_kept"] = report.frames_read, report.frames_kept
            if report.error:
                errors.append(f"{task.path}: {report.error}")
        else:
            for file, index, name in task.images:
                row["frames_read"] += 1
                try:
                    bgr = cv2.cvtColor(read_rgb(file), cv2.COLOR_RGB2BGR)
                except ImageReadError as exc:
                    row["unreadable"] += 1
                    errors.append(str(exc))
                    continue
                row["frames_kept"] += 1
                handle(index, name, framelib.cap_width(bgr, s.max_width))
    except framelib.VideoReadError as exc:
        errors.append(str(exc))
        row["status"] = "failed"
    except (cv2.error, OSError, RuntimeError) as exc:  # dlib raises RuntimeError
        errors.append(f"{task.path or task.video}: {type(exc).__name__}: {exc}")
        row["status"] = "failed"
    row["error"] = "; ".join(errors)
    return {"log": row, "faces": faces, "frames": frames}


def run_tasks(tasks: Sequence[VideoTask], out: Path, s: Settings, workers: int,
              on_result: Callable[[dict[str, Any]], None], desc: str) -> None:
    """Run ``process`` over tasks in a process pool (dlib and decoding hold the GIL, so
    threads would not help); results are handed to ``on_result`` in the main process."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    progress = bar(total=len(tasks), desc=desc, unit="video")
    try:
        if workers == 1:
            for t in tasks:
                on_result(process(t, str(out), s))
                progress.update()
            return
        # largest videos first, so no worker is left with a long one at the end
        order = sorted(tasks, key=lambda t: -(Path(t.path).stat().st_size
                                              if t.path and Path(t.path).is_file() else 0))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(process, t, str(out), s) for t in order]
            for fut in as_completed(futures):
                on_result(fut.result())
                progress.update()
    finally:
        progress.close()


def run_faces_stage(out: Path, tasks: list[VideoTask], s: Settings, workers: int,
                    problems: Problems) -> pd.DataFrame:
    """Process the tasks not yet done in OUT's log; write log and tables after each one, so
    an interruption loses at most the videos in flight. Returns the face (or frame) table."""
    log_name, table_name, columns = (("face_log.csv", "faces.csv", FACE_COLUMNS) if s.detect
                                     else ("frame_log.csv", "frames.csv", FRAME_COLUMNS))
    log_path, table_path = out / log_name, out / table_name
    done_log = read_csv(log_path) if log_path.is_file() else pd.DataFrame(columns=LOG_COLUMNS)
    table = read_csv(table_path) if table_path.is_file() else pd.DataFrame(columns=columns)
    done_log = done_log[done_log["status"] == "done"]  # failed videos are tried again
    table = table[table["video"].isin(set(done_log["video"]))]
    done = set(done_log["video"])
    frames_path = out / "frames.csv"
    both = s.save_frames and s.detect
    frame_tables = [read_csv(frames_path) if both and frames_path.is_file()
                    else pd.DataFrame(columns=FRAME_COLUMNS)]
    frame_tables[0] = frame_tables[0][frame_tables[0]["video"].isin(done)]
    todo = [t for t in tasks if t.video not in done]
    if done:
        log(f"resuming {out}: {len(done)} video(s) already done, {len(todo)} to go")
    logs = [done_log]
    tables = [table]

    def on_result(res: dict[str, Any]) -> None:
        row = res["log"]
        logs.append(pd.DataFrame([row], columns=LOG_COLUMNS))
        tables.append(pd.DataFrame(res["faces"] if s.detect else res["frames"],
                                   columns=columns))
        if row["error"]:
            problems.add(row["video"], row["error"],
                         "failed" if row["status"] == "failed" else "warning")
        # table first: a video is "done" only once its rows are safely on disk
        write_csv(table_path, _sorted(pd.concat(tables, ignore_index=True), "path"))
        write_csv(log_path, _sorted(pd.concat(logs, ignore_index=True), "video"))
        if both:
            frame_tables.append(pd.DataFrame(res["frames"], columns=FRAME_COLUMNS))
            write_csv(frames_path, pd.concat(frame_tables, ignore_index=True))

    if todo:
        run_tasks(todo, out, s, workers, on_result, "faces" if s.detect else "frames")
    final_log = pd.concat(logs, ignore_index=True)
    if final_log.empty:
        write_csv(log_path, pd.DataFrame(columns=LOG_COLUMNS))
        write_csv(table_path, pd.DataFrame(columns=columns))
    for rec in final_log.to_dict("records"):
        if rec["status"] == "done" and s.detect and int(rec["faces_saved"]) == 0:
            problems.add(rec["video"], f"no face kept from {rec['frames_kept']} frame(s) "
                         f"({rec['dropped_no_face']} without a face, "
                         f"{rec['dropped_multi_face']} with several)", "no face")
    return pd.concat(tables, ignore_index=True)


# ---------------------------------------------------------------- split


def _inspect(path: Path) -> dict[str, Any]:
    """Decode (to validate and measure), hash, and dHash one image."""
    rgb = read_rgb(path)
    return {"width": rgb.shape[1], "height": rgb.shape[0], "sha256": mf.sha256_file(path),
            "dhash": str(mf.dhash(rgb))}


def inspect_images(files: Sequence[Path], problems: Problems, workers: int = 0,
                   ) -> list[dict[str, Any] | None]:
    """_inspect for many files (threads: OpenCV decodes without the GIL); None = unreadable."""
    from concurrent.futures import ThreadPoolExecutor

    def one(p: Path) -> dict[str, Any] | None:
        try:
            return _inspect(p)
        except (ImageReadError, OSError) as exc:
            return {"error": str(exc)}

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(bar(pool.map(one, files), total=len(files), desc="inspect",
                           unit="img"))
    out: list[dict[str, Any] | None] = []
    for f, r in zip(files, results, strict=True):
        if r is None or "error" in r:
            problems.add(f, (r or {}).get("error", "unreadable"), "unreadable")
            out.append(None)
        else:
            out.append(r)
    return out


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard link when on one file system (no extra space), else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_split(items: pd.DataFrame, out: Path, cfg: PrepareConfig, seed: int,
               problems: Problems, workers: int = 0) -> pd.DataFrame:
    """items: file (absolute), name, label (0/1), source, group -> the dataset in OUT.

    Writes OUT/<split>/<Fake|Real>/<name> and OUT/manifest.csv (written last, atomically, so
    a dataset with a manifest is complete). Returns the manifest with a dhash column.
    """
    for name in ("train", "validation", "test"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "manifest.csv").unlink(missing_ok=True)
    info = inspect_images([Path(f) for f in items["file"]], problems, workers)
    keep = [r is not None for r in info]
    items = items.loc[keep].reset_index(drop=True)
    info_df = pd.DataFrame([r for r in info if r is not None],
                           columns=["width", "height", "sha256", "dhash"])
    items = pd.concat([items, info_df], axis=1)
    if items.empty:
        raise NothingUsable("no readable labelled image to split")
    items["split"] = mf.grouped_split(items["group"].tolist(), items["label"].tolist(),
                                      cfg.ratios, seed)
    if cfg.balance:
        before = len(items)
        items = mf.balance_classes(items, seed).reset_index(drop=True)
        log(f"balance: kept {len(items)} of {before} images")
    items["path"] = mf.layout_paths(items["name"].tolist(), items["split"].tolist(),
                                    items["label"].tolist())
    for src, rel in bar(list(zip(items["file"], items["path"], strict=True)), desc="place",
                        unit="img"):
        link_or_copy(Path(src), out / rel)
    manifest = mf.manifest_frame(items)
    write_csv(out / "manifest.csv", manifest)
    return manifest.merge(items[["path", "dhash"]], on="path")


# ---------------------------------------------------------------- stats


def dataset_stats(manifest: pd.DataFrame, near_threshold: int = NEAR_THRESHOLD) -> dict[str, Any]:
    """Composition table, groups in two splits, exact and near duplicates across splits."""
    comp = mf.composition_table(manifest)
    exact = mf.exact_duplicates(manifest)
    near = mf.near_duplicates(manifest, near_threshold)
    return {"composition": comp, "groups_across_splits": mf.groups_across_splits(manifest),
            "exact": exact, "near": near}


def print_stats(stats: dict[str, Any], near_threshold: int) -> None:
    print(mf.format_composition(stats["composition"]))
    print()
    groups = stats["groups_across_splits"]
    print(f"groups in more than one split: {len(groups)}"
          + (f" ({', '.join(groups[:10])}{' ...' if len(groups) > 10 else ''})" if groups
             else ""))
    exact, near = stats["exact"], stats["near"]
    print(f"identical files across splits (sha256): {len(exact)}")
    for rec in exact.head(10).to_dict("records"):
        print(f"  {rec['splits']}: {rec['paths']}")
    print(f"near-duplicates across splits (dHash distance <= {near_threshold}): {len(near)}")
    for rec in near.head(10).to_dict("records"):
        print(f"  {rec['path_a']} ~ {rec['path_b']} (distance {rec['distance']})")
    if len(exact) == 0 and len(near) == 0 and not groups:
        print("leakage check: no cross-split duplicates")


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


# ---------------------------------------------------------------- commands


def resolve(args: argparse.Namespace) -> tuple[PrepareConfig, int]:
    """Config file < --set < dedicated flags; returns the prepare config and the seed."""
    overrides = parse_overrides(getattr(args, "set", []) or [])
    flags = {"every": args.every, "every_seconds": args.every_seconds,
             "max_width": args.max_width, "detector": args.detector,
             "upsample": args.upsample, "margin": args.margin,
             "ratios": args.ratios, "jpeg_quality": args.jpeg_quality}
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
    if p.every < 1 or p.every_seconds < 0 or p.max_width < 0 or p.upsample < 0 or p.margin < 0:
        raise ConfigError("--every must be >= 1; --every-seconds, --max-width, --upsample "
                          "and --margin must be >= 0")
    return p, cfg.seed


def _params(cfg: PrepareConfig, seed: int, save_frames: bool, **inputs: Any) -> dict[str, Any]:
    return {**asdict(cfg), "seed": seed, "save_frames": save_frames, **inputs}


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
    if open_output(args.out, "frames", params, args.overwrite) == "done":
        log(f"{args.out}: this run is already finished; nothing to do (--overwrite to redo)")
        return 0
    table = run_faces_stage(args.out, tasks, settings_from(cfg, True, detect=False),
                            args.workers, problems)
    _finish(args.out, problems, {"frames": len(table), "videos": len(tasks)})
    log(f"frames: {len(table)} frame(s) from {len(tasks)} video(s) in {args.out}; "
        f"{len(problems)} problem(s)")
    if table.empty:
        raise NothingUsable("no frame could be read")
    return 0


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
    if open_output(args.out, "faces", params, args.overwrite) == "done":
        log(f"{args.out}: this run is already finished; nothing to do (--overwrite to redo)")
        return 0
    table = run_faces_stage(args.out, tasks, settings_from(cfg, args.save_frames),
                            args.workers, problems)
    _finish(args.out, problems, {"faces": len(table), "videos": len(tasks)})
    log(f"faces: {len(table)} crop(s) from {len(tasks)} video(s) in {args.out}; "
        f"{len(problems)} problem(s); per-video log in {args.out / 'face_log.csv'}")
    if table.empty:
        raise NothingUsable("no face was found")
    return 0


def split_items_from_faces(faces_dir: Path, problems: Problems) -> pd.DataFrame:
    table_path = faces_dir / "faces.csv"
    if not table_path.is_file():
        raise ConfigError(f"{faces_dir}: no faces.csv (is it a `prepare faces` output?)")
    table = read_csv(table_path)
    rows = []
    for rec in table.to_dict("records"):
        if not rec["label"]:
            problems.add(faces_dir / rec["path"], "crop has no label (run faces with "
                         "--labels)", "missing label")
            continue
        rows.append({"file": str(faces_dir / rec["path"]), "name": Path(rec["path"]).name,
                     "label": parse_label(rec["label"], str(table_path)),
                     "source": rec["source"], "group": rec["group"] or rec["video"]})
    return pd.DataFrame(rows, columns=["file", "name", "label", "source", "group"])


def split_items_from_images(folder: Path, labels: pd.DataFrame, problems: Problems,
                            labels_file: Path) -> pd.DataFrame:
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder of images")
    info = {r["path"]: r for r in labels.to_dict("records")}
    rows = []
    seen = set()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if f.resolve() == labels_file.resolve() or f.suffix.lower() == ".csv":
            continue
        rel = f.relative_to(folder).as_posix()
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            problems.add(f, "not an image file (ignored)")
            continue
        rec = info.get(rel)
        if rec is None:
            problems.add(f, "image has no label in the labels CSV", "missing label")
            continue
        seen.add(rel)
        rows.append({"file": str(f), "name": f.name, "label": int(rec["label"]),
                     "source": rec["source"], "group": rec["group"] or f.stem})
    for rel in sorted(set(info) - seen):
        if (folder / rel).suffix.lower() in IMAGE_SUFFIXES or not (folder / rel).exists():
            problems.add(folder / rel, "listed in the labels CSV but not found")
    if rows and not labels["group"].any():
        log("split: the labels CSV has no group column: every image is its own group, so "
            "frames of one video may land in different splits")
    return pd.DataFrame(rows, columns=["file", "name", "label", "source", "group"])


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
    if open_output(args.out, "split", params, args.overwrite) == "done":
        log(f"{args.out}: this split is already finished; nothing to do (--overwrite to redo)")
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
    state = open_output(args.out, "all", params, args.overwrite)
    if state == "done":
        log(f"{args.out}: this run is already finished; nothing to do (--overwrite to redo)")
        return 0
    faces_dir = args.out / "faces"
    faces_dir.mkdir(parents=True, exist_ok=True)
    table = run_faces_stage(faces_dir, tasks, settings_from(cfg, args.save_frames),
                            args.workers, problems)
    if table.empty:
        raise NothingUsable("no face was found in any video")
    items = split_items_from_faces(faces_dir, problems)
    manifest = make_split(items, args.out, cfg, seed, problems, args.workers)
    face_log = read_csv(faces_dir / "face_log.csv")
    return _after_split(args.out, manifest, problems, args.near_threshold,
                        {"videos": len(tasks),
                         "videos_failed": int((face_log["status"] != "done").sum()),
                         "faces": len(table)})


# ---------------------------------------------------------------- CLI


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
    g.add_argument("--every", type=int, help="keep one frame every N frames (120)")
    g.add_argument("--every-seconds", type=float, help="keep one frame every S seconds instead")
    g.add_argument("--max-width", type=int, help="downscale wider frames to this width (640)")
    g.add_argument("--detector", choices=facelib.DETECTORS, help="dlib HOG (default) or CNN")
    g.add_argument("--upsample", type=int, help="times to upsample before detecting (1)")
    g.add_argument("--margin", type=float, help="border around the tight box, fraction (0)")
    g.add_argument("--keep-all-faces", action="store_true",
                   help="keep every face (default: only frames with exactly one face)")
    g.add_argument("--ratios", type=_ratios, help="train,validation,test (0.80,0.19,0.01)")
    g.add_argument("--balance", action="store_true", help="equal classes within each split")
    g.add_argument("--seed", type=int, help="split seed (config seed, 1234)")
    g.add_argument("--jpeg-quality", type=int, help="JPEG quality of saved crops/frames (95)")
    g.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
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
    try:
        return int(args.func(args))
    except NothingUsable as exc:
        print(f"error: nothing usable produced: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, RunExistsError, DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
