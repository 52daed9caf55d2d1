"""FaceForensics++ as its download script writes it.

    original_sequences/youtube/<comp>/videos/NNN.mp4
    manipulated_sequences/<method>/<comp>/videos/TTT_SSS.mp4   (TTT's footage, SSS's face)
    splits/{train,val,test}.json                               ([[a, b], ...] id pairs)

A pair's videos ``a``, ``b``, ``a_b`` and ``b_a`` all go to that pair's official split, and
the pair is their group. The split files come from ROOT/splits or ``--splits DIR``.
"""

from __future__ import annotations

import json
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

METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
SPLIT_FILES = {"train": "train.json", "validation": "val.json", "test": "test.json"}
REAL_FOLDER = "original_sequences/youtube"


def read_pairs(splits_dir: Path) -> dict[str, tuple[str, str]]:
    """id -> (split, pair group) for every id and a_b/b_a name in the official split files."""
    files = [splits_dir / name for name in SPLIT_FILES.values()]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise LayoutError(f"{splits_dir}: FaceForensics++ split files missing: "
                          f"{', '.join(absent)} (give the folder of train/val/test.json "
                          "with --splits DIR)")
    out: dict[str, tuple[str, str]] = {}
    for split, name in SPLIT_FILES.items():
        try:
            pairs = json.loads((splits_dir / name).read_text())
            pairs = [(str(a), str(b)) for a, b in pairs]
        except (ValueError, TypeError) as exc:
            raise LayoutError(f"{splits_dir / name}: not a list of [target, source] id "
                              f"pairs ({exc})") from None
        for a, b in pairs:
            group = f"{a}_{b}"
            for key in (a, b, f"{a}_{b}", f"{b}_{a}"):
                out[key] = (split, group)
    return out


def read(root: Path, opts: Options) -> Index:
    comp = opts.compression or "c23"
    real_dir = root / REAL_FOLDER / comp / "videos"
    fake_root = root / "manipulated_sequences"
    methods = opts.methods or tuple(m for m in METHODS
                                    if (fake_root / m / comp / "videos").is_dir())
    expect(root, "FaceForensics++", real_dir.is_dir() or bool(methods), [
        f"{REAL_FOLDER}/{comp}/videos/NNN.mp4",
        f"manipulated_sequences/<{'|'.join(METHODS)}>/{comp}/videos/TTT_SSS.mp4",
        "splits/{train,val,test}.json (or --splits DIR)"])
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise LayoutError(f"--methods: unknown FaceForensics++ method(s) {', '.join(unknown)} "
                          f"(known: {', '.join(METHODS)})")
    pairs = read_pairs(Path(opts.splits_dir) if opts.splits_dir else root / "splits")
    index = Index("ffpp", str(root))
    on_disk = {p.stem: p for p in videos_in(real_dir)}
    fakes = {m: {p.stem: p for p in videos_in(fake_root / m / comp / "videos")}
             for m in methods}
    for stem, path in on_disk.items():
        _add(index, pairs, path, stem, 1, "youtube", comp, stem)
    for m, files in fakes.items():
        for stem, path in files.items():
            _add(index, pairs, path, stem, 0, m, comp, f"{stem}-{m}")
    _list_missing(index, pairs, real_dir, on_disk, fake_root, fakes, comp)
    return index


def _add(index: Index, pairs: dict[str, tuple[str, str]], path: Path, stem: str, label: int,
         method: str, comp: str, video: str) -> None:
    if stem not in pairs:
        index.missing.append(Missing(str(path), "on disk but in no official split file; "
                                     "skipped"))
        return
    split, group = pairs[stem]
    index.rows.append(Row(str(path), label, split, "ffpp", method, video, group, comp))


def _list_missing(index: Index, pairs: dict[str, tuple[str, str]], real_dir: Path,
                  reals: dict[str, Path], fake_root: Path, fakes: dict[str, dict[str, Path]],
                  comp: str) -> None:
    """Every file the split files imply for the methods read, absent from disk; the
    originals of fakes on disk first (the ones a partial download most often lacks)."""
    wanted_first: list[Missing] = []
    rest: list[Missing] = []
    for m, files in fakes.items():
        for stem in files:
            target = stem.split("_")[0]
            if target not in reals:
                wanted_first.append(Missing(str(real_dir / f"{target}.mp4"),
                                            f"original of {m} fake {stem}, absent"))
    first = {x.path for x in wanted_first}
    ids = sorted(k for k in pairs if "_" not in k)
    for i in ids:
        p = str(real_dir / f"{i}.mp4")
        if i not in reals and p not in first:
            rest.append(Missing(p, f"listed in the {pairs[i][0]} split, absent"))
    for m, files in fakes.items():
        for name in sorted(k for k in pairs if "_" in k):
            if name not in files:
                rest.append(Missing(str(fake_root / m / comp / "videos" / f"{name}.mp4"),
                                    f"listed in the {pairs[name][0]} split, absent"))
    index.missing.extend(sorted(set(wanted_first), key=lambda x: x.path) + rest)
