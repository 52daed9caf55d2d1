"""Which inference format for `predict`/`serve`: Keras vs TF SavedModel vs TFLite vs ONNX
Runtime for one trained model, each in a fresh process (cold: imports + load + first batch)
and warm (median of 20 batches), plus the largest logit difference to Keras.

Usage: python benchmarks/inference_formats.py --model RUN/models/M1/model.keras [--batch 4]
Writes the SavedModel/TFLite/ONNX files to a temporary folder. CPU only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
fmt, path, size, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
if fmt == "keras":
    from ensemble_dfd.inference.loader import load_keras
    m = load_keras(path)
    run = lambda: np.asarray(m.predict_on_batch(x))
elif fmt == "savedmodel":
    import tensorflow as tf
    m = tf.saved_model.load(path)
    run = lambda: m.serve(tf.constant(x, tf.float32)).numpy()
elif fmt == "tflite":
    import tensorflow as tf
    it = tf.lite.Interpreter(model_path=path)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], [batch, size, size, 3])
    it.allocate_tensors()
    out = it.get_output_details()[0]
    def run():
        it.set_tensor(inp["index"], x.astype(np.float32)); it.invoke()
        return it.get_tensor(out["index"])
else:
    from ensemble_dfd.inference.loader import OnnxModel
    m = OnnxModel(path)
    run = lambda: m.predict_on_batch(x)
z = run()
cold = time.perf_counter() - t0
times = []
for _ in range(20):
    t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
print(json.dumps({"cold": cold, "warm": sorted(times)[10], "z": np.ravel(z).tolist()}))
"""


def export_all(model_path: Path, out: Path) -> dict[str, Path]:
    import keras
    import tensorflow as tf

    from ensemble_dfd.inference.loader import load_keras, to_onnx

    model = load_keras(model_path)
    size = int(model.input_shape[1])
    spec = [tf.TensorSpec((None, size, size, 3), tf.float32, name="image")]
    saved = out / "saved"
    # Keras' ExportArchive tracks the augmentation layers' seed state (a bare tf.Module does
    # not); the endpoint is the inference pass (training=False)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=spec)
    archive.write_out(str(saved), verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serve"])
    (out / "model.tflite").write_bytes(conv.convert())
    to_onnx(model, size, out / "model.onnx")
    return {"keras": model_path, "savedmodel": saved, "tflite": out / "model.tflite",
            "onnx": out / "model.onnx"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args()
    from ensemble_dfd.inference.loader import load_keras

    size = int(load_keras(args.model).input_shape[1])
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_all(args.model, Path(tmp))
        res = {}
        for fmt, path in paths.items():
            proc = subprocess.run([sys.executable, "-c", CHILD, fmt, str(path), str(size),
                                   str(args.batch)], capture_output=True, text=True)
            if proc.returncode:
                print(f"{fmt}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            res[fmt] = json.loads(proc.stdout.strip().splitlines()[-1])
    import numpy as np

    ref = np.array(res["keras"]["z"])
    print(f"{args.model} ({size} px), batch {args.batch}, {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.1f}")
    print(f"{'format':<11}{'cold s':>8}{'warm ms':>9}{'max|dz|':>10}")
    for fmt, r in res.items():
        dz = float(np.abs(np.array(r["z"]) - ref).max())
        print(f"{fmt:<11}{r['cold']:>8.2f}{r['warm'] * 1e3:>9.1f}{dz:>10.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
