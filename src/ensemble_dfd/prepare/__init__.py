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
    import-dfb INDEX.json --root DIR --out DIR      a DeepfakeBench dataset JSON + frames

frames, faces and all also take ``--dataset NAME --root ROOT`` instead of videos and labels:
a public dataset's own download layout (ensemble_dfd.datasets: ffpp, dfd, celebdf, dfdc,
dfdcp, wilddeepfake), official splits kept, files the index lists but the disk lacks in
report.json and missing.csv (never fatal).

Frames: one every ``--every`` N frames (120, the study's), one every ``--every-seconds`` S, or
``--frames-per-video`` N spread uniformly over each video (DeepfakeBench and icpr2020dfdc
score 32 per video); one of the three. ``--frame-rule floor`` truncates positions as
DeepfakeBench's ``np.linspace(0, n-1, N, dtype=int)`` does instead of rounding them.

Face log columns: ``frames_read`` = frames the video holds (its packets, demuxed by the PyAV
reader; without PyAV, the frames OpenCV walked through), ``frames_kept`` = frames
selected by --every/--every-seconds/--frames-per-video, ``faces_saved``, ``dropped_no_face``,
``dropped_multi_face``, ``unreadable`` (bad image files), ``error``, ``status``.

Crops: the detector's box (BlazeFace by default; ``--detector hog`` is the study's dlib HOG,
on a copy with a 960-px longer side by default, ``--detect-size``), grown by ``--margin`` m
on each side (m x the box's height above and below, m x its width left and right, clipped to
the frame), so the crop is (1 + 2m) x the box. m = 0 (default) is the study's tight box.
``--align dfb``: DeepfakeBench's crop instead (five dlib landmarks found in the detector's
box, similarity transform to its template, 1.3x, 256 px; data/align.py; DeepfakeBench finds
the box with dlib HOG: ``--detector hog``), recorded in ``.prepare.json``; ``split --faces``
and the runs trained on the dataset record it too, so ``predict`` and ``serve`` crop new
media the same way.

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

from ensemble_dfd.prepare.cli import build_parser, main
from ensemble_dfd.prepare.common import MARKER, NEAR_THRESHOLD

__all__ = ["MARKER", "NEAR_THRESHOLD", "build_parser", "main"]
