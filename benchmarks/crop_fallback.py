"""How often each detector finds the face in a tight face crop, as the crop is and with a
border added back (``inference.verdict.with_border``, as
``looks_like_face_crop`` does): the figures behind ``CROP_PAD``.

    PYTHONPATH=src python benchmarks/crop_fallback.py [--crops ../shared/data/dfd-mini/test]
        [--n 60]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import cv2

from ensemble_dfd.data import faces as facelib
from ensemble_dfd.inference.verdict import with_border

ROOT = Path(__file__).resolve().parents[1]
PADS = (0.0, 0.10, 0.25, 0.50)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=Path,
                    default=ROOT.parent / "shared" / "data" / "dfd-mini" / "test")
    ap.add_argument("--n", type=int, default=60)
    args = ap.parse_args()
    files = sorted(p for p in args.crops.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    random.Random(0).shuffle(files)
    files = files[: args.n]
    print(f"{len(files)} crops from {args.crops} (seed 0); faces found with a border of")
    print("| detector | " + " | ".join(f"{p:.0%}" for p in PADS) + " |")
    print("|---" * (len(PADS) + 1) + "|")
    for det in ("hog", "blazeface"):
        found = [0] * len(PADS)
        for f in files:
            rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
            for i, pad in enumerate(PADS):
                found[i] += bool(facelib.face_locations(with_border(rgb, pad), 1, det))
        print(f"| {det} | " + " | ".join(str(n) for n in found) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
