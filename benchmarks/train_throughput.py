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
from ensemble_dfd.data.images import load_images  # noqa: E402
from ensemble_dfd.train import compile_model, predict_logits  # noqa: E402

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
    args = p.parse_args()
    if args.data is None:
        from ensemble_dfd.data.synthetic import make_dataset

        args.data = Path(tempfile.mkdtemp()) / "syn"
        make_dataset(args.data, identities=120, frames=6)
    import keras
    import tensorflow as tf

    df = load_dataset(args.data)
    train = select(df, "train", args.n, 0)
    files, y = train["file"].tolist(), train["label"].to_numpy().astype("float32")
    bb = backbones.get(args.model)
    model, _ = backbones.build_model(bb, args.size, "none", freeze_base=False)
    compile_model(model, "adam", 1e-3)
    warm = load_images(files[:80], args.size)
    model.fit(warm, y[:80], batch_size=40, epochs=1, verbose=0)  # trace once, outside timing
    predict_logits(model, warm)

    # training epoch: files -> decode/resize -> fit, vs pre-decoded float32 tensors
    def pipeline_epoch():
        x = load_images(files, args.size)
        model.fit(x, y, batch_size=40, epochs=1, shuffle=True, verbose=0)

    x_np = load_images(files, args.size)  # decoded once: the in-memory baseline
    x_mem = tf.constant(x_np.astype("float32"))
    y_mem = tf.constant(y)

    def memory_epoch():
        model.fit(x_mem, y_mem, batch_size=40, epochs=1, shuffle=True, verbose=0)

    _, t_pipe = timed(pipeline_epoch)
    _, t_mem = timed(memory_epoch)
    n = len(files)
    # collection: files -> batched predict, vs in-memory tensors, vs the study's loop
    _, t_collect = timed(lambda: predict_logits(model, load_images(files, args.size)))
    _, t_collect_mem = timed(lambda: predict_logits(model, x_np))
    loop_files = files[: args.loop_n]

    def study_loop():
        for f in loop_files:
            img = keras.utils.load_img(f, target_size=(args.size, args.size))
            arr = keras.utils.img_to_array(img)[None]
            model.predict(arr, verbose=0)

    _, t_loop = timed(study_loop)
    rate = {
        "train pipeline": n / t_pipe, "train in-memory": n / t_mem,
        "collect pipeline": n / t_collect, "collect in-memory": n / t_collect_mem,
        "collect study loop": len(loop_files) / t_loop,
    }
    print(f"data {args.data}, model {args.model} {bb.name} at {args.size} px, {n} images, "
          f"{os.cpu_count()} cores")
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
