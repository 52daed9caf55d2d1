"""Where one backbone's training memory goes: peak RSS per stage and per setting.

    python benchmarks/model_memory.py [--model M10] [--size 48] [--images 200]
                                      [--cases 40,20,40:onednn-off,20:accumulate-2]

Each case trains the model from scratch (cpu.toml's settings: all layers, BatchNorm
learning, Adam) for two epochs on --images random uint8 faces, in its own process, and
prints its RSS after importing the backend, after building, after the first step and its
peak. A case is BATCH[:VARIANT[+VARIANT...]]:
  onednn-off     TF_ENABLE_ONEDNN_OPTS=0
  accumulate-N   Keras' gradient_accumulation_steps=N (the optimizer steps every N batches)
  grappler-off   TensorFlow's graph optimizer disabled
  jemalloc       that allocator preloaded instead of glibc's malloc, where installed, as
  tcmalloc         train.allocator preloads it for base_train's training processes (jemalloc
                   with memory.JEMALLOC_CONF since 2026-11-27; runs before that without)
  bf16           Keras' mixed_bfloat16 policy
  plain-step     the same model, loss and Adam in a bare tf.function step instead of fit
  nested-step    that step called from a tf.function that reads the iterator (as Keras'
                   TensorFlow trainer does)
  flat-fit       Keras' fit with train.flat_step_functions (what base_train's fit uses)
  torch, jax     KERAS_BACKEND
Random pixels cost the same memory as faces.
Issue 12's target: the ten-model CPU profile's peak <= 4 GB; EfficientNetB7 (M10) at 48 px,
batch 40 is its largest model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from ensemble_dfd.training import memory  # noqa: E402  (after the path: run from a checkout)


def run_case(model_ref: str, size: int, n: int, batch: int, variants: list[str]) -> dict:
    """Train in this process; return RSS per stage (MB) and seconds."""
    import numpy as np

    from ensemble_dfd.training import backbones

    stages = {"start": memory.rss_mb()}
    import keras

    tf = None
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if "grappler-off" in variants:
            tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    if "bf16" in variants:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    stages["backend"] = memory.rss_mb()
    model, _ = backbones.build_model(backbones.get(model_ref), size, "none", 0.2, True, 0.2,
                                     freeze_base=False, base_bn_training=True, bn_momentum=0.9)
    accumulate = next((int(v.split("-")[1]) for v in variants
                       if v.startswith("accumulate-")), None)
    model.compile(optimizer=keras.optimizers.Adam(1e-3, gradient_accumulation_steps=accumulate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    if "flat-fit" in variants:
        from ensemble_dfd.training.train import flat_step_functions

        assert flat_step_functions(model)
    stages["built"] = memory.rss_mb()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 2, n).astype("float32")
    if tf is not None:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
        first, data = ds.take(1), ds
    else:  # torch / jax: Keras batches the arrays itself
        first, data = (x[:batch], y[:batch]), (x, y)
    fit = plain_fit(model, tf, keras, nested="nested-step" in variants) if {
        "plain-step", "nested-step"} & set(variants) else (
        lambda d, epochs: model.fit(*d, batch_size=batch, epochs=epochs, verbose=0)
        if isinstance(d, tuple) else model.fit(d, epochs=epochs, verbose=0))
    fit(first, 1)
    stages["first step"] = memory.rss_mb()
    t0 = time.perf_counter()
    fit(data, 2)
    return {"stages": stages, "peak": memory.peak_rss_mb(), "params": model.count_params(),
            "seconds_2_epochs": round(time.perf_counter() - t0, 1)}


def plain_fit(model, tf, keras, nested: bool = False):
    """fit(data, epochs) as a bare tf.function step: forward, loss, gradients, Adam. With
    `nested`, the step is called from an outer tf.function that takes the dataset's
    iterator, as Keras' TensorFlow trainer does."""
    loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(tf.reshape(y, (-1, 1)), model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply(grads, model.trainable_variables)
        return loss

    @tf.function
    def outer(iterator):
        x, y = next(iterator)
        return step(x, y)

    def fit(data, epochs):
        for _ in range(epochs):
            if nested:
                it = iter(data)
                for _ in range(int(data.cardinality())):
                    outer(it)
                continue
            for x, y in data:
                step(x, y)

    return fit


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="M10")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--cases", default="40,20,40:onednn-off,20:accumulate-2")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case here
    args = ap.parse_args()
    if args.case:
        batch, _, variant = args.case.partition(":")
        variants = variant.split("+") if variant else []
        print(json.dumps(run_case(args.model, args.size, args.images, int(batch), variants)))
        return 0
    print(f"{args.model} at {args.size} px, {args.images} random images, 2 epochs + 1 step, "
          "each case in its own process")
    for case in args.cases.split(","):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        variants = case.partition(":")[2].split("+")
        if "onednn-off" in variants:
            env["TF_ENABLE_ONEDNN_OPTS"] = "0"
        for backend in {"torch", "jax"} & set(variants):
            env["KERAS_BACKEND"] = backend
        named = [v for v in variants if v in memory.ALLOCATOR_LIBS]
        if named:  # as train.allocator preloads it (memory.preload_env)
            try:
                env.update(memory.preload_env(memory.allocator_library(named[0]), env))
            except memory.AllocatorError as exc:
                print(f"{case:22s} skipped: {exc}")
                continue
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--size",
                              str(args.size), "--images", str(args.images), "--case", case],
                             env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{case:22s} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        st = r["stages"]
        print(f"batch {case:18s} RSS MB: backend {st['backend']:6.0f}  built "
              f"{st['built']:6.0f}  first step {st['first step']:6.0f}  peak {r['peak']:6.0f}"
              f"   2 epochs {r['seconds_2_epochs']:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
