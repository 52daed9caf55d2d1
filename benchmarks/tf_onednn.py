"""TensorFlow's oneDNN kernels on or off: peak memory and training speed, in one run.

    python benchmarks/tf_onednn.py [--models M3,M6] [--limit 100] [--epochs 2]

Each case is a fresh ``base_train`` process (from scratch, cpu.toml's per-model sizes,
``--limit`` faces per class of dfd-mini train, ``--epochs`` epochs, nothing collected) with
``train.onednn`` true or false; the cases alternate per model so a busy machine penalises
neither side. Prints, per model, the peak RSS of the training process (done.json) and the
images/s of the last epoch, and the ratios off/on. Needs ../shared/data/dfd-mini.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from ensemble_dfd.training.modeldir import ModelDir

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dfd-mini"


def run_case(ref: str, onednn: bool, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ensemble_dfd.base_train", "--config",
               str(ROOT / "experiments" / "cpu.toml"), "--data", str(DATA), "--out", tmp,
               "--models", ref, "--limit", str(args.limit), "--epochs-frozen",
               str(args.epochs), "--epochs-finetune", "0", "--no-collect",
               "--set", "data.limit_per_split={validation=20}",
               "--set", f"train.onednn={'true' if onednn else 'false'}"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        model = ModelDir.of(tmp, ref)
        done = model.summary()
        hist = model.history()
    return {"model": ref, "onednn": onednn, "peak_rss_mb": done["peak_rss_mb"],
            "img_per_s_last_epoch": float(hist["images_per_second"].iloc[-1]),
            "train_s": done.get("train_seconds_this_process")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="M3,M6")
    p.add_argument("--limit", type=int, default=100, help="training faces per class")
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} absent (research data, see README)")
        return 0
    rows = []
    for ref in args.models.split(","):
        for onednn in (True, False):
            rows.append(run_case(ref, onednn, args))
            print(json.dumps(rows[-1]), flush=True)
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    for ref, g in df.groupby("model", sort=False):
        on, off = g[g.onednn].iloc[0], g[~g.onednn].iloc[0]
        print(f"{ref}: peak RSS off/on {off.peak_rss_mb / on.peak_rss_mb:.2f}x "
              f"({off.peak_rss_mb:.0f} vs {on.peak_rss_mb:.0f} MB), img/s off/on "
              f"{off.img_per_s_last_epoch / on.img_per_s_last_epoch:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
