"""Metrics against scikit-learn on random inputs, McNemar by hand, grouped bootstrap."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from ensemble_dfd.stacking import metrics as M


@st.composite
def labelled_logits(draw, min_size: int = 2, max_size: int = 60, both: bool = False):
    n = draw(st.integers(min_size, max_size))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    if both:
        y[0], y[-1] = 0, 1
    # a coarse grid makes ties (and exact zeros) common, where conventions matter most
    z = np.array(draw(st.lists(st.integers(-8, 8), min_size=n, max_size=n)), float) / 2
    return y, z


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn: one label in y and pred
@settings(max_examples=150, deadline=None)
@given(labelled_logits())
def test_seven_metrics_equal_sklearn(data):
    y, z = data
    pred = (z > 0).astype(int)
    r = M.seven_metrics(y, z)
    assert r["tp"] + r["tn"] + r["fp"] + r["fn"] == y.size
    nan = np.nan
    assert r["acc"] == pytest.approx(skm.accuracy_score(y, pred))
    expect = {
        "tpr": skm.recall_score(y, pred, zero_division=nan),
        "tnr": skm.recall_score(y, pred, pos_label=0, zero_division=nan),
        "ppv": skm.precision_score(y, pred, zero_division=nan),
        "npv": skm.precision_score(y, pred, pos_label=0, zero_division=nan),
        "f1": skm.f1_score(y, pred, zero_division=nan),
    }
    for k, v in expect.items():
        if math.isnan(v):
            assert math.isnan(r[k]), k
        else:
            assert r[k] == pytest.approx(v), k
    assert r["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(labelled_logits(both=True))
def test_threshold_free_metrics_equal_sklearn(data):
    y, z = data
    p = M.sigmoid(z)
    assert M.roc_auc(y, z) == pytest.approx(skm.roc_auc_score(y, z))
    assert M.log_loss(y, p) == pytest.approx(skm.log_loss(y, p, labels=[0, 1]))
    assert M.log_loss_from_logits(y, z) == pytest.approx(skm.log_loss(y, p), rel=1e-9)
    assert M.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p))


@settings(max_examples=50, deadline=None)
@given(labelled_logits(both=True), st.lists(st.integers(1, 5), min_size=60, max_size=60))
def test_weighted_auc_equals_sklearn(data, w):
    y, z = data
    w = np.array(w[: y.size], float)
    assert M.roc_auc(y, z, sample_weight=w) == pytest.approx(
        skm.roc_auc_score(y, z, sample_weight=w))


def test_study_row_m3():
    # M3 on the study's test set: TP 86, TN 86, FP 14, FN 14 -> MCC 0.72
    r = M.rates(86, 86, 14, 14)
    assert float(r["acc"]) == pytest.approx(0.86)
    assert float(r["mcc"]) == pytest.approx(0.72)
    r = M.rates(50, 96, 4, 50)  # M5
    assert float(r["ppv"]) == pytest.approx(0.926, abs=1e-3)
    assert float(r["mcc"]) == pytest.approx(0.518, abs=1e-3)


def test_zero_division_conventions():
    r = M.rates(0, 10, 0, 0)  # no reals at all, all called fake
    assert math.isnan(float(r["tpr"])) and math.isnan(float(r["ppv"]))
    assert math.isnan(float(r["f1"]))
    assert float(r["mcc"]) == 0.0
    assert float(M.rates(0, 5, 0, 5)["f1"]) == 0.0


def test_auc_one_class_warns_nan():
    with pytest.warns(M.OneClassWarning):
        assert math.isnan(M.roc_auc(np.ones(5, int), np.arange(5.0)))


def test_ece_known_values():
    y = np.array([1, 1, 0, 0])
    assert M.ece(y, np.array([1.0, 1.0, 0.0, 0.0])) == 0.0
    # all at 0.5 with half real: calibrated
    assert M.ece(y, np.full(4, 0.5)) == pytest.approx(0.0)
    # all at 0.9, half real: |0.5 - 0.9|
    assert M.ece(y, np.full(4, 0.9)) == pytest.approx(0.4)


@pytest.mark.parametrize("b,c", [(1, 6), (0, 0), (5, 5), (0, 9), (12, 3), (40, 25)])
def test_mcnemar_exact_matches_hand_binomial(b, c):
    a_right = np.r_[np.ones(b, bool), np.zeros(c, bool), np.ones(7, bool), np.zeros(4, bool)]
    b_right = np.r_[np.zeros(b, bool), np.ones(c, bool), np.ones(7, bool), np.zeros(4, bool)]
    bb, cc, p = M.mcnemar_exact(a_right, b_right)
    assert (bb, cc) == (b, c)
    n = b + c
    expect = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1))
                                    / 2**n)
    assert p == pytest.approx(expect)
    if (b, c) == (1, 6):
        assert p == pytest.approx(0.125)


def test_bootstrap_counts_resample_whole_groups():
    counts = M.bootstrap_counts(7, 200, seed=1)
    assert counts.shape == (200, 7)
    assert (counts.sum(axis=1) == 7).all()
    # per-image weights are a group's multiplicity: equal within each group
    groups = np.array([0, 0, 0, 1, 2, 2, 3, 4, 5, 6, 6])
    w = counts[:, groups]
    for g in range(7):
        cols = w[:, groups == g]
        assert (cols == cols[:, :1]).all()


def test_bootstrap_matches_direct_metrics_on_each_resample():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 4)
    y = np.repeat(rng.integers(0, 2, 30), 4)
    y[:4], y[4:8] = 0, 1
    z = (2 * y - 1) * 0.8 + rng.normal(size=y.size)
    z[10] = z[11]  # a tie
    codes, g = M.group_codes(groups)
    counts = M.bootstrap_counts(g, 25, seed=3)
    bs = M.bootstrap_samples(y, z, codes, counts, threshold=0.1)
    for i in range(25):
        w = counts[i][codes]
        idx = np.repeat(np.arange(y.size), w)
        r = M.seven_metrics(y[idx], z[idx], 0.1)
        assert bs.acc[i] == pytest.approx(r["acc"])
        assert bs.mcc[i] == pytest.approx(r["mcc"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            auc = M.roc_auc(y[idx], z[idx])
        assert (math.isnan(bs.auc[i]) and math.isnan(auc)) or bs.auc[i] == pytest.approx(auc)


def test_bootstrap_ci_contains_point_and_grouping_widens_it():
    rng = np.random.default_rng(5)
    n_groups, size = 80, 10
    groups = np.repeat(np.arange(n_groups), size)
    y = np.repeat(rng.integers(0, 2, n_groups), size)
    # a strong per-video effect: frames of one video are right or wrong together
    z = (2 * y - 1) * 0.5 + np.repeat(rng.normal(0, 1.5, n_groups), size) \
        + rng.normal(0, 0.2, y.size)
    point = M.evaluate(y, z)
    ci = M.bootstrap_ci(y, z, groups, n_boot=1000, seed=0)
    for m in ("acc", "auc", "mcc"):
        lo, hi = ci[m]
        assert lo <= point[m] <= hi, m
    naive = M.bootstrap_ci(y, z, np.arange(y.size), n_boot=1000, seed=0)
    width = ci["acc"][1] - ci["acc"][0]
    assert width > 1.8 * (naive["acc"][1] - naive["acc"][0])


def test_thresholds_on_validation():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 2000)
    z = (2 * y - 1) + rng.normal(size=y.size)
    t = M.eer_threshold(y, z)
    r = M.seven_metrics(y, z, t)
    assert abs((1 - r["tnr"]) - (1 - r["tpr"])) < 0.02
    t5 = M.fpr_threshold(y, z, 0.05)
    r5 = M.seven_metrics(y, z, t5)
    assert 1 - r5["tnr"] <= 0.05 + 1e-12
    assert 1 - r5["tnr"] > 0.04  # the loosest such threshold, not an over-strict one
    assert M.choose_threshold("fixed", y, z) == 0.0
    with pytest.raises(ValueError, match="unknown threshold rule"):
        M.choose_threshold("median", y, z)
    with pytest.raises(ValueError, match="bad --threshold"):
        M.parse_threshold_rule("fpr:2")
    with pytest.raises(ValueError, match="both classes"):
        M.eer_threshold(np.ones(5, int), np.arange(5.0))


@pytest.mark.parametrize("y,z,match", [
    (np.array([0, 1]), np.array([0.0, np.nan]), "finite"),
    (np.array([0, 2]), np.array([0.0, 1.0]), "0 \\(Fake\\) or 1"),
    (np.array([0, 1, 1]), np.array([0.0, 1.0]), "equal length"),
    (np.array([], int), np.array([]), "no samples"),
])
def test_bad_inputs(y, z, match):
    with pytest.raises(ValueError, match=match):
        M.evaluate(y, z)
