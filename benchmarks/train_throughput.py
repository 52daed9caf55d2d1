"""Input-pipeline throughput: training and logit collection, against in-memory tensors and
against the study's one-image-at-a-time loop. Prints ratios measured in this one run.

    python benchmarks/train_throughput.py [--data DIR] [--model M6] [--size 64] [--n 600]
                                          [--collect-also M1:72,...]

Targets (issue 3): the real pipeline reaches >= 0.9 of in-memory speed for a training epoch
and for collection; batched collection is >= 10x the study's load_img + predict loop.
Collection is measured for --model and for each --collect-also model: decoding JPEGs costs
the same CPU time whatever the model, so the ratio is lowest for the cheapest model.
Uses ../shared/data/dfd-mini when present, else a synthetic dataset it makes in /tmp.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


from ensemble_dfd.data.dataset import load_dataset, select  # noqa: E402
from ensemble_dfd.data.images import load_images, stream_images  # noqa: E402
from ensemble_dfd.training import backbones  # noqa: E402
from ensemble_dfd.training.train import compile_model, predict_batches, predict_logits  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dfd-mini"


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_of(sides: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Alternate the sides and keep each one's best time: a busy moment on the machine then
    penalises neither side."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, fn in sides.items():
            dt = timed(fn)
            best[name] = min(best.get(name, dt), dt)
    return best


def collection(model: Any, files: list[str], size: int, repeats: int) -> dict[str, float]:
    """Seconds to score `files`: as collect.py does (decode the next batch while the model
    runs on this one) vs the same images already decoded in memory. Checks they agree."""
    n = len(files)
    predict_logits(model, load_images(files[: 64 + n % 64], size))  # trace every batch shape
    x = load_images(files, size)

    def pipeline() -> Any:
        return predict_batches(model, stream_images(files, size, 64), 64)

    def memory() -> Any:
        return predict_logits(model, x)

    assert abs(pipeline() - memory()).max() < 1e-4, "streamed and in-memory logits differ"
    return best_of({"pipeline": pipeline, "in-memory": memory}, repeats)


def parse_models(text: str) -> list[tuple[str, int]]:
    return [(ref, int(px)) for ref, px in (item.split(":") for item in text.split(",") if item)]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=SHARED if SHARED.exists() else None)
    p.add_argument("--model", default="M6", help="model for the training epoch and collection")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--collect-also", default="M1:72",
                   help="REF:PX,... more models for collection only ('' for none); default "
                        "Xception at its experiments/cpu.toml size")
    p.add_argument("--n", type=int, default=600, help="images per class")
    p.add_argument("--loop-n", type=int, default=60, help="images for the one-by-one loop")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; each side's best is kept")
    args = p.parse_args()
    if args.data is None:
        from ensemble_dfd.data.synthetic import make_dataset

        args.data = Path(tempfile.mkdtemp()) / "syn"
        make_dataset(args.data, identities=120, frames=6)
    import keras

    train = select(load_dataset(args.data), "train", args.n, 0)
    files, y = train["file"].tolist(), train["label"].to_numpy().astype("float32")
    n = len(files)
    bb = backbones.get(args.model)
    model, _ = backbones.build_model(bb, args.size, "none", freeze_base=False)
    compile_model(model, "adam", 1e-3)
    k = 40 + n % 40  # a full batch and one of the last batch's size: trace both untimed
    model.fit(load_images(files[:k], args.size), y[:k], batch_size=40, epochs=1, verbose=0)
    x_np = load_images(files, args.size)

    # training epoch: files -> decode/resize -> fit, vs the same uint8 arrays already in memory
    def pipeline_epoch() -> None:
        model.fit(load_images(files, args.size), y, batch_size=40, epochs=1, shuffle=True,
                  verbose=0)

    def memory_epoch() -> None:
        model.fit(x_np, y, batch_size=40, epochs=1, shuffle=True, verbose=0)

    train_t = best_of({"pipeline": pipeline_epoch, "in-memory": memory_epoch}, args.repeats)
    collect_t = {(args.model, args.size): collection(model, files, args.size, args.repeats)}
    t_decode = timed(lambda: load_images(files, args.size))
    loop_files = files[: args.loop_n]

    def study_loop() -> None:
        for f in loop_files:
            img = keras.utils.load_img(f, target_size=(args.size, args.size))
            model.predict(keras.utils.img_to_array(img)[None], verbose=0)

    loop_rate = len(loop_files) / timed(study_loop)
    for ref, px in parse_models(args.collect_also):
        keras.backend.clear_session()
        other, _ = backbones.build_model(backbones.get(ref), px, "none", freeze_base=False)
        collect_t[(ref, px)] = collection(other, files, px, args.repeats)

    print(f"data {args.data}, {n} images, {os.cpu_count()} cores, best of {args.repeats}; "
          f"decoding all {n} files alone: {t_decode:.2f} s")
    print(f"training epoch, {args.model} {bb.name} at {args.size} px:")
    for side, t in train_t.items():
        print(f"  {side:<10} {n / t:8.1f} images/s")
    r_train = train_t["in-memory"] / train_t["pipeline"]
    print(f"  ratio pipeline / in-memory      {r_train:.2f}  (target >= 0.9)")
    print("collection (batched logits):")
    for (ref, px), t in collect_t.items():
        r = t["in-memory"] / t["pipeline"]
        print(f"  {ref:<4} {backbones.get(ref).name:<18} {px:>3} px  pipeline "
              f"{n / t['pipeline']:7.1f}  in-memory {n / t['in-memory']:7.1f} images/s  "
              f"ratio {r:.2f}  (target >= 0.9)")
    first = collect_t[(args.model, args.size)]
    print(f"  study loop (load_img + predict, one image at a time, {args.model}): "
          f"{loop_rate:.1f} images/s")
    print(f"  ratio pipeline / study loop     {n / first['pipeline'] / loop_rate:.1f}x "
          "(target >= 10x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
