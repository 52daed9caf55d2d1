"""Input-pipeline throughput: training and logit collection, against in-memory tensors and
against the study's one-image-at-a-time loop. Prints ratios measured in this one run.

    python benchmarks/train_throughput.py [--data DIR] [--model M6] [--size 64] [--n 600]

Targets (issue 3): the real pipeline reaches >= 0.9 of in-memory speed for a training epoch
and for collection; batched collection is >= 10x the study's load_img + predict loop.
Uses ../shared/data/dfd-mini when present, else a synthetic dataset it makes in /tmp.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


from ensemble_dfd import backbones  # noqa: E402
from ensemble_dfd.data.dataset import load_dataset, select  # noqa: E402
from ensemble_dfd.data.images import load_images, stream_images  # noqa: E402
from ensemble_dfd.train import compile_model, predict_batches, predict_logits  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dfd-mini"


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=SHARED if SHARED.exists() else None)
    p.add_argument("--model", default="M6")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n", type=int, default=600, help="images per class for the epoch")
    p.add_argument("--loop-n", type=int, default=60, help="images for the one-by-one loop")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; each side's best is kept")
    args = p.parse_args()
    if args.data is None:
        from ensemble_dfd.data.synthetic import make_dataset

        args.data = Path(tempfile.mkdtemp()) / "syn"
        make_dataset(args.data, identities=120, frames=6)
    import keras

    df = load_dataset(args.data)
    train = select(df, "train", args.n, 0)
    files, y = train["file"].tolist(), train["label"].to_numpy().astype("float32")
    n = len(files)
    bb = backbones.get(args.model)
    model, _ = backbones.build_model(bb, args.size, "none", freeze_base=False)
    compile_model(model, "adam", 1e-3)
    # trace the train and predict steps for every batch shape used below, outside the timing
    warm = load_images(files[: 64 + n % 64], args.size)  # one full batch + the last one's size
    model.fit(warm[: 40 + n % 40], y[: 40 + n % 40], batch_size=40, epochs=1, verbose=0)
    predict_logits(model, warm)
    x_np = load_images(files, args.size)  # decoded once: the in-memory baseline

    # training epoch: files -> decode/resize -> fit, vs the same uint8 arrays already in memory
    def pipeline_epoch():
        x = load_images(files, args.size)
        model.fit(x, y, batch_size=40, epochs=1, shuffle=True, verbose=0)

    def memory_epoch():
        model.fit(x_np, y, batch_size=40, epochs=1, shuffle=True, verbose=0)

    # collection as collect.py does it (decode the next batch while the model runs) vs arrays
    def pipeline_collect():
        return predict_batches(model, stream_images(files, args.size, 64), 64)

    def memory_collect():
        return predict_logits(model, x_np)

    # alternate the two sides and keep each one's best of `repeats`: a busy moment on the
    # machine then penalises neither side
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, fn in (("train pipeline", pipeline_epoch), ("train in-memory", memory_epoch),
                         ("collect pipeline", pipeline_collect),
                         ("collect in-memory", memory_collect)):
            _, dt = timed(fn)
            best[name] = min(best.get(name, dt), dt)
    _, t_decode = timed(load_images, files, args.size)
    z_pipe, z_mem = pipeline_collect(), memory_collect()
    assert abs(z_pipe - z_mem).max() < 1e-4, "streamed and in-memory logits differ"
    loop_files = files[: args.loop_n]

    def study_loop():
        for f in loop_files:
            img = keras.utils.load_img(f, target_size=(args.size, args.size))
            arr = keras.utils.img_to_array(img)[None]
            model.predict(arr, verbose=0)

    _, t_loop = timed(study_loop)
    rate = {k: n / v for k, v in best.items()}
    rate["collect study loop"] = len(loop_files) / t_loop
    print(f"data {args.data}, model {args.model} {bb.name} at {args.size} px, {n} images, "
          f"{os.cpu_count()} cores, best of {args.repeats}; decoding all {n} files alone: "
          f"{t_decode:.2f} s")
    for k, v in rate.items():
        print(f"  {k:<20} {v:8.1f} images/s")
    r1 = rate["train pipeline"] / rate["train in-memory"]
    r2 = rate["collect pipeline"] / rate["collect in-memory"]
    r3 = rate["collect pipeline"] / rate["collect study loop"]
    print(f"ratio train pipeline / in-memory     {r1:.2f}  (target >= 0.9)")
    print(f"ratio collect pipeline / in-memory   {r2:.2f}  (target >= 0.9)")
    print(f"ratio collect pipeline / study loop  {r3:.1f}x (target >= 10x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
