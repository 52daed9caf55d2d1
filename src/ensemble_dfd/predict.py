"""``python -m ensemble_dfd.predict PATH... --run RUN_DIR``: is this image or video fake?

PATHs are images, videos or folders (searched recursively; files are recognised by their
content, not their name). Faces are found with the run's own [prepare] settings, every face
goes through every base model and the chosen meta-learner (default: the ensemble stack.json
recommends, else soft voting), and each input gets an aggregate verdict.

Output, one record per input, in the order given (JSON lines, or CSV with one
p_real_<model> column per model): ``input, kind, faces, p_real, verdict (real|fake), status
(ok|no_face|bad_input), aggregate, learner, threshold, fake_fraction, frames, whole_image,
models {ref: {p_real, verdict}}, face_results [{frame, box, p_real, verdict, models}],
warnings, error`` (the reason, for no_face and bad_input), and for an image ``decoder``
(worker | in-process: whether its decode could be stopped at the deadline). A missing,
empty, unreadable, truncated or over-limit input gets a bad_input record; the other inputs
still get verdicts.

Limits (each input): at most --max-frames video frames, spread over the video whatever its
container claims; images and frames of at most --max-megapixels (read from the header before
decoding); at most --timeout seconds.

Exit codes: 0 every input got a verdict; 3 no face found in at least one input (and none
was bad); 2 at least one bad input (every input is still reported), bad arguments or an
unusable run; 1 an unexpected internal error. Library warnings (TensorFlow, OpenCV/FFmpeg)
are hidden unless --verbose.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ensemble_dfd.cli_common import run_main
from ensemble_dfd.errors import UsageError
from ensemble_dfd.inference.limits import Limits
from ensemble_dfd.inference.verdict import AGGREGATES, FACE_MODES, Predictor, csv_row
from ensemble_dfd.runio import write_text

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_NO_FACE = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ensemble_dfd.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image, video or folder")
    p.add_argument("--run", type=Path, required=True, help="run folder (models/, stack/)")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.add_argument("--output", type=Path, help="write here instead of stdout")
    p.add_argument("--learner", default="auto",
                   help="meta-learner in RUN/stack/learners, a model ref (M3), best_single, "
                        "soft_vote_builtin, or auto (default)")
    p.add_argument("--aggregate", choices=AGGREGATES, default="mean",
                   help="per-input score: mean P(real) (default), share of faces called "
                        "real, or the most fake face")
    p.add_argument("--faces", choices=FACE_MODES, default="auto",
                   help="detect faces, use images as-is (crops), or auto: detect, and use a "
                        "plausible face crop whole when no face is found")
    p.add_argument("--batch-size", type=int, default=64)
    d = Limits()
    p.add_argument("--max-frames", type=int, default=d.max_frames,
                   help=f"video frames scored at most (default {d.max_frames})")
    p.add_argument("--max-megapixels", type=float, default=d.max_pixels / 1e6,
                   help=f"largest image or frame (default {d.max_pixels / 1e6:g})")
    p.add_argument("--max-decoded-frames", type=int, default=d.max_decoded_frames,
                   help="video frames decoded at most to reach the scored ones (seeks "
                        "decode from the keyframe before; wanted frames out of reach move "
                        f"toward keyframes; default {d.max_decoded_frames})")
    p.add_argument("--timeout", type=float, default=d.seconds,
                   help=f"seconds per input, 0 = none (default {d.seconds:g})")
    p.add_argument("--keyframes", action="store_true",
                   help="videos: decode only keyframes (at most --max-frames, spread over the "
                        "video) instead of the run's frame step: much faster, other frames "
                        "than the run's faces came from (needs PyAV)")
    p.add_argument("--backend", choices=("onnx", "keras"), default="onnx",
                   help="onnx: each model's ONNX artifact where one is fresh (python -m "
                        "ensemble_dfd.artifacts --run RUN makes them), else Keras; keras: "
                        "always Keras")
    p.add_argument("--verbose", action="store_true",
                   help="show library warnings and log messages")
    return p


def quiet_libraries() -> None:
    """Hide TensorFlow/absl/OpenCV/FFmpeg chatter (retracing warnings, oneDNN notes)."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    warnings.filterwarnings("ignore")
    for name in ("tensorflow", "absl", "keras", "h5py", "jax"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except (ImportError, AttributeError):
        pass


@contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Send file descriptor 2 to /dev/null meanwhile: TensorFlow's C++ side (absl, oneDNN
    notes) writes there directly, past Python's logging. Python's own sys.stderr is
    unaffected when it is not fd 2 (tests); tracebacks print after the block ends."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def bad_input_record(path: str, message: str) -> dict:
    """The record of an input that could not be read (no faces, no verdict)."""
    return {"input": path, "kind": None, "faces": 0, "p_real": None, "verdict": None,
            "status": "bad_input", "frames": 0, "whole_image": False, "models": {},
            "face_results": [], "warnings": [], "error": message}


def expand_each(paths: Sequence[str]) -> tuple[list, list[str]]:
    """Per PATH: (path, kind) items to score, or a bad_input record; in the given order."""
    from ensemble_dfd.inference.verdict import InputError, expand_inputs

    entries: list = []
    notes: list[str] = []
    for raw in paths:
        if Path(raw).is_file() and Path(raw).stat().st_size == 0:
            entries.append(bad_input_record(str(raw), f"{raw}: empty file"))
            continue
        try:
            items, more = expand_inputs([raw])
        except InputError as exc:
            entries.append(bad_input_record(str(raw), str(exc)))
            continue
        except OSError as exc:
            entries.append(bad_input_record(str(raw), f"{raw}: cannot read ({exc.strerror})"))
            continue
        entries.extend(items)
        notes.extend(more)
    return entries, notes


def format_records(records: list[dict], models: Sequence[str], fmt: str) -> str:
    """JSON lines or CSV text for the records (pure)."""
    if fmt == "json":
        return "".join(json.dumps(r, sort_keys=False) + "\n" for r in records)
    rows = [csv_row(r, models) for r in records]
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def exit_code(records: list[dict]) -> int:
    statuses = {r["status"] for r in records}
    if "bad_input" in statuses:
        return EXIT_BAD_INPUT
    if "no_face" in statuses:
        return EXIT_NO_FACE
    return EXIT_OK


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(max_frames=args.max_frames, max_pixels=int(args.max_megapixels * 1e6),
                  seconds=args.timeout, keyframes=args.keyframes,
                  max_decoded_frames=args.max_decoded_frames)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    if not args.verbose:
        quiet_libraries()
    return run_main(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    try:
        limits = _limits(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # check the inputs before loading any model: a typo should fail in a second
    entries, notes = expand_each(args.paths)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    items = [e for e in entries if isinstance(e, tuple)]
    records: list[dict] = []
    models: list[str] = []
    if items:
        with native_stderr_silenced(not args.verbose):
            predictor = Predictor(args.run, args.learner, args.aggregate, args.faces,
                                  args.batch_size, limits, args.backend)
            records, _ = predictor.predict_paths(items)
        models = predictor.model_refs
    scored = iter(records)
    records = [next(scored) if isinstance(e, tuple) else e for e in entries]
    report_problems(records)
    text = format_records(records, models, args.format)
    if args.output:
        write_text(args.output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return exit_code(records)


def report_problems(records: list[dict]) -> None:
    """One stderr line per warning, bad input and input without a face."""
    for r in records:
        for w in r.get("warnings", []):
            print(f"warning: {w}", file=sys.stderr)
        if r["status"] == "bad_input":
            print(f"error: {r['error']}", file=sys.stderr)
        elif r["status"] == "no_face":
            print(f"no face: {r['error']}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
