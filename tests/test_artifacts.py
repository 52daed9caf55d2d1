"""ONNX inference artifacts: same logits as Keras (within 1e-4), used when fresh, ignored
when stale, and no TensorFlow needed to predict with them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import once_per_session

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")


@pytest.fixture(scope="session")
def exported_run(tiny_run, synthetic_dataset, tmp_path_factory) -> Path:
    """The tiny run with its models exported again from the CLI (base_train exported them
    after training); made once per session and shared: tests must not modify it."""
    from ensemble_dfd import artifacts

    def build(run: Path) -> None:
        shutil.copytree(tiny_run, run)  # never modify the shared tiny run
        assert artifacts.main(["--run", str(run), "--data", str(synthetic_dataset),
                               "--overwrite"]) == 0

    return once_per_session(tmp_path_factory, "exported_run", build)


def _without_tensorflow(command: str, argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``ensemble_dfd.<command>.main(argv)`` in a fresh interpreter; assert that it
    succeeded and never imported TensorFlow."""
    code = (f"import sys; from ensemble_dfd import {command}; rc = {command}.main({argv!r}); "
            "sys.exit(10 + rc if 'tensorflow' in sys.modules else rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    return proc


def _test_images(synthetic_dataset: Path, n: int = 24) -> list[Path]:
    shared = Path(os.environ.get("ENSEMBLE_DFD_SHARED", Path(__file__).resolve().parents[2]
                                 / "shared" / "data")) / "dfd-mini" / "test"
    root = shared if shared.is_dir() else synthetic_dataset  # dfd-mini test when present
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    return files[:: max(1, len(files) // n)][:n]


def test_onnx_logits_equal_keras(exported_run, synthetic_dataset):
    from ensemble_dfd.artifacts import TOLERANCE
    from ensemble_dfd.data.images import load_images
    from ensemble_dfd.inference.loader import OnnxModel
    from ensemble_dfd.rundir import trained_models
    from ensemble_dfd.training.train import load_model, predict_logits

    files = _test_images(synthetic_dataset)
    for ref, model_dir in trained_models(exported_run).items():
        onnx = model_dir.fresh_artifact()
        assert onnx is not None and (model_dir.path / "model.onnx.json").is_file(), ref
        keras_model, onnx_model = load_model(model_dir.model_file), OnnxModel(onnx)
        x = load_images(files, int(keras_model.input_shape[1]))
        # batch sizes 1..len: padding and the dynamic batch dimension must not matter
        for n in (1, 3, len(x)):
            zk = predict_logits(keras_model, x[:n])
            zo = predict_logits(onnx_model, x[:n])
            assert np.abs(zk - zo).max() <= TOLERANCE, (ref, n)


def test_export_checks_on_faces_where_given_else_on_noise(exported_run, tmp_path):
    from ensemble_dfd.artifacts import export_model
    from ensemble_dfd.training.modeldir import ModelDir

    info = json.loads((exported_run / "models" / "M6" / "model.onnx.json").read_text())
    assert info["check"].endswith(" faces") and info["max_abs_logit_diff"] <= 1e-4
    run = tmp_path / "run"
    shutil.copytree(exported_run / "models" / "M6", run / "models" / "M6")
    assert export_model(ModelDir.of(run, "M6"), overwrite=True)["check"] == "noise"


def test_predictor_uses_fresh_artifacts_and_falls_back(exported_run, tmp_path):
    import cv2

    from ensemble_dfd.data.synthetic import draw_face
    from ensemble_dfd.inference.verdict import Predictor

    crop = tmp_path / "c.png"
    cv2.imwrite(str(crop), cv2.cvtColor(draw_face(np.random.default_rng(1), 48),
                                        cv2.COLOR_RGB2BGR))
    onnx = Predictor(exported_run, faces="as-is")
    keras = Predictor(exported_run, faces="as-is", backend="keras")
    assert set(onnx.backends.values()) == {"onnx"} and set(keras.backends.values()) == {
        "keras"}
    assert onnx.describe()["backends"] == onnx.backends
    (a,), _ = onnx.predict_paths([(crop, "image")])
    (b,), _ = keras.predict_paths([(crop, "image")])
    assert a["p_real"] == pytest.approx(b["p_real"], abs=1e-5)
    assert onnx.warm_up() >= 0 and onnx.warm_up() == 0.0  # the second costs nothing
    # a retrained model (newer model.keras) makes its artifact stale: Keras is used (on a
    # copy: the shared run is read by other tests meanwhile)
    run = Path(shutil.copytree(exported_run, tmp_path / "run"))
    model = run / "models" / "M6" / "model.keras"
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert Predictor(run, faces="as-is").backends["M6"] == "keras"


def test_predict_with_artifacts_does_not_import_tensorflow(exported_run, tmp_path):
    import cv2

    from ensemble_dfd.data.synthetic import draw_face

    crop = tmp_path / "c.png"
    cv2.imwrite(str(crop), cv2.cvtColor(draw_face(np.random.default_rng(1), 48),
                                        cv2.COLOR_RGB2BGR))
    proc = _without_tensorflow("predict", [str(crop), "--run", str(exported_run),
                                           "--faces", "as-is"])
    assert '"verdict"' in proc.stdout


def test_collect_uses_artifacts_and_matches_keras(exported_run, synthetic_dataset, tmp_path):
    """collect scores with the ONNX artifacts (logged per model, no TensorFlow imported) and
    stores the logits Keras would have stored, within the artifact tolerance."""
    import pandas as pd

    from ensemble_dfd import collect
    from ensemble_dfd.artifacts import TOLERANCE

    stores = {}
    for backend in ("onnx", "keras"):
        run = tmp_path / backend / "run"  # same run name: the store's `run` column
        run.mkdir(parents=True)
        shutil.copytree(exported_run / "models", run / "models")
        lines: list[str] = []
        stores[backend] = collect.collect(run, synthetic_dataset, ["test"], log=lines.append,
                                          backend=backend)
        assert all(f"({backend})" in line for line in lines) and len(lines) == 2, lines
    a, b = (stores[k].sort_values(["model", "path"]).reset_index(drop=True)
            for k in ("onnx", "keras"))
    pd.testing.assert_frame_equal(a.drop(columns="logit"), b.drop(columns="logit"))
    assert np.abs(a["logit"] - b["logit"]).max() <= TOLERANCE
    run = tmp_path / "subprocess"
    run.mkdir()
    shutil.copytree(exported_run / "models", run / "models")
    _without_tensorflow("collect", ["--run", str(run), "--data", str(synthetic_dataset),
                                    "--split", "test"])
    assert "(onnx)" in (run / "collect.log").read_text()


def test_a_swapped_or_corrupt_artifact_is_one_error_line(exported_run, tmp_path):
    """Issue 26 (5): a valid but swapped model.onnx was used silently and a corrupt one was
    a traceback; both are now refused against the sha256 recorded at export: exit 2."""
    from ensemble_dfd.runio import sha256_file
    from ensemble_dfd.training.modeldir import ONNX_INFO_FILE as INFO_FILE

    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    m6, m2 = (run / "models" / r for r in ("M6", "M2"))
    info = json.loads((m6 / INFO_FILE).read_text())
    assert info["sha256"] == sha256_file(m6 / "model.onnx")  # recorded at export
    crop = tmp_path / "c.png"
    shutil.copy(_any_image(tmp_path), crop)
    cases = {"swapped": (m2 / "model.onnx").read_bytes(),
             "corrupt": (m6 / "model.onnx").read_bytes()[:1000]}
    for why, data in cases.items():
        (m6 / "model.onnx").write_bytes(data)
        proc = subprocess.run([sys.executable, "-m", "ensemble_dfd.predict", str(crop),
                               "--run", str(run), "--faces", "as-is"],
                              capture_output=True, text=True, timeout=300)
        err = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, (why, proc.stderr[-2000:])
        assert len(err) == 1 and err[0].startswith("error: ") and "sha256" in err[0], err
    # the hash matches but the bytes are no ONNX model: still one line, exit 2
    (m6 / INFO_FILE).write_text(json.dumps({**info, "sha256": sha256_file(m6 / "model.onnx")}))
    proc = subprocess.run([sys.executable, "-m", "ensemble_dfd.predict", str(crop),
                           "--run", str(run), "--faces", "as-is"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: ")
    assert "not a loadable ONNX model" in proc.stderr and "Traceback" not in proc.stderr


def _any_image(tmp_path: Path) -> Path:
    import cv2

    from ensemble_dfd.data.synthetic import draw_face

    path = tmp_path / "face.png"
    cv2.imwrite(str(path), cv2.cvtColor(draw_face(np.random.default_rng(1), 48),
                                        cv2.COLOR_RGB2BGR))
    return path


def test_predictor_runs_the_onnx_sessions_side_by_side_with_the_same_logits(
        exported_run, synthetic_dataset):
    """Predictor.model_logits runs each ONNX session on one thread, the sessions on a pool:
    the logits are those of each model run alone, in the models' order."""
    from ensemble_dfd.data.images import load_images
    from ensemble_dfd.inference.verdict import Predictor
    from ensemble_dfd.training.train import predict_logits

    pred = Predictor(exported_run, faces="as-is")
    assert set(pred.backends.values()) == {"onnx"} and len(pred.model_refs) == 2
    for model in pred.models.values():
        assert model.session.get_session_options().intra_op_num_threads == 1
    crops = list(load_images(_test_images(synthetic_dataset, 5), 32))
    got = pred.model_logits(crops)
    assert pred._pool is not None and got.shape == (5, 2)
    for k, ref in enumerate(pred.model_refs):
        alone = predict_logits(pred.models[ref], np.stack(crops), pred.batch_size)
        np.testing.assert_array_equal(got[:, k], alone)
