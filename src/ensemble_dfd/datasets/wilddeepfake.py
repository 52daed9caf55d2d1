"""WildDeepfake: face sequences already cropped from internet videos, as downloaded.

    {real,fake}_{train,test}/<sequence>/   (folders of face images)
    {real,fake}_{train,test}/<sequence>.tar.gz   (or archives of them)

No detection: the images are the faces. One sequence = one video = one group; ``test``
folders are the test split, ``train`` sequences go to train/validation by group.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from ensemble_dfd.data.images import IMAGE_SUFFIXES
from ensemble_dfd.datasets.base import Index, Missing, Options, Row, expect

FOLDERS = ("real_train", "fake_train", "real_test", "fake_test")
ARCHIVE = (".tar.gz", ".tgz", ".tar")


def _is_archive(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(ARCHIVE)


def images_of(folder: Path) -> tuple[str, ...]:
    return tuple(str(p) for p in sorted(folder.rglob("*"))
                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def archive_members(path: Path) -> list[str]:
    """Image members of an archive, by name; [] when it cannot be read."""
    try:
        with tarfile.open(path) as tar:
            return sorted(m.name for m in tar.getmembers()
                          if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES)
    except (OSError, tarfile.TarError):
        return []


def read(root: Path, opts: Options) -> Index:
    expect(root, "WildDeepfake", any((root / f).is_dir() for f in FOLDERS),
           [f"{f}/<sequence>/ or {f}/<sequence>.tar.gz" for f in FOLDERS])
    index = Index("wilddeepfake", str(root), fill=("train", "validation"))
    for name in FOLDERS:
        kind, part = name.split("_")
        folder = root / name
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                frames = images_of(entry)
            elif _is_archive(entry):
                frames = ()  # extracted by prepare
                if not archive_members(entry):
                    index.missing.append(Missing(str(entry), "archive unreadable or holds "
                                                 "no image"))
                    continue
            else:
                continue
            if entry.is_dir() and not frames:
                index.missing.append(Missing(str(entry), "sequence folder holds no image"))
                continue
            stem = entry.name.split(".")[0]
            video = f"{kind}_{part}_{stem}"
            index.rows.append(Row(str(entry), 1 if kind == "real" else 0,
                                  "test" if part == "test" else "", "wilddeepfake", kind,
                                  video, video, frames=frames))
    return index
