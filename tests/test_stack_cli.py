"""`python -m ensemble_dfd.stack` end to end on small synthetic logits stores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensemble_dfd import stack
from ensemble_dfd.ensemble import saved
from ensemble_dfd.stacking.logits import write_store
from ensemble_dfd.stacking.synthetic_logits import make_store

REQUIRED = ["split", "predictor", "kind", "n", "tp", "tn", "fp", "fn", "acc", "tpr", "tnr",
            "ppv", "npv", "f1", "mcc", "auc", "acc_lo", "acc_hi", "auc_lo", "auc_hi", "mcc_lo",
            "mcc_hi", "logloss", "brier", "ece", "mcnemar_p"]
FAST = ["--bootstrap", "200", "--learners", "soft_vote,stack_lr,caruana,hard_vote"]


def _store(tmp_path: Path, name: str = "run", images: bool = True, **kw) -> Path:
    kw.setdefault("n_models", 4)
    kw.setdefault("sizes", {"validation": 300, "test": 300, "wild": 40})
    kw.setdefault("strength", [0.9, 0.6, 0.6, 0.0])
    logits, imgs = make_store(**kw)
    run = tmp_path / name
    write_store(run, logits, imgs if images else None)
    return run


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    run = _store(tmp_path_factory.mktemp("stack"))
    assert stack.main(["--run", str(run), *FAST]) == 0
    return run


def test_outputs_and_columns(done, capsys):
    out = done / "stack"
    for f in ("comparison.csv", "comparison.md", "weights.csv", "predictions.parquet",
              "stack.json", "env.json", "roc_test.png", "roc_wild.png",
              "roc_validation_oof.png", "metrics_ci_test.png", "metrics_ci_wild.png"):
        assert (out / f).is_file(), f
    df = pd.read_csv(out / "comparison.csv")
    assert set(REQUIRED) <= set(df.columns)
    assert set(df["split"]) == {"validation_oof", "test", "wild"}
    assert set(df["kind"]) == {"single", "ensemble"}
    assert set(df["level"]) == {"frame", "video"} and set(df["source"]) == {"all"}
    assert len(df) == 2 * 3 * (4 + 4)  # one source: no per-source rows
    assert not df.duplicated(["split", "level", "source", "predictor"]).any()
    video = df[df.level == "video"]
    assert (video["n"] < df.loc[df.level == "frame", "n"].to_numpy()).all()
    assert (df.tp + df.tn + df.fp + df.fn == df.n).all()
    assert ((df.acc_lo <= df.acc + 1e-12) & (df.acc <= df.acc_hi + 1e-12)).all()
    info = json.loads((out / "stack.json").read_text())
    assert info["best_single"] == "M1"  # the strongest synthetic model
    assert (df["vs"] == "M1").all()
    md = (out / "comparison.md").read_text()
    assert "## test" in md and "stack_lr" in md
    assert not list(done.glob(".stack*"))  # no temp folders left


def test_learners_saved_with_sidecars_and_loadable(done):
    ldir = done / "stack" / "learners"
    side = json.loads((ldir / "stack_lr.json").read_text())
    assert side["models"] == ["M1", "M2", "M3", "M4"]
    assert side["fit_split"] == "validation" and side["n"] == 300
    assert "scikit-learn" in side["versions"] and "threshold" in side
    loaded = saved.load_meta_learner(ldir / "stack_lr.json", ["M4", "M3", "M2", "M1", "M9"])
    assert loaded.models == ["M1", "M2", "M3", "M4"]
    preds = pd.read_parquet(done / "stack" / "predictions.parquet")
    test = preds[preds.split == "test"]
    logits = pd.read_parquet(done / "logits.parquet")
    wide = logits[logits.split == "test"].pivot(index="path", columns="model", values="logit")
    X = wide.loc[test["path"], loaded.models].to_numpy()
    assert np.allclose(loaded.decision(X), test["stack_lr"].to_numpy())


def test_loader_rejects_missing_models_and_mixed_files(done, tmp_path):
    ldir = done / "stack" / "learners"
    with pytest.raises(saved.MetaLearnerMismatch, match="missing here: M4"):
        saved.load_meta_learner(ldir / "caruana.json", ["M1", "M2", "M3"])
    doc = json.loads((ldir / "stack_lr.json").read_text())
    doc["models"] = doc["models"][:3]  # the state holds four coefficients
    (tmp_path / "x.json").write_text(json.dumps(doc))
    with pytest.raises(saved.MetaLearnerMismatch, match="expects 4 columns"):
        saved.load_meta_learner(tmp_path / "x.json", ["M1", "M2", "M3", "M4"])


def test_learner_files_are_data_not_code(done):
    ldir = done / "stack" / "learners"
    assert not list(ldir.glob("*.joblib")) and not list(ldir.glob("*.pkl"))
    for f in ldir.glob("*.json"):
        doc = json.loads(f.read_text())
        assert doc["format"] == 2 and doc["estimator"]["class"] in saved.LEARNER_CLASSES


def test_weights_show_useless_model(done):
    w = pd.read_csv(done / "stack" / "weights.csv")
    car = w[(w.learner == "caruana") & (w.quantity == "weight")].set_index("model")["value"]
    assert car["M4"] < 0.1
    coef = w[(w.learner == "stack_lr") & (w.quantity == "coef")].set_index("model")["value"]
    assert abs(coef["M4"]) < coef["M1"]


def test_refuses_to_overwrite_then_overwrites(done, capsys):
    before = (done / "stack" / "comparison.csv").stat().st_mtime_ns
    assert stack.main(["--run", str(done), *FAST]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (done / "stack" / "comparison.csv").stat().st_mtime_ns == before
    assert stack.main(["--run", str(done), "--bootstrap", "0", "--learners", "soft_vote",
                       "--threshold", "eer", "--overwrite"]) == 0
    df = pd.read_csv(done / "stack" / "comparison.csv")
    assert set(df["predictor"]) == {"M1", "M2", "M3", "M4", "soft_vote"}
    assert not (done / "stack" / "learners" / "stack_lr.json").exists()
    assert not list(done.glob(".stack*"))


def test_threshold_fpr_and_summary(tmp_path, capsys):
    run = _store(tmp_path, seed=4)
    assert stack.main(["--run", str(run), "--bootstrap", "100", "--learners", "soft_vote",
                       "--threshold", "fpr:0.05", "--models", "M1,M2,M3"]) == 0
    out = capsys.readouterr().out
    assert "best single M1" in out and "=> test:" in out
    df = pd.read_csv(run / "stack" / "comparison.csv")
    v = df[(df.split == "validation_oof") & (df.level == "frame")]
    assert ((v.fp / (v.fp + v.tn)) <= 0.05 + 1e-9).all()
    assert set(df.predictor) == {"M1", "M2", "M3", "soft_vote"}


def test_without_images_table_falls_back_to_paths(tmp_path, capsys):
    run = _store(tmp_path, images=False)
    assert stack.main(["--run", str(run), "--bootstrap", "50", "--learners", "soft_vote"]) == 0
    assert "path as its group" in capsys.readouterr().err


def test_one_class_eval_split_gives_nan_auc_with_warning(tmp_path, capsys):
    logits, imgs = make_store(n_models=3, sizes={"validation": 200, "test": 100}, seed=5)
    keep = ~((logits.split == "test") & (logits.label == 1))
    write_store(tmp_path / "r", logits[keep], imgs[~((imgs.split == "test") & (imgs.label == 1))])
    assert stack.main(["--run", str(tmp_path / "r"), "--bootstrap", "50",
                       "--learners", "soft_vote"]) == 0
    assert "only Fake images" in capsys.readouterr().err
    df = pd.read_csv(tmp_path / "r" / "stack" / "comparison.csv")
    assert df.loc[df.split == "test", "auc"].isna().all()
    assert not (tmp_path / "r" / "stack" / "roc_test.png").exists()


def _bad_nan(run: Path) -> None:
    df = pd.read_parquet(run / "logits.parquet")
    df.loc[5, "logit"] = np.nan
    df.to_parquet(run / "logits.parquet")


def _bad_inf(run: Path) -> None:
    df = pd.read_parquet(run / "logits.parquet")
    df.loc[7, "logit"] = np.inf
    df.to_parquet(run / "logits.parquet")


def _bad_image_sets(run: Path) -> None:
    df = pd.read_parquet(run / "logits.parquet")
    drop = df[(df.model == "M2") & (df.split == "test")].index[:3]
    df.drop(index=drop).to_parquet(run / "logits.parquet")


def _bad_one_class_validation(run: Path) -> None:
    df = pd.read_parquet(run / "logits.parquet")
    df[~((df.split == "validation") & (df.label == 1))].to_parquet(run / "logits.parquet")


def _bad_no_validation(run: Path) -> None:
    df = pd.read_parquet(run / "logits.parquet")
    df[df.split != "validation"].to_parquet(run / "logits.parquet")


def _bad_model_missing_in_test(run: Path) -> None:
    df = pd.read_parquet(run / "logits.parquet")
    df[~((df.split == "test") & (df.model == "M3"))].to_parquet(run / "logits.parquet")


def _bad_groups_missing(run: Path) -> None:
    img = pd.read_parquet(run / "images.parquet")
    img.iloc[10:].to_parquet(run / "images.parquet")


BAD = [
    (_bad_nan, [], "non-finite"),
    (_bad_inf, [], "non-finite"),
    (_bad_image_sets, [], "scored different images"),
    (_bad_one_class_validation, [], "one class"),
    (_bad_no_validation, [], "no 'validation' split"),
    (_bad_model_missing_in_test, [], "no logits for model\\(s\\) M3"),
    (_bad_groups_missing, [], "no group for"),
    (None, ["--models", "M1,M7"], "no logits for model\\(s\\) M7"),
    (None, ["--learners", "soft_vote,magic"], "unknown meta-learner"),
    (None, ["--threshold", "fpr:7"], "bad --threshold"),
    (None, ["--models", "M1,M1"], "duplicate"),
]


@pytest.mark.parametrize("breaker,extra,match", BAD)
def test_bad_input_exit_2_and_nothing_written(tmp_path, capsys, breaker, extra, match):
    run = _store(tmp_path, sizes={"validation": 120, "test": 60})
    if breaker is not None:
        breaker(run)
    before = sorted(p.name for p in run.iterdir())
    assert stack.main(["--run", str(run), "--bootstrap", "20", "--learners", "soft_vote",
                       *extra]) == 2
    err = capsys.readouterr().err
    assert "error:" in err
    import re

    assert re.search(match, err), err
    assert sorted(p.name for p in run.iterdir()) == before  # no stack/, no temp folder


def test_missing_store(tmp_path, capsys):
    assert stack.main(["--run", str(tmp_path / "nothing")]) == 2
    assert "no logits store" in capsys.readouterr().err


def test_module_runs_and_imports_without_tensorflow(tmp_path):
    code = ("import sys, ensemble_dfd.stack, ensemble_dfd.stacking.metrics, ensemble_dfd.ensemble; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    src = Path(__file__).resolve().parents[1] / "src"
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    r = subprocess.run([sys.executable, "-m", "ensemble_dfd.stack", "--help"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--threshold" in r.stdout


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["estimator"].update({"class": "os.system"}), "unknown learner class"),
    (lambda d: d["estimator"]["params"].update({"__class__": "x"}), "do not fit"),
    (lambda d: d["estimator"]["state"].update({"__dict__": 1}), "not a fitted attribute"),
    (lambda d: d["estimator"]["state"].update({"weights_": {"py/object": "os.system"}}),
     "not a saved array"),
    (lambda d: d["estimator"]["state"].pop("weights_"), "incomplete"),
    (lambda d: d.update({"format": 1}), "pickled meta-learner .* not loaded"),
])
def test_edited_learner_files_are_refused_as_data(done, tmp_path, edit, match):
    """Issue 26 (5): a learner file is data; whatever is edited into it is refused, never
    imported or run."""
    # soft_vote: the learner every stack writes (an earlier test re-stacks with it alone)
    doc = json.loads((done / "stack" / "learners" / "soft_vote.json").read_text())
    edit(doc)
    (tmp_path / "x.json").write_text(json.dumps(doc))
    with pytest.raises(saved.MetaLearnerMismatch, match=match):
        saved.load_meta_learner(tmp_path / "x.json", ["M1", "M2", "M3", "M4"])


def test_an_old_pickled_learner_is_never_unpickled(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')",))

    (tmp_path / "old.joblib").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(saved.MetaLearnerMismatch, match="old.joblib: a pickled meta-learner"):
        saved.load_meta_learner(tmp_path / "old.joblib", ["M1"])
    assert saved.saved_names(tmp_path) == ["old"] and not (tmp_path / "ran").exists()
