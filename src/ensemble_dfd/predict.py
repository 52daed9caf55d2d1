"""``python -m ensemble_dfd.predict PATH... --run RUN_DIR``: is this image or video fake?

PATHs are images, videos or folders (searched recursively; files are recognised by their
content, not their name). Faces are found with the run's own [prepare] settings, every face
goes through every base model and the chosen meta-learner (default: the ensemble stack.json
recommends, else soft voting), and each input gets an aggregate verdict.

Output, one record per input (JSON lines, or CSV with one p_real_<model> column per model):
``input, kind, faces, p_real, verdict (real|fake), status (ok|no_face|error), aggregate,
learner, threshold, fake_fraction, frames, models {ref: {p_real, verdict}}, face_results
[{frame, box, p_real, verdict, models}], warnings, error``.

Exit codes: 0 every input got a verdict; 3 no face found in at least one input (the others
are still reported); 2 bad arguments, an unusable run, or an input that is not a readable
image or video (named on stderr).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ensemble_dfd.cli_common import run_main
from ensemble_dfd.errors import UsageError
from ensemble_dfd.runio import write_text
from ensemble_dfd.verdict import AGGREGATES, FACE_MODES, Predictor, csv_row, expand_inputs

EXIT_OK, EXIT_BAD_INPUT, EXIT_NO_FACE = 0, 2, 3


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
                        "small image (<= 256 px) whole when no face is found")
    p.add_argument("--batch-size", type=int, default=64)
    return p


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
    if "error" in statuses:
        return EXIT_BAD_INPUT
    if "no_face" in statuses:
        return EXIT_NO_FACE
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    return run_main(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    # check the inputs before loading any model: a typo should fail in a second
    items, notes = expand_inputs(args.paths)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    predictor = Predictor(args.run, args.learner, args.aggregate, args.faces, args.batch_size)
    records, _ = predictor.predict_paths(items)
    for r in records:
        for w in r.get("warnings", []):
            print(f"warning: {w}", file=sys.stderr)
        if r["status"] == "error":
            print(f"error: {r['error']}", file=sys.stderr)
        elif r["status"] == "no_face":
            print(f"no face: {r['error']}", file=sys.stderr)
    text = format_records(records, predictor.model_refs, args.format)
    if args.output:
        write_text(args.output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return exit_code(records)

if __name__ == "__main__":
    sys.exit(main())
