"""Inference artifacts: each trained model exported to ONNX and run with ONNX Runtime.

Why ONNX Runtime (measured with ``benchmarks/predict_latency.py``, see its output): a fresh
process that loads ten ONNX sessions needs neither TensorFlow nor Keras, so the cold start
drops from TF import + Keras deserialisation + first-call tracing to a fraction of a second
per model, and there is no per-shape tracing at all (a dynamic batch dimension).

Layout: the artifact sits in the model's folder (``training.modeldir.ModelDir``: its
``onnx_file`` beside the Keras file, and an info record with the Keras file's size and mtime,
so that a retrained model makes the artifact stale: it is then ignored, and the largest logit
difference to Keras measured at export, and the artifact's sha256:
the loader refuses an artifact whose bytes no longer match it).

Loading for scoring (the fresh artifact under ONNX Runtime, else Keras) is
``inference.loader``'s; this module only makes and checks artifacts.

``python -m ensemble_dfd.artifacts --run RUN [--data DIR] [--models M1,M2] [--overwrite]``
exports the models of an existing run (base_train exports each model after training:
``train.export``). TensorFlow is imported only to export.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ensemble_dfd.errors import UserError
from ensemble_dfd.inference.loader import ArtifactError, OnnxModel, load_keras
from ensemble_dfd.training.memory import release
from ensemble_dfd.training.modeldir import ModelDir

# An artifact is kept when its logits differ from Keras' by at most tol * max(1, |z|) on
# the check's images: real faces where the export is given some (after training: the
# model's validation faces; the CLI: --data), tol = TOLERANCE, the figure tested on dfd-mini
# test. Without faces the check feeds uniform noise, tol = NOISE_TOLERANCE: noise drives
# deep from-scratch nets to logits of +-40..140, where float32 reordering alone differs by
# ~2e-4 of the logit (EfficientNetB3: 0.0078 at |z| = 39) and EfficientNetB7 by 5% (7.8 at
# |z| = 144) while its logits on real faces differ by 2e-7.
TOLERANCE = 1e-4
NOISE_TOLERANCE = 1e-3
CHECK_FACES = 16  # validation faces the check after training uses




def check_images(size: int, images: np.ndarray | None = None, n: int = 8,
                 seed: int = 0) -> np.ndarray:
    """The export check's input: `images` (uint8 faces at `size`), else n uniform-noise
    images."""
    if images is not None and len(images):
        return images
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def logits_of(model: Any, images: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_on_batch(images), np.float64).reshape(-1)


def logit_diffs(za: np.ndarray, zb: np.ndarray) -> tuple[float, float]:
    """Largest absolute and relative (to max(1, |za|)) difference of two logit vectors."""
    d = np.abs(za - zb)
    return float(d.max()), float((d / np.maximum(1.0, np.abs(za))).max())


@dataclass
class FrozenGraph:
    """The inference pass as a GraphDef with the weights as constants; `convert` takes the
    GraphDef out (to_onnx's largest object), so that it is freed as soon as it is used."""

    graph_def: Any
    inputs: list[str]
    outputs: list[str]


def freeze(model: Any, size: int) -> FrozenGraph:
    """The model's inference pass (``training=False``: no flip/rotation, BatchNorm on its
    moving statistics) with a dynamic batch dimension, frozen. Keras' own
    ``model.export(format="onnx")`` traces ``model(x)`` with the augmentation layers' default
    ``training=True`` and leaves random ops that ONNX Runtime cannot run. The frozen
    function holds its own copy of the weights (M10: 1.8 GB); only its GraphDef is kept."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = [tf.TensorSpec((None, size, size, 3), model.inputs[0].dtype, name="image")]
    fn = tf.function(lambda x: model(x, training=False), input_signature=spec)
    # frozen first: tf2onnx's from_function leaves tensors the graph captures (EfficientNet's
    # Normalization mean and variance) as extra graph inputs that nobody feeds
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    return FrozenGraph(frozen.graph.as_graph_def(), [t.name for t in frozen.inputs],
                       [t.name for t in frozen.outputs])


def convert(frozen: FrozenGraph, path: Path) -> None:
    """Write the frozen graph as ONNX: the second half of ``tf2onnx.convert.from_graph_def``
    (the conversion and tf2onnx's own optimizers), without its first half, which imports the
    graph into a session, freezes it again and runs grappler's constant folding over it:
    for an already frozen graph that only held more copies of the weights (EfficientNetB7:
    export peak 4,446 -> 3,926 MiB; same logits, same ONNX Runtime speed; see
    results/benchmarks/README.md). The GraphDef is taken out of `frozen`: it is freed when
    the conversion returns, before the artifact is checked."""
    import tf2onnx

    try:  # what Keras' own ONNX export applies first (tf2onnx vs numpy 2)
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        patch_tf2onnx()
    except ImportError:
        pass
    _bounded_tf2onnx()
    graph_def, frozen.graph_def = frozen.graph_def, None
    release()
    # the objects alive now (TensorFlow, Keras: ~500,000) are moved out of the collector's
    # sight, so that the full collection after each optimizer pass (_bounded_tf2onnx) only
    # walks what the conversion made: same ONNX graph, EfficientNetB3 converted in half the
    # time (results/benchmarks/README.md)
    gc.collect()
    gc.freeze()
    try:  # from_graph_def's own second half (tf2onnx 1.16 and 1.17: pyproject's infer extra)
        tf2onnx.convert._convert_common(graph_def, name="unknown", continue_on_error=True,
                                        input_names=frozen.inputs,
                                        output_names=frozen.outputs, output_path=str(path))
    finally:
        gc.unfreeze()


def to_onnx(model: Any, size: int, path: Path) -> None:
    """Convert the model's inference pass to ONNX at `path` (freeze, then convert)."""
    convert(freeze(model, size), path)


def _bounded_tf2onnx() -> None:
    """Keep tf2onnx's optimizer passes from piling up copies of the weights (two patches).

    1. After each pass tf2onnx deletes and re-adds every node's attributes in place; under
       the upb protobuf runtime the deleted ones stay in the message's arena, so each pass
       kept one more copy of all the weights (EfficientNetB7, 246 MB of weights: +244 MB per
       pass, 12.3 GB in all). A fresh NodeProto per update frees the old arena.
    2. Before each pass tf2onnx deep-copies the graph (to roll back a failing pass); the
       replaced copy sits in reference cycles until Python's next full collection, which
       a few dozen large objects do not trigger. It is collected at the end of each pass.
    Logits are unchanged (tests/test_artifacts.py; EfficientNetB7: 1.5e-7 on faces).
    """
    from onnx import NodeProto
    from tf2onnx.graph import Graph, Node

    update = Node.update_proto
    if getattr(update, "fresh_proto", False):
        return
    fields = NodeProto.DESCRIPTOR.fields_by_name
    scalars = [f for f in ("name", "op_type", "domain", "overload", "doc_string") if f in fields]

    def update_proto(self: Any, external_tensor_storage: Any = None) -> Any:
        old = self._op
        self._op = NodeProto(**{f: getattr(old, f) for f in scalars})
        if "metadata_props" in fields:
            self._op.metadata_props.extend(old.metadata_props)
        return update(self, external_tensor_storage)

    graph_update = Graph.update_proto

    def graph_update_proto(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = graph_update(self, *args, **kwargs)
        gc.collect()
        return result

    update_proto.fresh_proto = True  # type: ignore[attr-defined]
    Node.update_proto = update_proto
    Graph.update_proto = graph_update_proto


def export_model(model_dir: ModelDir, overwrite: bool = False,
                 faces: Any = None) -> dict[str, Any]:
    """Export one trained model to ONNX beside its Keras file, check it, and record the
    check (returns the record; a fresh artifact is kept unless `overwrite`).

    `faces(size)` returns uint8 face images at the model's input size for the check (real
    faces: TOLERANCE), else noise is used (NOISE_TOLERANCE). Raises ArtifactError when the
    artifact's logits differ by more than that.
    """
    if not overwrite and model_dir.fresh_artifact() is not None:
        return model_dir.artifact_info()
    import keras

    model = load_keras(model_dir.model_file)
    size = int(model.input_shape[1])
    given = faces(size) if faces is not None else None
    tol, check = ((TOLERANCE, f"{len(given)} faces") if given is not None and len(given)
                  else (NOISE_TOLERANCE, "noise"))
    images = check_images(size, given)
    z_keras = logits_of(model, images)
    t0 = time.perf_counter()
    frozen = freeze(model, size)
    del model  # not needed to convert: its weights are in the frozen graph
    keras.backend.clear_session()
    tmp = model_dir.onnx_tmp_file
    convert(frozen, tmp)
    seconds = time.perf_counter() - t0
    diff, rel = logit_diffs(z_keras, logits_of(OnnxModel(tmp), images))
    if not rel <= tol:
        tmp.unlink(missing_ok=True)
        raise ArtifactError(f"{model_dir.model_file}: ONNX logits differ from Keras by "
                            f"{diff:.2e} on {check} ({rel:.1e} of the logit > {tol:g}); "
                            "not kept")
    return model_dir.keep_artifact(tmp, {
        "format": "onnx", "input_size": size, "check": check, "max_abs_logit_diff": diff,
        "max_rel_logit_diff": rel, "export_seconds": round(seconds, 2)})


def can_export() -> bool:
    """Whether the exporter (tf2onnx) and ONNX Runtime are installed (the infer extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("tf2onnx", "onnxruntime"))


def spread_faces(files: Sequence[str], n: int = CHECK_FACES) -> Any:
    """faces(size) for export_model: n of `files` spread over the list, decoded at the
    model's input size when the check runs."""
    from ensemble_dfd.data.images import load_images

    picked = [files[i] for i in np.linspace(0, len(files) - 1, min(n, len(files))).round()
              .astype(int)] if len(files) else []
    return lambda size: load_images(picked, size)


def face_sampler(data: str | Path) -> Any:
    """spread_faces over the dataset's validation split (else over all its images)."""
    from ensemble_dfd.data.dataset import load_dataset

    df = load_dataset(Path(data))
    if "validation" in set(df["split"]):
        df = df[df["split"] == "validation"]
    return spread_faces(df["file"].tolist())


def _kept(model_dir: ModelDir, info: dict[str, Any]) -> str:
    return (f"{model_dir.ref}: {model_dir.onnx_file} (max |logit diff| to Keras on "
            f"{info.get('check', 'noise')} {info['max_abs_logit_diff']:.1e}, "
            f"{info['export_seconds']:.0f} s)")


def export_after_training(model_dir: ModelDir, log=print, faces: Any = None
                          ) -> dict[str, Any] | None:
    """Export a just-trained model where the infer extra is installed; a model whose
    artifact fails its check is logged and keeps Keras (returns None then)."""
    ref = model_dir.ref
    if not can_export():
        log(f"{ref}: no ONNX artifact (tf2onnx/onnxruntime absent: pip install -e '.[infer]');"
            " collect, predict and serve use Keras")
        return None
    import keras

    if keras.backend.backend() != "tensorflow":  # the exporter converts a TF graph
        log(f"{ref}: no ONNX artifact under KERAS_BACKEND={keras.backend.backend()} (the "
            "exporter needs TensorFlow; python -m ensemble_dfd.artifacts --run RUN makes "
            "it there); collect, predict and serve use Keras")
        return None
    try:
        info = export_model(model_dir, faces=faces)
    except ArtifactError as exc:
        log(f"{ref}: {exc}; collect, predict and serve use Keras for it (not tried again "
            "on a rerun: python -m ensemble_dfd.artifacts --run RUN does)")
        model_dir.refuse_artifact(str(exc))
        return None
    log(_kept(model_dir, info))
    return info


def export_run(run_dir: str | Path, refs: Sequence[str] | None = None,
               overwrite: bool = False, log=print, data: Path | None = None
               ) -> dict[str, dict]:
    """Export every finished model of a run (or ``refs``), checked on faces of `data` where
    given (else on noise); returns ref -> export info."""
    import keras

    from ensemble_dfd.rundir import trained_models

    faces = face_sampler(data) if data is not None else None
    done, failed = {}, []
    for ref, model_dir in trained_models(Path(run_dir), list(refs) if refs else None).items():
        try:
            info = export_model(model_dir, overwrite, faces)
        except ArtifactError as exc:  # the others are still exported; Keras stays its fallback
            log(f"{ref}: {exc}")
            failed.append(ref)
            continue
        finally:  # each model's graphs go before the next model is converted
            keras.backend.clear_session()
            release()
        log(_kept(model_dir, info))
        done[ref] = info
    if failed:
        raise ArtifactError(f"{run_dir}: no artifact for {', '.join(failed)} (see above); "
                            "predict and serve use Keras for them")
    return done


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ensemble_dfd.artifacts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--models", help="refs to export, e.g. M1,M6 (default: all finished)")
    p.add_argument("--overwrite", action="store_true", help="export again even if fresh")
    p.add_argument("--data", type=Path,
                   help="dataset folder or manifest: check each artifact on "
                        f"{CHECK_FACES} of its validation faces (logits within {TOLERANCE:g}) "
                        f"instead of on noise ({NOISE_TOLERANCE:g} of the logit)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ensemble_dfd.stacking.logits import StoreError

    try:
        export_run(args.run, args.models.split(",") if args.models else None, args.overwrite,
                   data=args.data)
    except (ArtifactError, StoreError, ImportError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
