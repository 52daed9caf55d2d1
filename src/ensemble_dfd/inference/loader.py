"""The one way a trained model is loaded for scoring: its ONNX artifact under ONNX Runtime
when a fresh one exists, else its Keras file.

Used by collect, predict/serve (verdict.Predictor), the intervention study and the export
check. Both kinds answer ``predict_on_batch`` and ``input_shape``, which is all
``train.predict_batches`` and the Predictor use. TensorFlow is imported only when the Keras
file is loaded, so scoring with artifacts needs neither TensorFlow nor Keras.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ensemble_dfd.errors import UserError
from ensemble_dfd.runio import sha256_file
from ensemble_dfd.training.modeldir import ModelDir, ModelDirError

BACKENDS = ("onnx", "keras")


class ArtifactError(UserError, ValueError):
    """A model file that cannot be used: an export whose logits differ from the Keras
    model's or that cannot be made, an artifact that no longer matches its recorded hash,
    or a file that does not load."""


class OnnxModel:
    """An ONNX Runtime session with the two members of a Keras model that inference uses."""

    def __init__(self, path: str | Path, threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only
        if threads:
            opts.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts,
                                            providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self.dtype = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}.get(
            inp.type, np.float32)

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.asarray(batch, self.dtype)})[0]


def load_keras(model_file: str | Path) -> Any:
    """A Keras model file for inference only: no optimizer state (``compile=False``), which
    halves what a trained model file costs in memory and load time."""
    from ensemble_dfd.training.train import load_model  # TensorFlow is imported here

    return load_model(model_file, compile=False)


def verify_artifact(model_dir: ModelDir, onnx: Path) -> bool:
    """Whether an artifact may be loaded: its bytes must have the sha256 recorded when it was
    exported. False for an artifact exported before hashes were recorded (the Keras model is
    used then); ArtifactError when the file was swapped, edited or corrupted since."""
    try:
        recorded = model_dir.artifact_info().get("sha256")
    except ModelDirError:
        return False
    if not recorded:
        return False
    if sha256_file(onnx) != recorded:
        raise ArtifactError(f"{onnx}: does not match the sha256 recorded when it was exported "
                            f"({model_dir.onnx_info_file.name}): swapped, edited or corrupted; "
                            "re-export it with `python -m ensemble_dfd.artifacts --run RUN "
                            "--overwrite`")
    return True


def load_for_inference(model: ModelDir, prefer: str = "onnx", threads: int = 0
                       ) -> tuple[Any, str]:
    """(model, backend): the fresh, verified ONNX artifact under ONNX Runtime ("onnx", with
    ``threads`` intra-op threads, 0 = ONNX Runtime's default), else the Keras model
    ("keras"); ``prefer="keras"`` always loads Keras. A file that does not load is one
    ArtifactError naming it."""
    if prefer not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {prefer!r}")
    if prefer == "onnx":
        onnx = model.fresh_artifact()
        if onnx is not None and verify_artifact(model, onnx):
            try:
                return OnnxModel(onnx, threads), "onnx"
            except ImportError:
                pass
            except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own errors vary
                raise ArtifactError(f"{onnx}: not a loadable ONNX model "
                                    f"({type(exc).__name__})") from None
    try:
        return load_keras(model.model_file), "keras"
    except ImportError:
        raise
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds on a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ArtifactError(f"{model.model_file}: cannot be loaded as a Keras model ({first})"
                            ) from None
