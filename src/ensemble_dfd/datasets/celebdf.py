"""Celeb-DF (v2; Celeb-DF++'s nested synthesis folders too) as downloaded.

    Celeb-real/id<t>_<n>.mp4   YouTube-real/<n>.mp4   Celeb-synthesis/id<t>_id<s>_<n>.mp4
    Celeb-synthesis/<kind>/<method>/*.mp4                       (Celeb-DF++)
    List_of_testing_videos.txt   '<1|0> <folder>/<name>.mp4' per line, 1 = real

Listed videos are ``test``; the rest go to train/validation by group. Group: the identity
filmed (``id<t>``); a YouTube-real video is its own group. The official test list shares
identities with the rest (the protocol's own overlap): noted, not changed.
"""

from __future__ import annotations

from pathlib import Path

from ensemble_dfd.datasets.base import (
    Index,
    LayoutError,
    Missing,
    Options,
    Row,
    expect,
    videos_in,
)

REALS = ("Celeb-real", "YouTube-real")
FAKE = "Celeb-synthesis"
TEST_LIST = "List_of_testing_videos.txt"


def read_test_list(path: Path) -> dict[str, int]:
    """'<folder>/<name>.mp4' -> label (1 real) from the official test list."""
    out: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise LayoutError(f"{path} line {n}: expected '<1|0> <folder>/<name>.mp4', got "
                              f"{line.strip()!r}")
        out[parts[1]] = int(parts[0])
    return out


def _group(folder: str, stem: str) -> str:
    return f"yt-{stem}" if folder == "YouTube-real" else stem.split("_")[0]


def _videos(root: Path, methods: tuple[str, ...]) -> list[tuple[str, Path, int, str]]:
    """(relative path, file, label, method) of every video on disk."""
    out = [(f"{d}/{p.name}", p, 1, d) for d in REALS for p in videos_in(root / d)]
    synth = root / FAKE
    out += [(f"{FAKE}/{p.name}", p, 0, FAKE) for p in videos_in(synth)]
    if synth.is_dir():  # Celeb-DF++: Celeb-synthesis/<kind>/<method>/*.mp4
        for kind in sorted(p for p in synth.iterdir() if p.is_dir()):
            for m in sorted(p for p in kind.iterdir() if p.is_dir()):
                if not methods or m.name in methods:
                    out += [(p.relative_to(root).as_posix(), p, 0, m.name)
                            for p in videos_in(m)]
    return out


def read(root: Path, opts: Options) -> Index:
    expect(root, "Celeb-DF", any((root / d).is_dir() for d in (*REALS, FAKE)), [
        "Celeb-real/id<t>_<n>.mp4", "YouTube-real/<n>.mp4",
        "Celeb-synthesis/id<t>_id<s>_<n>.mp4 (or Celeb-synthesis/<kind>/<method>/)",
        TEST_LIST])
    listed = read_test_list(root / TEST_LIST) if (root / TEST_LIST).is_file() else {}
    index = Index("celebdf", str(root), fill=("train", "validation"))
    if not listed:
        index.notes.append(f"{root / TEST_LIST}: absent; every video is split by group")
        index.fill = ("train", "validation", "test")
    seen = set()
    for rel, path, label, method in _videos(root, opts.methods):
        seen.add(rel)
        video = path.stem if method in (*REALS, FAKE) else f"{path.stem}-{method}"
        index.rows.append(Row(str(path), label, "test" if rel in listed else "", "celebdf",
                              method, video, _group(rel.split("/")[0], path.stem)))
    for rel in sorted(set(listed) - seen):
        index.missing.append(Missing(str(root / rel), f"listed in {TEST_LIST}, absent"))
    test_groups = {r.group for r in index.rows if r.split == "test"}
    shared = sorted({r.group for r in index.rows if r.split != "test"} & test_groups)
    if shared:
        index.notes.append(f"{len(shared)} identit(y/ies) are both in the official test list "
                           f"and outside it (e.g. {shared[0]}): the protocol's own overlap")
    return index
