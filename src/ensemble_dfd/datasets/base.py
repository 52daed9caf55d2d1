"""What every reader of a public dataset's layout returns: rows, what is missing, errors.

A reader is a pure function ``read(root, options) -> Index``: it looks at ROOT as the dataset
ships it (videos, official split files, metadata) and never writes anything. Labels follow
the project: Real = 1, Fake = 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ensemble_dfd.errors import UserError

SPLITS = ("train", "validation", "test")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class LayoutError(UserError, ValueError):
    """ROOT matches no known layout of the dataset; the message names what was expected."""


@dataclass(frozen=True)
class Row:
    """One video (or one sequence of face images) of a dataset.

    ``split`` is the official split ('' when the dataset names none for it: the splitter
    assigns one by group); ``frames`` lists already-cropped face images (image datasets),
    empty for videos; ``path`` is the video, the sequence's folder or its archive.
    """

    path: str
    label: int
    split: str
    dataset: str
    method: str
    video: str
    group: str
    compression: str = ""
    frames: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()  # each frame's id in the dataset's own index (DeepfakeBench)

    @property
    def source(self) -> str:
        """``<dataset>[-<compression>]-<method>``, e.g. ``ffpp-c23-FaceSwap``."""
        return "-".join(p for p in (self.dataset, self.compression, self.method) if p)


@dataclass(frozen=True)
class Missing:
    """A file the dataset's index lists but the disk lacks (a partial download)."""

    path: str
    reason: str


@dataclass
class Index:
    """A reader's answer: the rows found, the files missing, and for rows without an
    official split the splits they may be given (``fill``)."""

    dataset: str
    root: str
    rows: list[Row] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    fill: tuple[str, ...] = SPLITS
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        per = {s: sum(r.split == s for r in self.rows) for s in (*SPLITS, "")}
        parts = [f"{n} {s or 'unsplit'}" for s, n in per.items() if n]
        return (f"{self.dataset}: {len(self.rows)} video(s) read from {self.root} "
                f"({', '.join(parts) or 'none'}); {len(self.missing)} listed file(s) absent")


@dataclass(frozen=True)
class Options:
    """Reader options from the command line; each reader uses the ones it knows."""

    compression: str = ""
    methods: tuple[str, ...] = ()
    splits_dir: str = ""
    part_splits: str = ""
    index: str = ""  # an index file (DeepfakeBench JSON) where the layout needs one


Reader = Callable[[Path, Options], Index]


def expect(root: Path, dataset: str, found: bool, expected: Iterable[str]) -> None:
    """Raise LayoutError (one line naming the expected files) unless ``found``."""
    if not root.is_dir():
        raise LayoutError(f"{root}: no such folder (the {dataset} download's root)")
    if not found:
        raise LayoutError(f"{root}: not a {dataset} layout: expected "
                          + "; ".join(expected))


def videos_in(folder: Path) -> list[Path]:
    """Video files directly in ``folder``, by name (none when it is absent)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                  and not p.name.startswith("."))


def check_groups(rows: list[Row]) -> list[str]:
    """Groups whose rows carry more than one official split (readers must return none)."""
    seen: dict[str, set[str]] = {}
    for r in rows:
        if r.split:
            seen.setdefault(r.group, set()).add(r.split)
    return sorted(g for g, s in seen.items() if len(s) > 1)


PRECEDENCE = {"test": 3, "validation": 2, "train": 1, "": 0}


def settle_groups(rows: list[Row], notes: list[str]) -> list[Row]:
    """Rows of a group that an index puts in several splits all take the most protected
    one (test > validation > train), so a group never crosses splits; each is noted."""
    best: dict[str, str] = {}
    for r in rows:
        if PRECEDENCE[r.split] > PRECEDENCE[best.get(r.group, "")]:
            best[r.group] = r.split
    out = []
    for r in rows:
        split = best.get(r.group, "")
        if r.split != split:
            notes.append(f"{r.path}: its group {r.group} is also in {split}; "
                         f"moved from {r.split or 'unsplit'} to {split}")
            r = Row(r.path, r.label, split, r.dataset, r.method, r.video, r.group,
                    r.compression, r.frames, r.keys)
        out.append(r)
    return out
