"""What `prepare` will process: labels CSV, videos and image folders as tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ensemble_dfd.config import ConfigError
from ensemble_dfd.data import frames as framelib
from ensemble_dfd.data import manifest as mf
from ensemble_dfd.data.dataset import DatasetError, parse_label
from ensemble_dfd.data.images import IMAGE_SUFFIXES
from ensemble_dfd.datasets import Index
from ensemble_dfd.prepare.common import Problems, read_csv, write_csv
from ensemble_dfd.runio import read_json, write_json


def read_labels(path: Path, problems: Problems) -> pd.DataFrame:
    """Labels CSV ``path,label[,source][,group][,split]`` -> rows with label 0/1 (and the
    given split, kept by `split`, where the CSV has that column); bad rows skipped."""
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
        split = SPLIT_NAMES.get(str(rec.get("split", "")).strip().lower())
        if split is None:
            problems.add(p, f"{where}: split {rec['split']!r} is not train, validation or "
                         "test", "skipped")
            continue
        rows.append({"path": p, "label": label, "source": str(rec.get("source", "")).strip(),
                     "group": str(rec.get("group", "")).strip(), "split": split})
    columns = ["path", "label", "source", "group"] + (["split"] if "split" in df else [])
    return pd.DataFrame(rows, columns=["path", "label", "source", "group", "split"])[columns]


# a labels CSV's optional split column: kept as given ('' = the splitter decides)
SPLIT_NAMES = {"": "", "train": "train", "val": "validation", "validation": "validation",
               "test": "test"}


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


# ---------------------------------------------------------------- public dataset layouts

INDEX_FILE = "index.csv"  # the dataset reader's rows, beside faces.csv / frames.csv
INDEX_INFO = "index.json"  # which dataset, where, and the splits unsplit rows may take
INDEX_COLUMNS = ("video", "path", "label", "split", "source", "method", "compression", "group")


def plan_dataset(index: Index) -> list[VideoTask]:
    """One task per video a dataset reader found (its rows carry label, source, group)."""
    return [VideoTask(video=r.video, label=r.label, source=r.source, group=r.group,
                      path=r.path if not r.frames else "",
                      images=[(f, i, f"{r.video}_{Path(f).stem}")
                              for i, f in enumerate(r.frames)])
            for r in sorted(index.rows, key=lambda r: r.video)]


def index_table(index: Index) -> pd.DataFrame:
    return pd.DataFrame([{"video": r.video, "path": r.path, "label": r.label,
                          "split": r.split, "source": r.source, "method": r.method,
                          "compression": r.compression, "group": r.group}
                         for r in index.rows], columns=INDEX_COLUMNS)


def write_index(out: Path, index: Index) -> None:
    """index.csv + index.json in OUT, so a later `split` keeps the official splits."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / INDEX_FILE, index_table(index))
    write_json(out / INDEX_INFO, {"dataset": index.dataset, "root": index.root,
                                  "fill": list(index.fill), "missing": len(index.missing)})


def read_index(folder: Path) -> tuple[pd.DataFrame | None, tuple[str, ...]]:
    """A dataset reader's rows written in ``folder`` (None when absent) and their fill."""
    if not (folder / INDEX_FILE).is_file():
        return None, mf.SPLITS
    info = read_json(folder / INDEX_INFO) if (folder / INDEX_INFO).is_file() else {}
    return read_csv(folder / INDEX_FILE), tuple(info.get("fill", mf.SPLITS))
