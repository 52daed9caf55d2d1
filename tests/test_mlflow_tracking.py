"""The MLflow tracker (train.tracking = [..., "mlflow"]): a local file store in RUN/mlruns,
driven with history rows (no training) and read back with MLflow's own client."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ensemble_dfd.config import ConfigError, load_config
from ensemble_dfd.training.tracking import (
    ModelTracker,
    comparison_scalars,
    prepare_tracking,
    track_comparison,
)

SRC = Path(__file__).resolve().parents[1] / "src"
HPARAMS = {"lr_frozen": 1e-4, "optimizer_frozen": "adam", "flip": True, "epochs_frozen": 2,
           "note": "x" * 7000, "ignored": [1, 2]}


def _row(epoch: int, loss: float) -> dict:
    return {"epoch": epoch, "phase": 1, "loss": loss, "accuracy": 0.5 + epoch / 10,
            "val_loss": loss + 0.1, "val_accuracy": float("nan"), "seconds": 2.0,
            "images_per_second": 40.0, "lr": 1e-4}


@pytest.fixture
def mlflow(monkeypatch):
    mod = pytest.importorskip("mlflow", reason="needs mlflow-skinny (the mlflow extra)")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for the reading client
    return mod


def _store(run_dir: Path):
    """(client, the run folder's experiment) of RUN/mlruns."""
    from mlflow.tracking import MlflowClient

    from ensemble_dfd.training.mlflow_tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(run_dir))
    return client, client.get_experiment_by_name(run_dir.resolve().name)


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def _train(run_dir: Path, ref: str, epochs_done: int, losses: list[float],
           failed: bool = False, trackers=("mlflow",)) -> ModelTracker:
    t = ModelTracker(run_dir / "tb", ref, trackers)
    t.start(HPARAMS, epochs_done)
    for e, loss in enumerate(losses, epochs_done + 1):
        t.epoch(_row(e, loss))
    t.close(failed)
    return t


def test_one_model_read_back(mlflow, tmp_path):
    run_dir = tmp_path / "my_run"
    _train(run_dir, "M6", 0, [1.0, 0.5, 0.25])
    client, exp = _store(run_dir)
    assert exp.name == "my_run"
    [run] = client.search_runs([exp.experiment_id])
    assert (run.info.run_name, run.info.status) == ("M6", "FINISHED")
    assert run.data.params == {"lr_frozen": "0.0001", "optimizer_frozen": "adam",
                               "flip": "True", "epochs_frozen": "2", "note": "x" * 6000}
    rid = run.info.run_id
    assert _history(client, rid, "loss") == [(1, 1.0), (2, 0.5), (3, 0.25)]
    assert _history(client, rid, "val_loss") == [(1, pytest.approx(1.1)), (2, 0.6), (3, 0.35)]
    assert _history(client, rid, "accuracy") == [(1, 0.6), (2, 0.7), (3, 0.8)]
    for key, value in (("lr", 1e-4), ("images_per_second", 40.0), ("seconds", 2.0)):
        assert _history(client, rid, key) == [(1, value), (2, value), (3, value)]
    # NaN values are left out, as in TensorBoard
    assert set(run.data.metrics) == {"loss", "accuracy", "val_loss", "lr",
                                     "images_per_second", "seconds"}
    assert not (run_dir / "tb").exists()  # TensorBoard was not asked for
    assert sorted(p.name for p in run_dir.iterdir()) == ["mlruns"]


def test_both_trackers_and_a_failed_model(mlflow, tmp_path):
    pytest.importorskip("tensorboard", reason="needs the tensorboard package")
    from ensemble_dfd.training.tracking import read_scalars

    _train(tmp_path, "M2", 0, [1.0, 0.5], failed=True, trackers=("tensorboard", "mlflow"))
    assert read_scalars(tmp_path / "tb" / "M2")["train/epoch_loss"] == {1: 1.0, 2: 0.5}
    client, exp = _store(tmp_path)
    [run] = client.search_runs([exp.experiment_id])
    assert (run.info.run_name, run.info.status) == ("M2", "FAILED")


def test_resumed_model_continues_its_run(mlflow, tmp_path):
    # killed after epoch 3 ran but before its checkpoint: resumed after epoch 2
    _train(tmp_path, "M6", 0, [1.0, 0.5, 0.4], failed=True)
    client, exp = _store(tmp_path)
    [first] = client.search_runs([exp.experiment_id])
    log: list[str] = []
    t = ModelTracker(tmp_path / "tb", "M6", ["mlflow"], log.append)
    t.start({**HPARAMS, "epochs_frozen": 3, "extra": 7}, 2)
    assert client.get_run(first.info.run_id).info.status == "RUNNING"
    t.epoch(_row(3, 0.25))
    t.close()
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.run_id == first.info.run_id
    assert run.info.status == "FINISHED"
    # MLflow cannot drop a value: epoch 3 twice, the resumed one last
    assert _history(client, run.info.run_id, "loss") == [(1, 1.0), (2, 0.5), (3, 0.4),
                                                         (3, 0.25)]
    assert run.data.tags["ensemble_dfd.resumed_after_epoch"] == "2"
    assert run.data.params["epochs_frozen"] == "2" and run.data.params["extra"] == "7"
    assert any("epochs_frozen" in line for line in log)


def test_fresh_start_makes_a_new_run(mlflow, tmp_path):
    """A model started again from scratch (killed before its first checkpoint, or
    --overwrite): a new run; the killed attempt's run, left RUNNING, is marked KILLED."""
    t = ModelTracker(tmp_path / "tb", "M6", ["mlflow"])
    t.start(HPARAMS, 0)
    t.epoch(_row(1, 1.0))  # then the process dies: no close
    _train(tmp_path, "M6", 0, [0.9])
    client, exp = _store(tmp_path)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    assert [(r.info.run_name, r.info.status) for r in runs] == [("M6", "KILLED"),
                                                                ("M6", "FINISHED")]
    assert _history(client, runs[1].info.run_id, "loss") == [(1, 0.9)]


def _comparison() -> pd.DataFrame:
    return pd.DataFrame({
        "split": ["test", "test", "test"], "level": ["image", "image", "video"],
        "source": ["all", "all", "all"], "predictor": ["M6", "stack+lr", "M6"],
        "kind": ["base", "meta", "base"], "n": [100, 100, 10],
        "acc": [0.8, 0.85, 0.9], "auc": [0.88, 0.9, float("nan")],
        "mcc": [0.6, 0.7, 0.8], "logloss": [0.4, 0.35, 0.3]})


def test_stack_comparison(mlflow, tmp_path):
    table = _comparison()
    log: list[str] = []
    track_comparison(tmp_path, ["mlflow"], table, "stack+lr beats M6", log.append)
    track_comparison(tmp_path, ["mlflow"], table.assign(acc=table.acc - 0.1), "again",
                     log.append)
    client, exp = _store(tmp_path)
    [run] = client.search_runs([exp.experiment_id])  # the first one was deleted
    assert (run.info.run_name, run.info.status) == ("stack", "FINISHED")
    expected = {k.replace("+", "_"): v for k, v in
                comparison_scalars(table.assign(acc=table.acc - 0.1)).items() if v == v}
    assert run.data.metrics == pytest.approx(expected)
    assert run.data.metrics["test_image_all/acc/stack_lr"] == pytest.approx(0.75)
    assert "test_video_all/auc/M6" not in run.data.metrics  # NaN
    assert run.data.tags["headline"] == "again"
    assert run.data.tags["mlflow.note.content"].startswith("**Headline:** again")
    assert "| stack+lr |" in run.data.tags["mlflow.note.content"]
    assert not (tmp_path / "tb").exists()


def test_stack_sends_tensorboard_and_mlflow_the_same_numbers(mlflow, tmp_path):
    pytest.importorskip("tensorboard", reason="needs the tensorboard package")
    from ensemble_dfd.training.tracking import read_scalars

    track_comparison(tmp_path, ["tensorboard", "mlflow"], _comparison(), "h", print)
    tb = {tag.replace("+", "_"): steps[0]
          for tag, steps in read_scalars(tmp_path / "tb" / "stack").items()}
    client, exp = _store(tmp_path)
    [run] = client.search_runs([exp.experiment_id])
    assert len(tb) == 11
    assert run.data.metrics == pytest.approx(tb, rel=1e-6)  # TensorBoard keeps float32


def _no_mlflow(monkeypatch):
    """mlflow not importable (as where it is not installed)."""
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError


def test_missing_package_is_one_clear_error(monkeypatch, tmp_path):
    _no_mlflow(monkeypatch)
    with pytest.raises(ImportError):
        import mlflow  # noqa: F401
    hint = 'pip install -e ".[mlflow]"'
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[mlflow\]"') as err:
        ModelTracker(tmp_path / "tb", "M6", ["tensorboard", "mlflow"])
    assert hint in str(err.value)
    with pytest.raises(ConfigError, match="mlflow"):
        prepare_tracking(tmp_path, ["mlflow"])
    prepare_tracking(tmp_path, ["tensorboard"])  # not asked for: fine
    ModelTracker(tmp_path / "tb", "M6", ["tensorboard"]).close()
    assert not (tmp_path / "mlruns").exists()
    log: list[str] = []  # stack: a warning, the comparison is in RUN/stack anyway
    track_comparison(tmp_path, ["mlflow"], _comparison(), "h", log.append)
    assert len(log) == 1 and hint in log[0] and log[0].startswith("warning")


def test_missing_package_fails_before_any_training(monkeypatch, tmp_path):
    from ensemble_dfd import base_train

    _no_mlflow(monkeypatch)

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(base_train, "record_device", no_training)
    monkeypatch.setattr(base_train, "_train_here", no_training)
    monkeypatch.setattr(base_train, "_in_child", no_training)
    cfg = load_config(None, {"train": {"models": ["M6"], "per_model": {
        "M6": {"tracking": ["tensorboard", "mlflow"]}}}})
    with pytest.raises(ConfigError, match=r"\[mlflow\]"):
        base_train.train_all(cfg, tmp_path / "data", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_config_accepts_mlflow():
    cfg = load_config(None, {"train": {"tracking": ["tensorboard", "mlflow"]}})
    assert cfg.train.tracking == ("tensorboard", "mlflow")
    with pytest.raises(ConfigError, match="unknown tracker.*wandb.*have: tensorboard, mlflow"):
        load_config(None, {"train": {"tracking": ["wandb"]}})


def test_mlflow_imported_only_when_asked_for(mlflow, tmp_path):
    """Without MLFLOW_ALLOW_FILE_STORE in the environment (the tracker allows MLflow's file
    store itself), and without importing mlflow unless "mlflow" is configured."""
    code = (
        "import sys; from pathlib import Path\n"
        "from ensemble_dfd.training.tracking import ModelTracker\n"
        "import ensemble_dfd.config, ensemble_dfd.stack\n"
        f"run = Path({str(tmp_path)!r})\n"
        "t = ModelTracker(run / 'tb', 'M1', ['tensorboard']); t.start({'a': 1}, 0); t.close()\n"
        "assert 'mlflow' not in sys.modules, 'mlflow imported'\n"
        "t = ModelTracker(run / 'tb', 'M1', ['mlflow']); t.start({'a': 1}, 0)\n"
        "t.epoch({'epoch': 1, 'loss': 0.5}); t.close()\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ALLOW_FILE_STORE"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client, exp = _store(tmp_path)
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert _history(client, run.info.run_id, "loss") == [(1, 0.5)]
