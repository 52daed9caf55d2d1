"""The main job end to end: the embedded demo, and a tiny profile on dfd-mini + wild videos."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ensemble_dfd import pipeline
from ensemble_dfd.config import ConfigError


def _check_run(run: Path, extra_split: str) -> pd.DataFrame:
    for rel in ("config.toml", "env.json", "logits.parquet", "images.parquet",
                "stack/comparison.csv", "report/index.html", "pipeline_summary.md",
                "pipeline_summary.csv"):
        assert (run / rel).is_file(), rel
    store = pd.read_parquet(run / "logits.parquet")
    assert {"validation", "test", extra_split} <= set(store["split"])
    comp = pd.read_csv(run / "stack" / "comparison.csv")
    assert extra_split in set(comp["split"])
    summary = pd.read_csv(run / "pipeline_summary.csv")
    assert {"split", "predictor", "kind", "acc", "acc_lo", "acc_hi"} <= set(summary.columns)
    assert (summary["kind"] == "single").sum() == summary["split"].nunique()
    assert (summary["acc_lo"] <= summary["acc"]).all()
    assert (summary["acc"] <= summary["acc_hi"]).all()
    assert extra_split in set(summary["split"])
    assert extra_split in (run / "report" / "index.html").read_text()
    return summary


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path):
    run = tmp_path / "demo"
    assert pipeline.main(["--demo", "--out", str(run)]) == 0
    summary = _check_run(run, "wild")
    assert (run / "demo_data" / "synthetic-faces" / "SYNTHETIC.txt").is_file()
    models = sorted(p.name for p in (run / "models").iterdir())
    assert models == ["M6", "M9"]
    # a rerun resumes: every step is found finished, nothing is retrained
    stamp = (run / "models" / "M6" / "model.keras").stat().st_mtime_ns
    assert pipeline.main(["--demo", "--out", str(run)]) == 0
    assert (run / "models" / "M6" / "model.keras").stat().st_mtime_ns == stamp
    assert pd.read_csv(run / "pipeline_summary.csv").equals(summary)


def test_pipeline_needs_config_or_demo(tmp_path, capsys):
    with pytest.raises(SystemExit):
        pipeline.main(["--out", str(tmp_path / "r")])
    assert "--config" in capsys.readouterr().err


def test_pipeline_without_data_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\nmodels = ["M6"]\nweights = "none"\n')
    assert pipeline.main(["--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "names no data = DIR nor videos = DIR" in capsys.readouterr().err


def test_pipeline_config_rejects_unknown_keys(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[pipeline]\ndataset = "x"\n')
    with pytest.raises(ConfigError, match="pipeline.dataset"):
        from ensemble_dfd.config import load_config

        load_config(cfg)


@pytest.mark.integration
@pytest.mark.slow
def test_tiny_profile_on_dfd_mini_and_wild_videos(dfd_mini, wild, tmp_path):
    """Two models, 32 px, one epoch per phase, on real faces; wild videos become faces on
    the way and show up as their own split in the comparison and the report."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(f"""
name = "tiny"
[data]
image_size = 32
limit = 60
[train]
models = ["M6", "M9"]
weights = "none"
freeze_base = false
base_bn_training = true
bn_momentum = 0.5
epochs_frozen = 1
epochs_finetune = 1
lr_frozen = 1e-3
optimizer_finetune = "adam"  # keeps the compiled step: no retrace
lr_finetune = 1e-4
fine_tune_at = 0
mixed_precision = "off"
[pipeline]
data = "{dfd_mini}"
extra_videos = {{ wild = "{wild}" }}
extra_every = 120
""")
    run = tmp_path / "run"
    assert pipeline.main(["--config", str(cfg), "--out", str(run)]) == 0
    _check_run(run, "wild")
    log = pd.read_csv(run / "extra" / "wild" / "faces" / "face_log.csv")
    assert len(log) == 10 and (log["faces_saved"] > 0).all()
    store = pd.read_parquet(run / "logits.parquet")
    wild_rows = store[store["split"] == "wild"]
    assert set(wild_rows["label"]) == {0, 1}
    assert len(store[store["split"] == "test"]) == 2 * 201
