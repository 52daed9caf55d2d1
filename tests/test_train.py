"""Real TensorFlow training on the synthetic dataset: outputs, resume after a kill, collect."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_TRAIN as TINY

from ensemble_dfd import base_train, collect
from ensemble_dfd.data.synthetic import make_dataset
from ensemble_dfd.stacking import logits


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "ds"
    make_dataset(out, identities=12, frames=3, size_range=(40, 56))
    return out


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory) -> Path:
    """The session's tiny run (M6 and M2 trained with TINY on the synthetic faces), as a
    copy this module may add to (copied, not linked: the rerun appends to its logs)."""
    return Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("run") / "r"))


@pytest.mark.slow
def test_outputs_agree(trained):
    m = trained / "models" / "M6"
    for name in ("model.keras", "history.csv", "params.json", "curves.png", "done.json"):
        assert (m / name).is_file(), name
    assert not (m / "checkpoint.keras").exists() and not (m / "state.json").exists()
    h = pd.read_csv(m / "history.csv")
    assert h["epoch"].tolist() == [1, 2] and h["phase"].tolist() == [1, 2]
    assert h[["loss", "accuracy", "val_loss", "val_accuracy", "seconds"]].notna().all().all()
    params = json.loads((m / "params.json").read_text())
    assert params["before_unfreeze"]["base_layers"] == 154
    # from-scratch profile: all layers learn in phase 1; fine_tune_at 100 freezes some in 2
    assert params["before_unfreeze"]["trainable"] > params["after_unfreeze"]["trainable"]
    store = logits.read_store(trained)
    assert set(store["split"]) == {"validation", "test"} and set(store["model"]) == {"M6", "M2"}
    images = logits.read_images(trained)
    assert set(images["path"]) == set(store["path"])
    assert (images["width"] >= 40).all()
    summary = pd.read_csv(trained / "summary.csv").set_index("ref")
    assert set(summary.index) == {"M6", "M2"} and summary.loc["M6", "epoch_final"] == 2
    test = store.query("split == 'test' and model == 'M6'")
    test_acc = float(((test["logit"] > 0) == (test["label"] == 1)).mean())
    assert summary.loc["M6", "test_acc"] == pytest.approx(test_acc)
    from ensemble_dfd.artifacts import can_export
    from ensemble_dfd.training import memory
    from ensemble_dfd.training.modeldir import ModelDir

    done = json.loads((m / "done.json").read_text())  # the child got train.allocator's malloc
    assert done["allocator"] == ("jemalloc" if memory.allocator_library("auto") else "system")
    if can_export():  # exported after training; collect then ran it, not Keras
        assert ModelDir(m).fresh_artifact() == m / "model.onnx"
        assert done["export_peak_rss_mb"] > 0 and done["export_allocator"] == "system"
        assert json.loads((m / "model.onnx.json").read_text())["check"].endswith(" faces")
        assert "collect M6 (onnx)" in (trained / "base_train.log").read_text()


@pytest.mark.slow
def test_rerun_skips_finished_and_collect_refuses_duplicates(trained, synthetic_dataset):
    syn_dir = synthetic_dataset
    before = (trained / "models" / "M6" / "model.keras").stat().st_mtime_ns
    assert base_train.main(["--data", str(syn_dir), "--out", str(trained), "--models", "M6",
                            "--no-collect", *TINY]) == 0
    assert (trained / "models" / "M6" / "model.keras").stat().st_mtime_ns == before
    with pytest.raises(logits.StoreError, match="--overwrite"):
        collect.collect(trained, syn_dir, ["test"])
    # a differently-configured rerun into the same folder is refused
    assert base_train.main(["--data", str(syn_dir), "--out", str(trained), "--models", "M6",
                            *TINY, "--epochs-frozen", "3"]) == 2


@pytest.mark.slow
def test_collect_as_extra_split(trained, synthetic_dataset):
    syn_dir = synthetic_dataset
    collect.collect(trained, syn_dir, ["test"], as_split="wild")
    store = logits.read_store(trained)
    wild = store[store["split"] == "wild"]
    test = store[store["split"] == "test"]
    assert len(wild) == len(test)
    assert wild.set_index("path")["logit"].sort_index().tolist() == pytest.approx(
        test.set_index("path")["logit"].sort_index().tolist(), abs=1e-4)


@pytest.mark.slow
def test_killed_run_resumes(syn_dir, tmp_path):
    """SIGKILL after the first checkpoint; the rerun continues from it, not from scratch."""
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "ensemble_dfd.base_train", "--data", str(syn_dir), "--out",
           str(run), "--models", "M6", "--no-collect", *TINY, "--epochs-finetune", "2",
           "--set", "train.export=none"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / "models" / "M6" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["epoch"]
    assert not (run / "models" / "M6" / "done.json").exists()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"resuming after epoch {killed_at}" in out.stderr
    h = pd.read_csv(run / "models" / "M6" / "history.csv")
    assert h["epoch"].tolist() == [1, 2, 3] and h["phase"].tolist() == [1, 2, 2]
    assert (run / "models" / "M6" / "model.keras").is_file()
    assert not (run / "models" / "M6" / "model.onnx").exists()  # train.export = none
    params = json.loads((run / "models" / "M6" / "params.json").read_text())
    assert {"before_unfreeze", "after_unfreeze"} <= set(params)


def test_bad_data_folder_is_named(tmp_path, capsys):
    rc = base_train.main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"),
                          "--models", "M6", *TINY])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error: " in err and str(tmp_path / "nope") in err


def test_missing_imagenet_weights_fail_at_once(syn_dir, tmp_path, capsys):
    rc = base_train.main(["--data", str(syn_dir), "--out", str(tmp_path / "r"),
                          "--models", "M6", "--weights", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path}: no weights file for M6 MobileNetV2" in err
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5" in err


def test_predict_logits_pads_partial_batches_without_changing_results():
    """Padding the last batch must not change any logit (inference mode, no batch stats)."""
    import numpy as np

    from ensemble_dfd.training import backbones
    from ensemble_dfd.training.train import predict_logits

    model, _ = backbones.build_model(backbones.get("M6"), 32, "none", freeze_base=False)
    x = np.random.default_rng(0).integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)
    whole = predict_logits(model, x, batch_size=4)  # 8 + a padded batch of 3 -> 4
    one_by_one = np.array([predict_logits(model, x[i:i + 1], batch_size=4)[0]
                           for i in range(len(x))])
    assert whole.shape == (11,)
    np.testing.assert_allclose(whole, one_by_one, rtol=1e-4, atol=1e-5)
    assert predict_logits(model, x[:0]).shape == (0,)


def test_phase_two_keeps_compiled_steps_when_only_the_rate_changes():
    """Same optimizer and nothing frozen: assign the rate, keep the optimizer (no retrace)."""
    from ensemble_dfd.training import backbones
    from ensemble_dfd.training.train import compile_model, start_phase_two

    model, base = backbones.build_model(backbones.get("M6"), 32, "none", freeze_base=False)
    compile_model(model, "adam", 1e-3)
    opt = model.optimizer
    assert start_phase_two(model, base, 0, "adam", "adam", 1e-4) is False
    assert model.optimizer is opt
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    assert start_phase_two(model, base, 0, "adam", "rmsprop", 1e-5) is True
    assert type(model.optimizer).__name__ == "RMSprop"
    n_before = len(model.trainable_weights)
    compile_model(model, "adam", 1e-3)
    assert start_phase_two(model, base, 100, "adam", "adam", 1e-4) is True  # layers frozen
    assert len(model.trainable_weights) < n_before


def test_save_model_streams_the_weights_and_loads_as_keras_does(tmp_path, monkeypatch):
    """train.save_model writes Keras' .keras layout without Keras' in-memory weights copy
    (is_memory_sufficient picks that copy; here it must not even be asked), and the file
    loads with the same weights, optimizer state and outputs."""
    import keras
    import numpy as np
    from keras.src.saving import saving_lib

    from ensemble_dfd.training.train import load_model, save_model

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    model.fit(x, x[:, :1], epochs=1, verbose=0)

    asked = []
    monkeypatch.setattr(saving_lib, "is_memory_sufficient", lambda m: asked.append(m) or True)
    path = save_model(model, tmp_path / "m.keras")
    assert asked == []
    model.save(tmp_path / "keras_own.keras")
    assert len(asked) == 1  # the probe works: Keras' own .keras save asks (and then buffers)
    import zipfile

    names = sorted(zipfile.ZipFile(path).namelist())
    assert names == sorted(zipfile.ZipFile(tmp_path / "keras_own.keras").namelist())
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_flat_step_functions_train_as_keras_own_steps():
    """compile_model gives fit one graph per step (TensorFlow; Keras' own nests its step in an
    iterator-reading tf.function and traces a smaller last batch again); training and
    validation give the same weights and history as Keras' own functions."""
    import keras
    import numpy as np

    from ensemble_dfd.training.train import compile_model

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the flat step functions are TensorFlow's")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(52, 6)).astype("float32")  # batches of 16: the last one has 4
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype("float32")

    def make():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                 keras.layers.BatchNormalization(), keras.layers.Dense(1)])

    ours, theirs = make(), make()
    compile_model(ours, "adam", 1e-2)
    flat = ours.train_function
    assert flat is not None and ours.test_function is not None
    theirs.compile(optimizer=keras.optimizers.Adam(1e-2),
                   loss=keras.losses.BinaryCrossentropy(from_logits=True),
                   metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")])
    assert theirs.train_function is None  # Keras makes its own in fit
    hist = [m.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
                  validation_data=(x[:20], y[:20])).history for m in (ours, theirs)]
    assert ours.train_function is flat and theirs.train_function is not flat
    # one trace each, the partial batches (train and validation) included
    assert [f.traced[0].experimental_get_tracing_count()
            for f in (ours.train_function, ours.test_function)] == [1, 1]
    assert sorted(hist[0]) == sorted(hist[1]) == ["accuracy", "loss", "val_accuracy",
                                                   "val_loss"]
    for key in hist[0]:
        np.testing.assert_allclose(hist[0][key], hist[1][key], rtol=1e-5, err_msg=key)
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert ours.evaluate(x, y, verbose=0) == pytest.approx(theirs.evaluate(x, y, verbose=0))
