"""Per-video work: frames, face detection and crops, in a process pool, resumable."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from ensemble_dfd.config import PrepareConfig
from ensemble_dfd.data import avframes
from ensemble_dfd.data import faces as facelib
from ensemble_dfd.data import frames as framelib
from ensemble_dfd.data.images import ImageReadError, read_rgb
from ensemble_dfd.data.jpeg import encode_jpeg
from ensemble_dfd.inference.limits import LimitExceeded
from ensemble_dfd.prepare.common import (
    FACE_COLUMNS,
    FRAME_COLUMNS,
    LOG_COLUMNS,
    Problems,
    _sorted,
    bar,
    label_text,
    log,
    read_csv,
    write_csv,
)
from ensemble_dfd.prepare.plan import VideoTask


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
    frames_per_video: int = 0  # >0: this many frames spread over the video, not every N
    align: str = "none"  # "dfb": DeepfakeBench's landmark-aligned crop (data/align.py)
    frame_rule: str = "round"  # "floor": DeepfakeBench's linspace(..., dtype=int) pick
    detect_size: int = 0  # >0: detect on a copy with this longer side (faces.find_faces)
    # each worker's decoding threads (data/avframes.set_threads; 0: FFmpeg's count); set by
    # run_tasks and the Dask mapper from how many workers share a machine, not recorded
    # (the pixels do not depend on it)
    decode_threads: int = 0


def settings_from(cfg: PrepareConfig, save_frames: bool, detect: bool = True) -> Settings:
    return Settings(cfg.every, cfg.every_seconds, cfg.max_width, cfg.detector, cfg.upsample,
                    cfg.margin, cfg.one_face_only, cfg.jpeg_quality, save_frames, detect,
                    cfg.frames_per_video, cfg.align, cfg.frame_rule, cfg.detect_size)


def video_frames(path: str, s: Settings, report: framelib.FrameReport
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """The frames of one video that `prepare` keeps: N spread over it, or every N-th."""
    if s.frames_per_video:
        return framelib.iter_frames_spread(path, s.frames_per_video, s.max_width, report,
                                           s.frame_rule)
    return framelib.iter_frames(path, s.every, s.every_seconds, s.max_width, report,
                                s.frame_rule)


def write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    """Encode then write under a temporary name and rename, so no half-written JPEG."""
    try:
        data = encode_jpeg(rgb, quality)
    except ValueError as exc:
        raise OSError(f"{path}: {exc}") from None
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
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
    avframes.set_threads(s.decode_threads)
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
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if s.save_frames:
            fpath = frame_dir / f"{name}.jpg"
            write_jpeg(fpath, rgb, s.jpeg_quality)
            frames.append({"path": fpath.relative_to(root).as_posix(), "frame_index": index,
                           **common})
        if not s.detect:
            return
        dropped: dict[str, int] = {}
        for k, (box, face) in enumerate(facelib.iter_kept_faces(
                rgb, s.upsample, s.detector, s.one_face_only, s.margin, dropped,
                detect_size=s.detect_size, align=s.align)):
            cpath = crop_dir / crop_name(name, k)
            write_jpeg(cpath, face, s.jpeg_quality)
            top, right, bottom, left = box
            faces.append({"path": cpath.relative_to(root).as_posix(), "frame_index": index,
                          **common, "top": top, "right": right, "bottom": bottom,
                          "left": left, "width": right - left, "height": bottom - top})
            row["faces_saved"] += 1
        for why, n in dropped.items():
            row[f"dropped_{why}"] += n

    try:
        if task.path:
            report = framelib.FrameReport(task.path)
            try:
                for index, bgr in video_frames(task.path, s, report):
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
    except (framelib.VideoReadError, LimitExceeded) as exc:  # e.g. a packet index past
        errors.append(str(exc))                              # the reader's bounds
        row["status"] = "failed"
    except (cv2.error, OSError, RuntimeError) as exc:  # dlib raises RuntimeError
        errors.append(f"{task.path or task.video}: {type(exc).__name__}: {exc}")
        row["status"] = "failed"
    row["error"] = "; ".join(errors)
    return {"log": row, "faces": faces, "frames": frames}


Mapper = Callable[..., None]  # (process, tasks, out, settings, on_result), e.g. on Dask


def run_tasks(tasks: Sequence[VideoTask], out: Path, s: Settings, workers: int,
              on_result: Callable[[dict[str, Any]], None], desc: str,
              mapper: Mapper | None = None) -> None:
    """Run ``process`` over tasks in a process pool (dlib and decoding hold the GIL, so
    threads would not help), or through ``mapper`` (prepare.dask_map); results are handed
    to ``on_result`` in the main process."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    if mapper is None:
        s = replace(s, decode_threads=avframes.share_of_cores(workers))
    # largest videos first, so no worker is left with a long one at the end (Dask runs
    # tasks in submission order too)
    order = sorted(tasks, key=lambda t: -(Path(t.path).stat().st_size
                                          if t.path and Path(t.path).is_file() else 0))
    progress = bar(total=len(tasks), desc=desc, unit="video")
    try:
        if mapper is not None:
            def counted(res: dict[str, Any]) -> None:
                on_result(res)
                progress.update()

            mapper(process, order, out, s, counted)
            return
        if workers == 1:
            for t in tasks:
                on_result(process(t, str(out), s))
                progress.update()
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(process, t, str(out), s) for t in order]
            for fut in as_completed(futures):
                on_result(fut.result())
                progress.update()
    finally:
        progress.close()


def run_faces_stage(out: Path, tasks: list[VideoTask], s: Settings, workers: int,
                    problems: Problems, mapper: Mapper | None = None) -> pd.DataFrame:
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
        run_tasks(todo, out, s, workers, on_result, "faces" if s.detect else "frames", mapper)
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
