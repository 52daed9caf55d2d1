"""How close is `prepare --align dfb` to DeepfakeBench's own aligned crop?

On the same frames of the same videos (DeepfakeBench's pick: np.linspace(0, n-1, N,
dtype=int), which is `--frame-rule floor`), runs DeepfakeBench's ``extract_aligned_face_dlib``
(transcribed in benchmarks/dfb_reference.py, on the full-resolution frame, as it does) and
ours, and prints per video and overall:

- points px: distance between the five landmarks each side found (full-frame px);
- crop px: where each side's transform puts DeepfakeBench's five points, in the 256-px crop
  (the geometric difference of the two crops);
- identical: frames whose two crops are equal pixel for pixel;
- mad: mean absolute difference of the two 256 x 256 RGB crops (0-255 per channel), and
  maxdiff its largest single value;
- fit px: distance of our five points from the template after our transform (the same for
  theirs: a similarity cannot put DeepfakeBench's eyelid/lip points exactly on a template
  of eye centres and mouth corners);
- redetect px: the five points found again by dlib on our crop vs where our transform put
  them (the crop is where it says it is).

Two settings of ours: the full-resolution frame (``--max-width 0``: the same input as
DeepfakeBench) and prepare's default width cap of 640 px (landmarks found and the face warped
from the downscaled frame). Faces: DeepfakeBench keeps the biggest detected face; so does this
script (prepare's default keeps only frames with exactly one face).

    PYTHONPATH=src python benchmarks/align_fidelity.py [--videos ../shared/data/wild] [--frames 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from ensemble_dfd.data import align
from ensemble_dfd.data import faces as facelib
from ensemble_dfd.data import frames as framelib

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dfb_reference as dfb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def ours(rgb: np.ndarray) -> dict | None:
    """Our --align dfb path on one RGB frame (prepare's detector and crop), biggest face."""
    boxes, _ = facelib.kept_boxes(rgb, 1, "hog", False, 0.0)
    if not boxes:
        return None
    box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
    points = align.five_points(align.landmarks68(rgb, box))
    crop, m = align.align_to_template(rgb, points)
    same = dict(facelib.iter_kept_faces(rgb, 1, "hog", False, 0.0, align="dfb"))[box]
    assert np.array_equal(same, crop), "prepare's crop is not the one measured"
    return {"crop": crop, "points": points, "M": m, "box": box}


def redetect_px(crop: np.ndarray, m: np.ndarray, points: np.ndarray) -> float | None:
    boxes = facelib.face_locations(crop, 1, "hog")
    if not boxes:
        return None
    again = align.five_points(align.landmarks68(crop, boxes[0]))
    return float(np.linalg.norm(again - align.apply_matrix(m, points), axis=1).mean())


def compare(bgr: np.ndarray, rgb_ours: np.ndarray, ref: dict, scale: float) -> dict | None:
    """Metrics of our crop from ``rgb_ours`` (the frame, maybe downscaled by ``scale``)."""
    mine = ours(rgb_ours)
    if mine is None:
        return None
    pts_full = mine["points"] * scale  # back in full-frame pixels
    ref_rgb = cv2.cvtColor(ref["crop_bgr"], cv2.COLOR_BGR2RGB)
    m_full = mine["M"].copy()
    m_full[:, :2] /= scale  # our transform, from full-frame pixels
    ref_pts = ref["points"].astype(np.float64)
    tmpl = align.dfb_template()
    return {
        "points_px": float(np.linalg.norm(pts_full - ref_pts, axis=1).mean()),
        "crop_px": float(np.linalg.norm(align.apply_matrix(m_full, ref_pts)
                                        - align.apply_matrix(ref["M"], ref_pts), axis=1).mean()),
        "mad": float(np.abs(mine["crop"].astype(np.int16) - ref_rgb.astype(np.int16)).mean()),
        "same": bool(np.array_equal(mine["crop"], ref_rgb)),
        "maxdiff": float(np.abs(mine["crop"].astype(np.int16) - ref_rgb.astype(np.int16)).max()),
        "fit_px": float(np.linalg.norm(align.apply_matrix(mine["M"], mine["points"]) - tmpl,
                                       axis=1).mean()),
        "fit_ref_px": float(np.linalg.norm(align.apply_matrix(ref["M"], ref_pts) - tmpl,
                                           axis=1).mean()),
        "redetect_px": redetect_px(mine["crop"], mine["M"], mine["points"]),
    }


def summarise(name: str, rows: list[dict]) -> str:
    if not rows:
        return f"  {name:<14} no frame with a face on both sides"
    keys = ("points_px", "crop_px", "mad", "maxdiff", "fit_px", "fit_ref_px", "redetect_px")
    parts = []
    for k in keys:
        vals = [r[k] for r in rows if r[k] is not None]
        digits = 4 if k == "mad" else 2
        parts.append(f"{k} {np.mean(vals):.{digits}f} (max {np.max(vals):.{digits}f})" if vals
                     else f"{k} -")
    same = sum(r["same"] for r in rows)
    return (f"  {name:<14} n={len(rows):<3} identical {same:<3} " + "  ".join(parts))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "data" / "wild")
    ap.add_argument("--frames", type=int, default=4, help="frames per video (linspace floor)")
    args = ap.parse_args()
    videos = sorted(p for p in args.videos.glob("*") if p.suffix in framelib.VIDEO_SUFFIXES)
    if not videos:
        print(f"no video in {args.videos}")
        return 1
    import dlib

    detector, predictor = dlib.get_frontal_face_detector(), align.get_predictor()
    t0 = time.time()
    full_all: list[dict] = []
    cap_all: list[dict] = []
    print(f"{len(videos)} videos from {args.videos}, {args.frames} frames each "
          f"(np.linspace(0, n-1, {args.frames}, dtype=int)); shared 2-core machine")
    for video in videos:
        full_rows, cap_rows, missing = [], [], 0
        for _, bgr in framelib.iter_frames_spread(video, args.frames, 0, frame_rule="floor"):
            ref = dfb.extract_aligned_face_dlib(detector, predictor, bgr)
            if ref is None:
                missing += 1
                continue
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            capped = framelib.cap_width(rgb, 640)
            for rows, frame in ((full_rows, rgb), (cap_rows, capped)):
                row = compare(bgr, frame, ref, rgb.shape[1] / frame.shape[1])
                if row is not None:
                    rows.append(row)
        h, w = bgr.shape[:2]
        print(f"{video.name} ({w}x{h}){f', {missing} frame(s) without a face' if missing else ''}")
        print(summarise("full frame", full_rows))
        print(summarise("width cap 640", cap_rows))
        full_all += full_rows
        cap_all += cap_rows
    print("all videos")
    print(summarise("full frame", full_all))
    print(summarise("width cap 640", cap_all))
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
