"""Video-level scores, per-source rows, AP/EER and the stack's new files, with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensemble_dfd import stack
from ensemble_dfd.stacking import metrics as M
from ensemble_dfd.stacking import videolevel as V
from ensemble_dfd.stacking.comparison import SplitScores, evaluate_split
from ensemble_dfd.stacking.logits import write_store
from ensemble_dfd.stacking.synthetic_logits import make_store


def _toy() -> SplitScores:
    # three DFDC-style groups, each a real video and a fake made from it
    rows = [("g1", 1, 2.0), ("g1", 1, 0.0), ("g1", 0, -1.0), ("g1", 0, 1.0),
            ("g2", 1, 0.5), ("g2", 1, -0.5), ("g2", 1, 0.0), ("g2", 0, -2.0),
            ("g3", 1, -1.0), ("g3", 0, 3.0), ("g3", 0, -1.0)]
    g, y, z = (np.array(c) for c in zip(*rows, strict=True))
    return SplitScores("test", y.astype(int), g, np.array([f"f{i}" for i in range(len(g))]),
                       {"A": z.astype(float), "B": -z.astype(float)})


def test_video_auc_by_hand():
    # video means: reals g1 1, g2 0, g3 -1; fakes g1 0, g2 -2, g3 1. Real > fake in
    # 4 of 9 pairs, 2 ties (1 vs 1, 0 vs 0) count half: AUC = 5/9
    vid = _toy().to_videos("mean_logit")
    assert vid.level == "video" and vid.y.size == 6
    assert sorted(vid.paths) == ["g1|0", "g1|1", "g2|0", "g2|1", "g3|0", "g3|1"]
    assert M.roc_auc(vid.y, vid.scores["A"]) == pytest.approx(5 / 9)
    assert M.roc_auc(vid.y, vid.scores["B"]) == pytest.approx(4 / 9)
    t = evaluate_split(vid, {"A": "single", "B": "single"}, {"A": 0.0, "B": 0.0}, "A", 0, 0)
    row = t[t.predictor == "A"].iloc[0]
    assert row.level == "video" and row.n == 6 and row.n_groups == 3
    assert row.auc == pytest.approx(5 / 9)
    # threshold 0 at video level: reals 1 (right), 0, -1 (wrong); fakes 0, -2 (right), 1
    assert (row.tp, row.fn, row.tn, row.fp) == (1, 2, 2, 1)


def test_video_column_wins_over_group():
    ss = _toy()
    ss.videos = np.array(["v1", "v1", "v2", "v3", "v4", "v4", "v4", "v5", "v6", "v7", "v7"])
    vid = ss.to_videos("mean_logit")
    assert vid.y.size == 7 and set(vid.groups) == {"g1", "g2", "g3"}
    assert dict(zip(vid.paths, vid.scores["A"], strict=True))["v7|0"] == pytest.approx(1.0)


def test_mean_prob_and_confident_rules():
    z = np.array([4.0, -4.0, 0.0])
    codes = np.zeros(3, dtype=int)
    assert V.aggregate(z, codes, 1, "mean_logit")[0] == pytest.approx(0.0)
    assert V.aggregate(z, codes, 1, "mean_prob")[0] == pytest.approx(0.0, abs=1e-9)
    # Seferbekov's rule at 32 frames: 13 > 32 // 2.5 = 12 confident fakes -> their mean
    p = np.r_[np.full(13, 0.9), np.full(19, 0.3)]
    assert V.confident_fake_prob(p) == pytest.approx(0.9)
    p12 = np.r_[np.full(12, 0.9), np.full(20, 0.3)]  # 12 is not > 12: plain mean
    assert V.confident_fake_prob(p12) == pytest.approx(p12.mean())
    p_real = np.r_[np.full(30, 0.1), np.full(2, 0.5)]  # > 90% confidently real
    assert V.confident_fake_prob(p_real) == pytest.approx(0.1)
    # on logits (P(Real)): 4 of 5 frames confidently fake -> the video is as fake as they are
    zf = M.logit(1 - np.array([0.95, 0.95, 0.95, 0.95, 0.1]))
    out = V.aggregate(zf, np.zeros(5, dtype=int), 1, "confident")[0]
    assert 1 - M.sigmoid(out) == pytest.approx(0.95)
    with pytest.raises(ValueError, match="unknown video aggregate"):
        V.aggregate(z, codes, 1, "median")


def _planted_run(tmp_path: Path) -> Path:
    """Two sources; model M1 is good on source A and inverted on source B."""
    logits, imgs = make_store(n_models=3, sizes={"validation": 400, "test": 600},
                              strength=[1.5, 1.0, 1.0], seed=3)
    src = imgs.set_index(["split", "path"]).assign(
        source=lambda d: np.where(d["group"].str[-1].astype(int) % 2 == 0, "A", "B"))
    key = pd.MultiIndex.from_frame(logits[["split", "path"]])
    on_b = (src["source"].reindex(key).to_numpy() == "B") & (logits["model"] == "M1").to_numpy()
    logits.loc[on_b & (logits["split"] == "test").to_numpy(), "logit"] *= -1
    run = tmp_path / "run"
    write_store(run, logits, src.reset_index())
    (run / "config.toml").write_text('[pipeline]\ndata = "/somewhere/dfd-mini"\n\n'
                                     '[stack]\nvideo_aggregate = "confident"\n'
                                     'min_effect = 0.25\n')
    return run


def test_planted_source_difference_and_new_files(tmp_path):
    run = _planted_run(tmp_path)
    assert stack.main(["--run", str(run), "--bootstrap", "100", "--learners",
                       "soft_vote,stack_lr"]) == 0
    df = pd.read_csv(run / "stack" / "comparison.csv")
    assert set(df.source) == {"all", "A", "B"} and set(df.level) == {"frame", "video"}
    t = df[(df.split == "test") & (df.level == "frame")].set_index(["source", "predictor"])
    assert t.loc[("A", "M1"), "auc"] > 0.75 and t.loc[("B", "M1"), "auc"] < 0.25
    assert abs(t.loc[("A", "M2"), "auc"] - t.loc[("B", "M2"), "auc"]) < 0.1
    assert t.loc[("A", "M1"), "n"] + t.loc[("B", "M1"), "n"] == t.loc[("all", "M1"), "n"]
    for col in ("ap", "eer", "ap_lo", "ap_hi", "mdd_acc", "mdd_auc"):
        assert df[col].notna().any(), col
    assert ((df.eer >= 0) & (df.eer <= 1)).all()
    claims = json.loads((run / "stack" / "claims.json").read_text())
    assert set(claims["splits"]) == {"test"} and claims["min_effect"] == 0.25  # [stack]
    info = json.loads((run / "stack" / "stack.json").read_text())
    assert info["video_aggregate"] == "confident" and "by `confident`" in (
        run / "stack" / "comparison.md").read_text()
    assert claims["headline"] in (run / "stack" / "comparison.md").read_text()
    cross = pd.read_csv(run / "stack" / "cross_dataset.csv")
    assert list(cross.columns) == ["train_set", "eval_set", "level", "source", "predictor",
                                   "n", "n_groups", "auc", "auc_lo", "auc_hi"]
    assert {"all", "A", "B"} <= set(cross.source)  # per-source (per-method) rows too
    assert set(cross.train_set) == {"dfd-mini"} and set(cross.eval_set) == {"test"}
    assert set(cross.level) == {"frame", "video"}
    assert set(cross.predictor) == {claims["best_single"], "soft_vote", "stack_lr"}


def test_stack_config_is_checked(tmp_path):
    from ensemble_dfd.config import ConfigError, load_config

    assert load_config().stack.video_aggregate == "mean_logit"
    with pytest.raises(ConfigError, match="stack.video_aggregate"):
        load_config(overrides={"stack": {"video_aggregate": "median"}})
    with pytest.raises(ConfigError, match="stack.min_effect"):
        load_config(overrides={"stack": {"min_effect": 0}})


def test_single_class_sources_are_scored_against_the_other_class():
    y = np.array([1, 1, 0, 0, 0])
    ss = SplitScores("wild", y, np.array(list("aabbc")), np.array(list("pqrst")),
                     {"A": np.zeros(5)}, sources=np.array(["c23", "c23", "DF", "DF", "F2F"]))
    subs = {s.source: s for s in ss.by_source()}
    assert set(subs) == {"DF", "F2F"}  # the reals' source would be the whole split
    assert list(subs["DF"].paths) == ["p", "q", "r", "s"]
    assert list(subs["F2F"].y) == [1, 1, 0]
