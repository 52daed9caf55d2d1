"""Bring-your-own logits: a CSV/parquet table through `stack` and `report`, and the errors
a bad table gets (issue 13, item 7)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensemble_dfd import report, stack
from ensemble_dfd.ensemble import saved
from ensemble_dfd.stacking.logits_table import LogitsTableError, check_table, load_table, write_run
from ensemble_dfd.stacking.synthetic_logits import make_store

NAMES = {"M1": "xception", "M2": "effnet_b4", "M3": "noise"}


def _table(seed: int = 1, group: bool = True, fit: str = "val") -> pd.DataFrame:
    """A detector-agnostic table: other model names, the fit split called `val`."""
    logits, imgs = make_store(n_models=3, sizes={fit: 240, "test": 200},
                              strength=[0.9, 0.6, 0.0], seed=seed)
    t = logits.drop(columns="run").merge(imgs[["split", "path", "group"]],
                                         on=["split", "path"])
    t["model"] = t["model"].map(NAMES)
    t["source"] = np.where(t["path"].str.contains("_0000[0-4]"), "faceswap", "reenact")
    return t if group else t.drop(columns="group")


@pytest.fixture(scope="module")
def byo(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("byo")
    csv = d / "detectors.csv"
    _table().to_csv(csv, index=False)
    out = d / "out"
    assert stack.main(["--logits", str(csv), "--out", str(out), "--fit-split", "val",
                       "--bootstrap", "50", "--learners", "soft_vote,weighted_vote,caruana"]) == 0
    return csv, out


def test_stack_on_a_csv_end_to_end(byo):
    csv, out = byo
    for f in ("logits.parquet", "images.parquet", "imported.json", "stack/comparison.csv",
              "stack/stack.json", "stack/learners/weighted_vote.json"):
        assert (out / f).is_file(), f
    df = pd.read_csv(out / "stack" / "comparison.csv")
    assert set(df["split"]) == {"validation_oof", "test"}
    assert set(df["predictor"]) == {*NAMES.values(), "soft_vote", "weighted_vote", "caruana"}
    test = df[df.split == "test"]
    test = test[(test["level"] == "frame") & (test["source"] == "all")]
    assert (test["n"] == 200).all() and (test["n_groups"] == 40).all()  # groups kept
    info = json.loads((out / "stack" / "stack.json").read_text())
    assert info["best_single"] == "xception"
    loaded = saved.load_meta_learner(out / "stack" / "learners" / "caruana.json",
                                     list(NAMES.values()))
    assert loaded.models == ["effnet_b4", "noise", "xception"]
    imported = json.loads((out / "imported.json").read_text())
    assert imported["splits"] == {"val": "validation", "test": "test"}
    assert imported["defaults"] == {"run": True, "group": False, "source": False}
    images = pd.read_parquet(out / "images.parquet")
    assert set(images["source"]) == {"faceswap", "reenact"}
    store = pd.read_parquet(out / "logits.parquet")
    assert set(store["run"]) == {"detectors"}  # the table's name when it has no run column


def test_report_on_the_same_table_reuses_the_import_and_says_what_it_skipped(byo):
    csv, out = byo
    before = (out / "logits.parquet").stat().st_mtime_ns
    assert report.main(["--logits", str(csv), "--out", str(out), "--fit-split", "val",
                        "--no-progress"]) == 0
    assert (out / "logits.parquet").stat().st_mtime_ns == before  # same table: not rewritten
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["splits"] == ["test"]
    assert summary["learners"] == ["soft_vote", "weighted_vote", "caruana"]
    skipped = " ".join(summary["skipped"])
    assert "degradation" in skipped and "attribution" in skipped
    assert (out / "report" / "diversity_test.csv").is_file()
    assert "Skipped the degradation" in (out / "report" / "index.html").read_text()


def test_another_table_into_the_same_folder_needs_overwrite(byo, tmp_path, capsys):
    _, out = byo
    other = tmp_path / "other.csv"
    _table(seed=2).to_csv(other, index=False)
    args = ["--logits", str(other), "--out", str(out), "--fit-split", "val", "--bootstrap",
            "0", "--learners", "soft_vote"]
    assert stack.main(args) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_parquet_without_group_or_run(tmp_path):
    t = _table(group=False, fit="validation").drop(columns="source")
    pq = tmp_path / "scores.parquet"
    t.to_parquet(pq, index=False)
    out = tmp_path / "out"
    assert stack.main(["--logits", str(pq), "--out", str(out), "--bootstrap", "0",
                       "--learners", "soft_vote"]) == 0
    df = pd.read_csv(out / "stack" / "comparison.csv")
    assert (df["n_groups"] == df["n"]).all()  # group defaults to the path
    images = pd.read_parquet(out / "images.parquet")
    assert (images["group"] == images["path"]).all() and (images["source"] == "").all()


def _bad(tmp_path: Path, t: pd.DataFrame, name: str = "t.csv") -> Path:
    p = tmp_path / name
    t.to_csv(p, index=False)
    return p


def _drop_row(t: pd.DataFrame) -> pd.DataFrame:
    hit = (t["model"] == "noise") & (t["split"] == "test")
    return t.drop(index=t.index[hit][:1])


BAD = [
    ("missing column", lambda t: t.drop(columns="logit"), {}, r"missing column\(s\) logit"),
    ("non-binary label", lambda t: t.assign(label=t["label"].where(t.index != 7, 2)), {},
     r"label must be 0 \(Fake\) or 1 \(Real\).*first 2 at line 9"),
    ("NaN logit", lambda t: t.assign(logit=t["logit"].where(t.index != 3, np.nan)), {},
     r"1 logit\(s\) are missing, NaN.*line 5"),
    ("text logit", lambda t: t.astype({"logit": object}).assign(
        logit=lambda d: d["logit"].where(d.index != 0, "high")), {}, r"'high' at line 2"),
    ("model lacks rows", _drop_row, {}, r"model noise lacks 1 of the 200 images of split test"),
    ("model absent from a split", lambda t: t[~((t.model == "noise") & (t.split == "test"))],
     {}, r"model noise has no rows for split test"),
    ("no validation split", lambda t: t, {"fit_split": "validation"},
     r"no 'validation' split to fit.*splits: val, test.*--fit-split"),
    ("duplicate rows", lambda t: pd.concat([t, t.iloc[[5]]]), {}, r"1 duplicate"),
    ("labels differ", lambda t: t.assign(label=np.where(
        (t.model == "noise") & (t.index == t.index[t.model == "noise"][0]),
        1 - t["label"], t["label"])), {}, r"different label values"),
    ("one-class fit split", lambda t: t[(t.split != "val") | (t.label == 1)], {},
     r"split val \(the fit split\) holds only Real"),
    ("name clash", lambda t: pd.concat([t, t[t.split == "test"].assign(split="validation")]),
     {}, r"already has a split named 'validation'"),
    ("empty path", lambda t: t.assign(path=t["path"].where(t.index != 2, "")), {},
     r"empty value\(s\) in column path, first at line 4"),
]


@pytest.mark.parametrize("what,edit,kw,match", BAD, ids=[b[0] for b in BAD])
def test_bad_tables_name_the_file_and_the_problem(what, edit, kw, match, tmp_path):
    path = _bad(tmp_path, edit(_table()))
    with pytest.raises(LogitsTableError, match=match) as err:
        load_table(path, **({"fit_split": "val"} | kw))
    assert str(path) in str(err.value)


def test_unknown_format_and_missing_file(tmp_path):
    p = tmp_path / "t.xlsx"
    p.write_text("x")
    with pytest.raises(LogitsTableError, match="unknown table format"):
        load_table(p)
    with pytest.raises(LogitsTableError, match="no such file"):
        load_table(tmp_path / "absent.csv")


def test_cli_errors_exit_2_and_write_nothing(tmp_path, capsys):
    path = _bad(tmp_path, _table().drop(columns="label"))
    out = tmp_path / "out"
    assert stack.main(["--logits", str(path), "--out", str(out), "--fit-split", "val"]) == 2
    assert f"{path}: missing column(s) label" in capsys.readouterr().err
    assert not out.exists()
    assert stack.main(["--logits", str(path)]) == 2
    assert "--logits needs --out" in capsys.readouterr().err
    assert stack.main(["--run", str(tmp_path), "--out", str(out)]) == 2
    assert "go with --logits" in capsys.readouterr().err


def test_refuses_to_import_into_a_trained_run(tmp_path):
    (tmp_path / "config.toml").write_text("")
    imported = check_table(_table(fit="validation"), "t")
    with pytest.raises(LogitsTableError, match="trained run folder"):
        write_run(imported, tmp_path)


ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_is_the_file_and_runs(tmp_path):
    example = ROOT / "examples" / "byo_logits.csv"
    lines = example.read_text().splitlines()
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```csv\n", 1)[1].split("```", 1)[0].splitlines()
    shown = [x for x in block if x != "..."]
    assert shown[:5] == lines[:5] and shown[-1] == lines[-1]
    assert len(lines) == 41  # header + 40 rows, as the README says
    out = tmp_path / "byo_run"
    assert stack.main(["--logits", str(example), "--out", str(out), "--bootstrap", "0"]) == 0
    df = pd.read_csv(out / "stack" / "comparison.csv")
    df = df[(df["level"] == "frame") & (df["source"] == "all")]
    assert set(df.loc[df.split == "test", "n"]) == {8}
    assert set(df.loc[df.split == "test", "n_groups"]) == {4}


def test_report_refuses_a_stack_computed_from_another_table(byo, tmp_path, capsys):
    _, out = byo
    other = tmp_path / "other.csv"
    _table(seed=3).to_csv(other, index=False)
    before = (out / "logits.parquet").read_bytes()
    assert report.main(["--logits", str(other), "--out", str(out), "--fit-split", "val",
                        "--overwrite"]) == 2
    assert "computed from another table" in capsys.readouterr().err
    assert (out / "logits.parquet").read_bytes() == before


def _dfb_scores(table: pd.DataFrame, model: str) -> pd.DataFrame:
    """One model's rows as DeepfakeBench's test loop records them: P(fake), label 1 = fake,
    the frame's path (its parent folder = the video)."""
    part = table[table["model"] == model]
    p_fake = 1.0 / (1.0 + np.exp(part["logit"].to_numpy()))  # logit > 0 = Real here
    return pd.DataFrame({"img_names": "frames/" + part["group"] + "/" + part["path"],
                         "prob": p_fake, "label": 1 - part["label"], "split": part["split"]})


def test_deepfakebench_scores_join_our_table(tmp_path):
    """--logits-format dfb: DeepfakeBench scores flipped into ours and joined with our own
    table give the logits and per-video groups the same rows in our format give."""
    t = _table()
    t["path"] = "frames/" + t["group"] + "/" + t["path"]
    ours = tmp_path / "ours.csv"
    t[t["model"] != "xception"].to_csv(ours, index=False)
    dfb = tmp_path / "xception.csv"
    _dfb_scores(_table(), "xception").to_csv(dfb, index=False)
    joined = load_table([ours, dfb], "val", ["table", "dfb"])
    plain = tmp_path / "plain.csv"
    t.to_csv(plain, index=False)
    direct = load_table(plain, "val")
    key = ["model", "split", "path"]
    a = joined.logits.sort_values(key).reset_index(drop=True)
    b = direct.logits.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a.drop(columns=["logit", "run"]),
                                  b.drop(columns=["logit", "run"]))
    assert np.allclose(a["logit"], b["logit"], atol=1e-6)
    img = joined.images.set_index("path")
    assert (img["group"] == [p.split("/")[1] for p in img.index]).all()
    out = tmp_path / "out"
    assert stack.main(["--logits", str(ours), "--logits", str(dfb), "--logits-format",
                       "table", "--logits-format", "dfb", "--out", str(out), "--fit-split",
                       "val", "--bootstrap", "0", "--learners", "soft_vote"]) == 0
    assert "xception" in set(pd.read_csv(out / "stack" / "comparison.csv")["predictor"])


def test_deepfakebench_scores_bad_input(tmp_path, capsys):
    bad = tmp_path / "s.csv"
    pd.DataFrame({"img_names": ["a/1.png"], "prob": [1.5], "label": [1],
                  "split": ["val"]}).to_csv(bad, index=False)
    assert stack.main(["--logits", str(bad), "--logits-format", "dfb", "--out",
                       str(tmp_path / "o")]) == 2
    assert "probability in [0, 1]" in capsys.readouterr().err
    pd.DataFrame({"x": [1]}).to_csv(bad, index=False)
    assert stack.main(["--logits", str(bad), "--logits-format", "dfb", "--out",
                       str(tmp_path / "o")]) == 2
    assert "no image path column" in capsys.readouterr().err
