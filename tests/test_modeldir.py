"""ModelDir: the one owner of RUN/models/<ref>/ (finished, reset, records, fresh artifact)."""

from __future__ import annotations

import json
import os

import pytest

from ensemble_dfd.rundir import Run, trained_models
from ensemble_dfd.runio import RunExistsError
from ensemble_dfd.training.modeldir import ModelDir, ModelDirError

SUMMARY = {"ref": "M6", "backbone": "MobileNetV2", "image_size": 32, "epochs": 2}


def _trained(tmp_path, ref="M6") -> ModelDir:
    """A model folder as training leaves it (a stand-in model file)."""
    m = Run(tmp_path / "run").model(ref)
    assert m.begin()
    m.model_file.write_bytes(b"keras")
    m.append_history({"epoch": 1, "phase": 1, "loss": 0.5})
    m.finish({**SUMMARY, "ref": ref})
    return m


def test_layout_and_run_model(tmp_path):
    m = Run(tmp_path).model("M6")
    assert m == ModelDir.of(tmp_path, "M6") and m.ref == "M6"
    assert m.path == tmp_path / "models" / "M6"
    names = {p.name for p in (m.model_file, m.checkpoint_file, m.state_file, m.done_file,
                              m.history_file, m.params_file, m.curves_file, m.tuning_dir,
                              m.onnx_file, m.onnx_info_file)}
    assert names == {"model.keras", "checkpoint.keras", "state.json", "done.json",
                     "history.csv", "params.json", "curves.png", "tuning", "model.onnx",
                     "model.onnx.json"}
    assert m.best_hparams_file.parent == m.trials_file.parent == m.tuning_dir


def test_done_record_round_trip(tmp_path):
    m = _trained(tmp_path)
    assert m.finished() and m.loadable()
    assert json.loads(m.done_file.read_text()) == SUMMARY == m.summary()
    assert m.image_size() == 32
    assert m.update_summary(peak_rss_mb=12.5) == {**SUMMARY, "peak_rss_mb": 12.5}
    assert m.summary()["peak_rss_mb"] == 12.5
    m.done_file.write_text("{not json")
    with pytest.raises(ModelDirError, match="done.json: not valid JSON"):
        m.summary()
    assert m.image_size() is None


def test_finished_model_is_never_overwritten_without_overwrite(tmp_path):
    m = _trained(tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in m.path.iterdir()}
    assert not m.begin()  # finished: nothing to do, nothing touched
    with pytest.raises(RunExistsError, match="--overwrite"):
        m.finish(SUMMARY)
    assert {p.name: p.stat().st_mtime_ns for p in m.path.iterdir()} == before
    m.checkpoint_file.write_bytes(b"c")
    m.write_state(2, 1)
    assert m.begin(overwrite=True)  # reset: the record and all progress go
    assert not m.finished() and m.progress() is None
    assert not any(p.exists() for p in (m.done_file, m.history_file, m.checkpoint_file,
                                        m.state_file))
    assert m.model_file.exists()  # replaced when the new model is saved


def test_train_model_skips_a_finished_model(tmp_path):
    """base_train's per-model entry point: a finished model is returned as recorded, before
    any data is read (the data folder does not even exist)."""
    from ensemble_dfd import base_train
    from ensemble_dfd.config import load_config
    from ensemble_dfd.training import train
    from ensemble_dfd.training.plan import plan_model

    m = _trained(tmp_path)
    plan = plan_model(load_config(None, {"data": {"image_size": 32}}), "M6")
    lines: list[str] = []
    assert base_train.train_model(plan, tmp_path / "nope", m.path.parents[1],
                                  log=lines.append) == SUMMARY
    assert train.train_one(plan, None, m, log=lines.append) == SUMMARY
    assert all("finished earlier, skipping" in line for line in lines) and len(lines) == 2


def test_progress_history_and_finish(tmp_path):
    m = ModelDir(tmp_path / "M6")
    m.begin()
    m.write_state(1, 2)
    assert m.progress() is None  # a state without its checkpoint cannot be resumed from
    m.checkpoint_file.write_bytes(b"c")
    assert m.progress() == {"phase": 1, "epoch": 2}
    for epoch in (1, 2, 3):
        m.append_history({"epoch": epoch, "phase": 1, "loss": 1 / epoch})
    m.trim_history(2)
    assert m.history()["epoch"].tolist() == [1, 2]
    m.write_params({"before_unfreeze": {"trainable": 3}})
    assert m.params() == {"before_unfreeze": {"trainable": 3}}
    m.model_file.write_bytes(b"k")
    m.finish(SUMMARY)
    assert not m.checkpoint_file.exists() and not m.state_file.exists()
    m.clear_history()
    assert not m.has_history()


def test_fresh_artifact(tmp_path):
    m = _trained(tmp_path)
    assert m.fresh_artifact() is None
    tmp = m.onnx_tmp_file
    tmp.write_bytes(b"onnx")
    info = m.keep_artifact(tmp, {"format": "onnx", "check": "noise"})
    assert not tmp.exists() and m.fresh_artifact() == m.onnx_file
    assert m.artifact_info() == info and info["keras_size"] == len(b"keras")
    st = m.model_file.stat()  # a retrained model file makes the artifact stale
    os.utime(m.model_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert m.fresh_artifact() is None
    os.utime(m.model_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert m.fresh_artifact() == m.onnx_file
    m.onnx_info_file.write_text(json.dumps({k: v for k, v in info.items() if k != "sha256"}))
    assert m.fresh_artifact() is None  # exported before hashes were recorded: export again
    m.onnx_info_file.write_text("[1, 2]")
    assert m.fresh_artifact() is None


def test_trained_models_lists_loadable_ones(tmp_path):
    run = tmp_path / "run"
    _trained(tmp_path, "M6")
    _trained(tmp_path, "M10")
    _trained(tmp_path, "M2").model_file.unlink()  # a record without its model
    ModelDir.of(run, "M3").begin()  # unfinished
    assert list(trained_models(run)) == ["M6", "M10"]
    assert all(isinstance(m, ModelDir) for m in Run(run).trained_models().values())
    with pytest.raises(Exception, match="no finished model for M3"):
        trained_models(run, ["M3"])


def test_a_refused_artifact_is_not_exported_again_until_the_model_changes(tmp_path,
                                                                          monkeypatch):
    """An artifact whose check failed is recorded (done.json export_refused, with the model
    file's stamp): base_train's rerun does not convert and refuse it again (found in the
    demo test: 31 s per rerun); a retrained model file is exported anew."""
    from ensemble_dfd import artifacts
    from ensemble_dfd.inference.loader import ArtifactError

    m = _trained(tmp_path)
    assert m.needs_export()
    monkeypatch.setattr(artifacts, "can_export", lambda: True)

    def refuse(model_dir, faces=None):
        raise ArtifactError(f"{model_dir.model_file}: ONNX logits differ")

    monkeypatch.setattr(artifacts, "export_model", refuse)
    lines = []
    assert artifacts.export_after_training(m, lines.append) is None
    assert "not tried again on a rerun" in lines[0]
    assert m.summary()["export_refused"]["reason"].endswith("ONNX logits differ")
    assert not m.needs_export()
    st = m.model_file.stat()
    os.utime(m.model_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # retrained
    assert m.needs_export()
