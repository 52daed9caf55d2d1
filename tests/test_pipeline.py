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
    # the demo's own settings but one epoch where it has six (a minute less to test; what
    # is checked here does not depend on the number of epochs)
    fewer = ["--set", "train.epochs_frozen=1"]
    assert pipeline.main(["--demo", "--out", str(run), *fewer]) == 0
    summary = _check_run(run, "wild")
    assert (run / "demo_data" / "synthetic-faces" / "SYNTHETIC.txt").is_file()
    models = sorted(p.name for p in (run / "models").iterdir())
    assert models == ["M6", "M9"]
    # a rerun resumes: every step is found finished, nothing is retrained
    stamp = (run / "models" / "M6" / "model.keras").stat().st_mtime_ns
    assert pipeline.main(["--demo", "--out", str(run), *fewer]) == 0
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
    cfg.write_text('[pipeline]\ndatasets = "x"\n')
    from ensemble_dfd.config import load_config

    with pytest.raises(ConfigError, match="pipeline.datasets"):
        load_config(cfg)
    cfg.write_text('[pipeline]\ndataset = "x"\nroot = "r"\n')
    with pytest.raises(ConfigError, match="pipeline.dataset: 'x' is no dataset reader"):
        load_config(cfg)


class FakeSteps:
    """Stand-ins for the chained commands: each records its argv and writes what the real
    one would leave behind (models, logits rows, the comparison, the report page)."""

    def __init__(self, run: Path, monkeypatch):
        from ensemble_dfd import base_train, collect, prepare, report, stack

        self.run, self.calls = run, []
        for mod, fn in ((prepare, self.prepare), (base_train, self.base_train),
                        (collect, self.collect), (stack, self.stack), (report, self.report)):
            monkeypatch.setattr(mod, "main", fn)
        monkeypatch.setattr(pipeline, "summary_table", lambda out: pd.DataFrame())
        self.base_train([])

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def _touch(self, path: Path, text: str) -> None:
        """Write `path` 1 s after everything else in the run, as a real step would be."""
        import os

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        latest = max(p.stat().st_mtime_ns for p in self.run.rglob("*") if p.is_file())
        os.utime(path, ns=(latest + 10**9, latest + 10**9))

    def prepare(self, argv: list[str]) -> int:
        self.calls.append(("prepare", argv))
        self._touch(Path(argv[argv.index("--out") + 1]) / "manifest.csv", "path\n")
        return 0

    def base_train(self, argv: list[str]) -> int:
        if argv:
            self.calls.append(("base_train", argv))
        for ref in ("M6", "M9"):
            for name in ("done.json", "model.keras"):
                path = self.run / "models" / ref / name
                if not path.exists():
                    self._touch(path, "{}")
        if not (self.run / "logits.parquet").exists():
            self._write_split(["validation", "test", "wild"], ["M6", "M9"])
        return 0

    def _write_split(self, splits: list[str], models: list[str]) -> None:
        from ensemble_dfd.stacking import logits as store

        rows = pd.DataFrame([{"run": "r", "model": m, "split": s, "path": f"{s}/{i}.jpg",
                              "label": i % 2, "logit": 0.5} for s in splits for m in models
                             for i in range(4)])
        store.write_store(self.run, rows, None)
        latest = max(p.stat().st_mtime_ns for p in self.run.rglob("*") if p.is_file())
        import os

        os.utime(self.run / "logits.parquet", ns=(latest + 10**9, latest + 10**9))

    def collect(self, argv: list[str]) -> int:
        self.calls.append(("collect", argv))
        self._write_split([argv[argv.index("--as-split") + 1]],
                          argv[argv.index("--models") + 1].split(","))
        return 0

    def stack(self, argv: list[str]) -> int:
        self.calls.append(("stack", argv))
        self._touch(self.run / "stack" / "comparison.csv", "split\n")
        return 0

    def report(self, argv: list[str]) -> int:
        self.calls.append(("report", argv))
        self._touch(self.run / "report" / "index.html", "<html>")
        return 0


def test_a_finished_run_gaining_evaluation_sets_only_collects_them(tmp_path, monkeypatch):
    """The models are trained and wild is in the store: adding [evaluate] sets collects only
    them (a video set is prepared first), then stack and report are redone; a rerun with
    nothing new redoes nothing."""
    run, data, vids = tmp_path / "run", tmp_path / "ds", tmp_path / "vids"
    data.mkdir()
    (data / "manifest.csv").write_text("path,split,label\n")
    vids.mkdir()
    (vids / "labels.csv").write_text("path,label\n")
    steps = FakeSteps(run, monkeypatch)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[pipeline]\ndata = "{data}"\n[evaluate]\nwild = "{data}"\n'
                   f'big = {{ data = "{data / "manifest.csv"}", split = "test" }}\n')
    argv = ["--config", str(cfg), "--out", str(run)]
    assert pipeline.main(argv) == 0
    assert steps.names() == ["base_train", "collect", "stack", "report"]
    collect_argv = steps.calls[1][1]
    assert collect_argv[collect_argv.index("--as-split") + 1] == "big"
    assert collect_argv[collect_argv.index("--split") + 1] == "test"
    assert collect_argv[collect_argv.index("--models") + 1] == "M6,M9"
    report_argv = steps.calls[3][1]
    assert [report_argv[i + 1] for i, a in enumerate(report_argv) if a == "--data"] == [
        str(data)]  # one folder once, a manifest given as its folder

    steps.calls.clear()
    assert pipeline.main(argv) == 0  # nothing new: stack and report stay
    assert steps.names() == ["base_train"]

    steps.calls.clear()
    with cfg.open("a") as fh:
        fh.write(f'clips = {{ videos = "{vids}", frames_per_video = 8 }}\n')
    assert pipeline.main(argv) == 0
    assert steps.names() == ["prepare", "base_train", "collect", "stack", "report"]
    prep = steps.calls[0][1]
    assert prep[prep.index("--out") + 1] == str(run / "extra" / "clips")
    assert prep[prep.index("--frames-per-video") + 1] == "8" and "--every" not in prep
    assert prep[prep.index("--labels") + 1] == str(vids / "labels.csv")
    assert steps.calls[2][1][steps.calls[2][1].index("--as-split") + 1] == "clips"
    assert str(run / "extra" / "clips") in steps.calls[4][1]
    store = pd.read_parquet(run / "logits.parquet")
    assert sorted(store["split"].unique()) == ["big", "clips", "test", "validation", "wild"]

    # a model trained later: only it is collected on the sets
    steps.calls.clear()
    for name in ("done.json", "model.keras"):
        steps._touch(run / "models" / "M1" / name, "{}")
    steps._write_split(["validation", "test"], ["M1"])
    assert pipeline.main(argv) == 0
    collected = [a for n, a in steps.calls if n == "collect"]
    assert [a[a.index("--models") + 1] for a in collected] == ["M1", "M1", "M1"]


def test_evaluation_inputs_are_checked_before_any_step(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    steps = FakeSteps(run, monkeypatch)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[pipeline]\ndata = "{tmp_path}"\n[evaluate]\n'
                   f'gone = {{ data = "{tmp_path / "nope"}" }}\n')
    assert pipeline.main(["--config", str(cfg), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: evaluate.gone: {tmp_path / 'nope'}: no such dataset" in err
    cfg.write_text(f'[pipeline]\ndata = "{tmp_path}"\n[evaluate]\n'
                   f'clips = {{ videos = "{tmp_path}" }}\n')
    assert pipeline.main(["--config", str(cfg), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"evaluate.clips: {tmp_path / 'labels.csv'}: no labels CSV" in err
    assert steps.calls == []


def test_real_finished_run_gains_an_evaluation_set(tiny_run, synthetic_dataset, tmp_path):
    """The trained tiny run (its config.toml recorded by base_train) resumed by the pipeline
    with a new [evaluate] set: no model is retrained, the old logits stay as they were, and
    only the new split is collected, for both models."""
    from helpers import link_copy

    run = link_copy(tiny_run, tmp_path / "run")
    before = pd.read_parquet(run / "logits.parquet")
    stamps = {p: p.stat().st_mtime_ns for p in (run / "models").rglob("*.keras")}
    assert pipeline.main([
        "--config", str(run / "config.toml"), "--out", str(run),
        "--set", f'pipeline.data="{synthetic_dataset}"',
        "--set", f'evaluate.again={{ data = "{synthetic_dataset}", split = "test" }}',
        "--set", "pipeline.stack=false", "--set", "pipeline.report=false"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (run / "models").rglob("*.keras")} == stamps
    after = pd.read_parquet(run / "logits.parquet")
    old = after[after["split"] != "again"].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, before.reset_index(drop=True))
    new = after[after["split"] == "again"]
    test = before[before["split"] == "test"]
    assert sorted(new["model"].unique()) == sorted(test["model"].unique())
    assert sorted(new["path"]) == sorted(test["path"])  # the same images, its own split
    log = (run / "pipeline.log").read_text()
    assert "finished earlier, skipping" in (run / "base_train.log").read_text()
    assert "collect --run" in log and "--as-split again" in log


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
models = ["M6", "M2"]  # the quickest pair to trace and export (the demo has M9)
process_per_model = false  # no child processes to start (the shared tiny run has them)
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
[evaluate]
wild = {{ videos = "{wild}", every = 120 }}
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


def test_public_dataset_sets_train_evaluate_and_optional_skips(tmp_path, monkeypatch):
    """[pipeline] dataset = NAME trains on a download read by its reader; an [evaluate]
    dataset set is prepared with its reader's flags and collected on its split; an optional
    one whose root is absent is skipped with a line, a required one stops the run first."""
    dfdc = tmp_path / "dfdc" / "dfdc_train_part_3"
    dfdc.mkdir(parents=True)
    (dfdc / "metadata.json").write_text("{}")
    run = tmp_path / "run"
    steps = FakeSteps(run, monkeypatch)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[pipeline]\ndataset = "ffpp"\nroot = "{tmp_path}/ff"\n'
                   'compression = "c40"\nsplits = "/s"\n[evaluate]\n'
                   f'dfdc = {{ dataset = "dfdc", root = "{tmp_path}/dfdc", split = "test", '
                   'part_splits = "test=0-49" }\n'
                   f'cdf = {{ dataset = "celebdf", root = "{tmp_path}/nope", optional = true }}\n')
    assert pipeline.main(["--config", str(cfg), "--out", str(run)]) == 0
    assert steps.names() == ["prepare", "prepare", "base_train", "collect", "stack", "report"]
    train = steps.calls[0][1]
    assert train[:9] == ["all", "--dataset", "ffpp", "--root", f"{tmp_path}/ff",
                         "--compression", "c40", "--splits", "/s"]
    ev = steps.calls[1][1]
    assert ev[:7] == ["all", "--dataset", "dfdc", "--root", f"{tmp_path}/dfdc",
                      "--part-splits", "test=0-49"]
    collect_argv = steps.calls[3][1]
    assert collect_argv[collect_argv.index("--split") + 1] == "test"
    log = (run / "pipeline.log").read_text()
    assert f"evaluate.cdf skipped (optional, not readable: {tmp_path}/nope: no such folder)" \
        in log
    steps.calls.clear()
    cfg.write_text(cfg.read_text().replace(", optional = true", ""))
    assert pipeline.main(["--config", str(cfg), "--out", str(tmp_path / "run2")]) == 2
    assert steps.calls == []
    cfg.write_text(cfg.read_text().replace(f"{tmp_path}/nope", str(dfdc.parent)))
    assert pipeline.main(["--config", str(cfg), "--out", str(tmp_path / "run3")]) == 2
    assert steps.calls == []  # a root that is no Celeb-DF layout: stopped before any step
