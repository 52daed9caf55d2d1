"""Per-image disagreement tables, hard-image lists and diversity measures on synthetic
predictions with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ensemble_dfd.analysis import disagreement as D

SHARES = [0.0, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0]


def _logits(correct: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Logits that make each model right exactly where `correct` is True."""
    sign = np.where(y[:, None] == 1, 1.0, -1.0)
    return np.where(correct, sign, -sign) * 2.0


def _random_case(n: int = 40, m: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
    correct = rng.random((n, m)) < 0.7
    correct[0] = False  # a real every model gets wrong
    correct[-1] = False  # a fake every model gets wrong
    models = [f"M{k + 1}" for k in range(m)]
    paths = [f"ds/test/{'Real' if v else 'Fake'}/img{i:03d}.jpg" for i, v in enumerate(y)]
    return paths, y, _logits(correct, y), models, correct


def test_outcome_codes_and_percentages():
    y = np.array([1, 1, 0, 0])
    X = np.array([[2.0, -1.0], [1.0, 1.0], [-3.0, 0.5], [0.2, 0.1]])
    t = D.per_image_table(["a/R1.jpg", "a/R2.jpg", "a/F1.jpg", "a/F2.jpg"], y, X, ["M1", "M2"],
                          learners={"soft_vote": np.array([1.0, -1.0, -1.0, 1.0])})
    assert t["M1"].tolist() == ["TP", "TP", "TN", "FP"]
    assert t["M2"].tolist() == ["FN", "TP", "FP", "FP"]
    assert t["pct_wrong"].tolist() == [50.0, 0.0, 50.0, 100.0]
    assert t["pct_right"].tolist() == [50.0, 100.0, 50.0, 0.0]
    assert t["soft_vote"].tolist() == ["TP", "FN", "TN", "FP"]
    assert t["ref"].tolist() == ["R1", "R2", "F1", "F2"]
    assert t["file"].tolist() == ["R1.jpg", "R2.jpg", "F1.jpg", "F2.jpg"]
    assert list(t.columns[:2]) == ["path", "label"]


def test_thresholds_move_the_decision():
    y = np.array([1, 0])
    X = np.array([[0.5], [0.5]])
    t = D.per_image_table(["a/1", "a/2"], y, X, ["M1"], thresholds={"M1": 1.0})
    assert t["M1"].tolist() == ["FN", "TN"]


def test_short_refs_number_each_class_in_row_order():
    assert D.short_refs(np.array([0, 1, 1, 0, 1])).tolist() == ["F1", "R1", "R2", "F2", "R3"]


@pytest.mark.parametrize("real", SHARES)
@pytest.mark.parametrize("fake", SHARES)
def test_image_every_model_gets_wrong_is_listed_at_every_threshold(real, fake):
    paths, y, X, models, _ = _random_case()
    table = D.per_image_table(paths, y, X, models)
    hard = D.hard_images(table, models, D.HardThresholds(real, fake), best="M3")
    assert paths[0] in set(hard["path"]) and paths[-1] in set(hard["path"])
    row = hard.set_index("path").loc[paths[0]]
    assert row["pct_wrong"] == 100.0 and row["right_models"] == "" and bool(row["best_wrong"])


def test_hard_images_threshold_is_inclusive_and_exact():
    m = 10
    y = np.array([1, 1, 0, 0])
    correct = np.ones((4, m), bool)
    correct[0, :8] = False  # real wrong for exactly 80%
    correct[1, :7] = False  # real wrong for 70%: not hard at 0.8
    correct[2, :5] = False  # fake wrong for exactly 50%
    correct[3, :4] = False  # fake wrong for 40%
    models = [f"M{k + 1}" for k in range(m)]
    paths = ["d/r0", "d/r1", "d/f0", "d/f1"]
    props = pd.DataFrame({"width": [10, 20, 30, 40], "height": [11, 21, 31, 41],
                          "blur": [1.0, 2.0, 3.0, 4.0]}, index=paths)
    table = D.per_image_table(paths, y, _logits(correct, y), models)
    hard = D.hard_images(table, models, D.STUDY_THRESHOLDS, best="M10", props=props)
    assert hard["path"].tolist() == ["d/r0", "d/f0"]
    assert hard["size"].tolist() == ["10x11", "30x31"]
    assert hard["blur"].tolist() == [1.0, 3.0]
    assert hard["right_models"].iloc[0] == "M9, M10"
    assert hard["best_wrong"].tolist() == [False, False]
    assert list(hard.columns) == D.HARD_COLUMNS


def test_default_thresholds_follow_the_study():
    assert D.thresholds_for("test") == D.HardThresholds(0.8, 0.5)
    assert D.thresholds_for("wild") == D.HardThresholds(0.5, 0.7)
    with pytest.raises(ValueError, match="share"):
        D.HardThresholds(1.5, 0.5)


def test_yule_q_of_identical_models_is_one():
    rng = np.random.default_rng(1)
    c = rng.random(50) < 0.6
    C = np.column_stack([c, c, c])
    Q = D.yule_q(C)
    assert np.allclose(Q, 1.0)
    y = (rng.random(50) < 0.5).astype(int)
    X = _logits(C, y)
    div = D.diversity(X, y, ["A", "B", "C"])
    assert np.allclose(div.pairs["yule_q"], 1.0)
    assert np.allclose(div.pairs["kappa"], 1.0)
    assert np.allclose(div.pairs["disagreement"], 0.0)
    assert np.allclose(div.pairs["logit_corr"], 1.0)


def test_double_fault_of_two_always_wrong_models_is_one():
    y = np.array([1, 0, 1, 0, 1])
    C = np.zeros((5, 2), bool)
    assert np.allclose(D.double_fault(C), 1.0)
    div = D.diversity(_logits(C, y), y, ["A", "B"])
    assert div.pairs["double_fault"].iloc[0] == 1.0
    assert div.summary["oracle_accuracy"] == 0.0
    assert div.summary["all_wrong_share"] == 1.0


def test_complementary_models():
    y = np.array([1, 1, 0, 0])
    C = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], bool)
    div = D.diversity(_logits(C, y), y, ["A", "B"])
    p = div.pairs.iloc[0]
    assert p["disagreement"] == 1.0 and p["double_fault"] == 0.0 and p["yule_q"] == -1.0
    assert div.summary["oracle_accuracy"] == 1.0
    assert div.matrices["double_fault"].loc["A", "A"] == 0.5  # diagonal: error rate


def test_kappa_matches_sklearn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(2)
    P = rng.random((200, 3)) < [0.3, 0.5, 0.7]
    K = D.cohen_kappa(P)
    for i in range(3):
        for j in range(3):
            assert K[i, j] == pytest.approx(cohen_kappa_score(P[:, i], P[:, j]))


def test_wrong_count_distribution():
    paths, y, X, models, correct = _random_case(n=30, m=4, seed=5)
    div = D.diversity(X, y, models)
    wc = div.wrong_counts
    assert wc["images"].sum() == 30 and (wc["real"] + wc["fake"] == wc["images"]).all()
    expected = np.bincount(4 - correct.sum(axis=1), minlength=5)
    assert wc["images"].tolist() == expected.tolist()
    assert len(div.pairs) == 6  # unordered pairs of 4 models


@pytest.mark.parametrize("X,y,models,match", [
    (np.zeros((3, 2)), np.array([0, 1]), ["A", "B"], "one label per image"),
    (np.zeros((2, 2)), np.array([0, 1]), ["A"], "model names"),
    (np.zeros((2, 1)), np.array([0, 2]), ["A"], "labels"),
])
def test_bad_inputs(X, y, models, match):
    with pytest.raises(ValueError, match=match):
        D.diversity(X, y, models)
