"""DeepFakeDetection (DFD, Google/Jigsaw) as FaceForensics++'s download script writes it.

    original_sequences/actors/<comp>/videos/01__exit_phone_room.mp4
    manipulated_sequences/DeepFakeDetection/<comp>/videos/01_02__exit_phone_room__YVGY8LOK.mp4

No official split: an evaluation set, everything ``test`` (``--part-splits group``: a
grouped train/validation/test split by the ratios instead). Group: the actor filmed (the
first id: ``01``), real and fake alike.
"""

from __future__ import annotations

from pathlib import Path

from ensemble_dfd.datasets.base import Index, Missing, Options, Row, expect, videos_in

REAL = "original_sequences/actors"
FAKE = "manipulated_sequences/DeepFakeDetection"


def read(root: Path, opts: Options) -> Index:
    comp = opts.compression or "c23"
    real_dir, fake_dir = root / REAL / comp / "videos", root / FAKE / comp / "videos"
    expect(root, "DFD", real_dir.is_dir() or fake_dir.is_dir(), [
        f"{REAL}/{comp}/videos/<actor>__<scene>.mp4",
        f"{FAKE}/{comp}/videos/<actor>_<actor>__<scene>__<id>.mp4"])
    split = "" if opts.part_splits.strip() == "group" else "test"
    index = Index("dfd", str(root))
    reals = {p.stem: p for p in videos_in(real_dir)}
    for stem, path in reals.items():
        index.rows.append(Row(str(path), 1, split, "dfd", "actors", stem,
                              "actor" + stem.split("_")[0], comp))
    for path in videos_in(fake_dir):
        actors, _, rest = path.stem.partition("__")
        scene = rest.split("__")[0]
        target = actors.split("_")[0]
        index.rows.append(Row(str(path), 0, split, "dfd", "DeepFakeDetection", path.stem,
                              "actor" + target, comp))
        original = f"{target}__{scene}"
        if original not in reals:
            index.missing.append(Missing(str(real_dir / f"{original}.mp4"),
                                         f"original of fake {path.stem}, absent"))
    index.missing = sorted(set(index.missing), key=lambda m: m.path)
    return index
