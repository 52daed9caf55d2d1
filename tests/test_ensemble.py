"""Meta-learners on synthetic logit matrices with known structure."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, cross_val_predict

from ensemble_dfd.ensemble import (
    META_LEARNERS,
    CaruanaSelection,
    HardVoting,
    MetaLearnerError,
    SoftVoting,
    StackedLogisticRegression,
    WeightedSoftVoting,
    grouped_folds,
    make_meta_learner,
    oof_decision,
)
from ensemble_dfd.stacking import metrics as M
from ensemble_dfd.stacking.synthetic_logits import make_matrix

NAMES = sorted(META_LEARNERS)


def _data(seed: int, n: int = 1500, **kw):
    kw.setdefault("n_models", 5)
    kw.setdefault("strength", 0.6)
    return make_matrix(n, seed=seed, **kw)


@pytest.fixture(scope="module")
def independent():
    return _data(1), _data(2)


@pytest.mark.parametrize("name", NAMES)
def test_every_learner_fits_and_predicts(name, independent):
    (X, y, g), (Xt, yt, _) = independent
    est = make_meta_learner(name, random_state=0).fit(X, y, groups=g)
    proba = est.predict_proba(Xt)
    assert proba.shape == (len(yt), 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert np.isfinite(est.decision_function(Xt)).all()
    assert list(est.classes_) == [0, 1]
    assert est.n_features_in_ == X.shape[1]
    assert ((est.decision_function(Xt) > 0).astype(int) == est.predict(Xt)).all()
    assert 0.0 <= est.score(Xt, yt) <= 1.0
    table = est.weight_table()
    assert table and all(np.ndim(v) in (0, 1) for v in table.values())


@pytest.mark.parametrize("name", ["stack_lr", "soft_vote", "soft_vote_temp", "weighted_vote",
                                  "caruana", "caruana_bagged"])
def test_independent_noisy_models_stack_beats_best_single(name, independent):
    (X, y, g), (Xt, yt, _) = independent
    singles = [M.evaluate(yt, Xt[:, k])["acc"] for k in range(X.shape[1])]
    est = make_meta_learner(name, random_state=0).fit(X, y, groups=g)
    acc = M.evaluate(yt, est.decision_function(Xt))["acc"]
    assert acc > max(singles) + 0.05, (acc, singles)


@pytest.mark.parametrize("name", NAMES)
def test_identical_models_no_gain_no_crash(name):
    X1, y, g = make_matrix(1500, 1, strength=0.7, seed=3)
    Xt1, yt, _ = make_matrix(1500, 1, strength=0.7, seed=4)
    X, Xt = np.repeat(X1, 4, axis=1), np.repeat(Xt1, 4, axis=1)
    est = make_meta_learner(name, random_state=0).fit(X, y, groups=g)
    single = M.evaluate(yt, Xt1[:, 0])["acc"]
    acc = M.evaluate(yt, est.decision_function(Xt))["acc"]
    assert abs(acc - single) <= 0.02
    # the ranking of images cannot change: the same information in every column
    assert M.roc_auc(yt, est.decision_function(Xt)) == pytest.approx(
        M.roc_auc(yt, Xt1[:, 0]), abs=1e-6)


def test_useless_model_gets_about_zero_weight():
    X, y, g = _data(5, n=3000, n_models=4, strength=[0.8, 0.7, 0.7, 0.0])
    w = WeightedSoftVoting().fit(X, y).weights_
    assert w[3] <= 0.05 and w[:3].min() > 0.15
    car = CaruanaSelection(random_state=0).fit(X, y)
    assert car.weights_[3] < 0.05
    lr = StackedLogisticRegression(random_state=0).fit(X, y, groups=g)
    assert abs(lr.coef_[3]) < 0.15 * lr.coef_[:3].min()
    assert lr.coef_[:3].min() > 0.3


def test_weights_are_on_the_simplex():
    X, y, _ = _data(6)
    for est in (WeightedSoftVoting().fit(X, y), CaruanaSelection(n_bags=5).fit(X, y)):
        assert (est.weights_ >= 0).all()
        assert est.weights_.sum() == pytest.approx(1.0)


def test_calibration_recovers_temperature():
    X, y, _ = _data(7, n=4000, n_models=2, strength=1.0)
    est = SoftVoting(calibration="temperature").fit(X * 4.0, y)  # overconfident by 4x
    expect = SoftVoting(calibration="temperature").fit(X, y).calib_a_
    assert est.calib_a_ == pytest.approx(expect / 4.0, rel=1e-3)
    platt = SoftVoting(calibration="platt").fit(X + 2.0, y)  # shifted logits
    assert platt.calib_b_ == pytest.approx(-2.0 * platt.calib_a_, abs=0.15)


def test_stacked_lr_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    X, y, _ = _data(8)
    ours = StackedLogisticRegression(Cs=[0.05]).fit(X, y)
    ref = LogisticRegression(C=0.05, tol=1e-10, max_iter=1000).fit(X, y)
    assert ours.coef_ == pytest.approx(ref.coef_.ravel(), abs=1e-5)
    assert ours.intercept_ == pytest.approx(ref.intercept_[0], abs=1e-5)


def test_stacked_lr_chooses_c_by_grouped_cv():
    X, y, g = _data(9, group_size=10, group_effect=0.5)
    est = StackedLogisticRegression(Cs=6, random_state=0).fit(X, y, groups=g)
    assert est.C_ in est.Cs_
    assert est.cv_loss_.shape == (6,)
    # recompute the grouped-CV log-loss of every C with scikit-learn on the same folds:
    # the chosen C must be the one with the smallest loss, and the losses must agree
    from sklearn.linear_model import LogisticRegression

    folds = grouped_folds(y, g, 5, 0)
    ref = np.zeros(len(est.Cs_))
    for j, C in enumerate(est.Cs_):
        for tr, te in folds:
            lr = LogisticRegression(C=C, tol=1e-10, max_iter=1000).fit(X[tr], y[tr])
            z = lr.decision_function(X[te])
            ref[j] += np.sum(np.logaddexp(0.0, z) - y[te] * z)
    ref /= y.size
    assert est.cv_loss_ == pytest.approx(ref, rel=1e-4)
    assert est.Cs_[int(np.argmin(ref))] == est.C_


def test_hard_vote_breaks_ties_by_mean_probability():
    X = np.array([[3.0, -0.1], [0.1, -3.0], [1.0, 1.0], [-1.0, -1.0]])
    est = HardVoting().fit(X, np.array([1, 0, 1, 0]))
    assert list(est.predict(X)) == [1, 0, 1, 0]


@pytest.mark.parametrize("n_splits", [2, 5])
def test_grouped_oof_folds_never_share_a_group(n_splits):
    X, y, g = _data(10, n=997, group_size=7)
    folds = grouped_folds(y, g, n_splits, seed=0)
    assert len(folds) == n_splits
    seen = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(seen), np.arange(y.size))  # a partition
    for tr, te in folds:
        assert not set(g[tr]) & set(g[te])
        assert 0.3 < y[te].mean() < 0.7  # stratified by class
    z, fold = oof_decision(StackedLogisticRegression(random_state=0), X, y, g, n_splits, 0)
    assert np.isfinite(z).all() and set(fold) == set(range(n_splits))


def test_oof_is_honest():
    # pure-noise features: in-sample fit looks better than chance, out-of-fold does not
    rng = np.random.default_rng(11)
    X = rng.normal(size=(400, 100))
    y = np.repeat(rng.integers(0, 2, 80), 5)
    y[:5], y[5:10] = 0, 1
    g = np.repeat(np.arange(80), 5)
    est = StackedLogisticRegression(Cs=[100.0])
    z, _ = oof_decision(est, X, y, g, 5, 0)
    insample = est.fit(X, y).decision_function(X)
    assert M.roc_auc(y, insample) > 0.75
    assert M.roc_auc(y, z) < 0.62


@pytest.mark.parametrize("name", NAMES)
def test_clone_and_cross_val_predict(name):
    X, y, g = _data(12, n=600)
    est = make_meta_learner(name, random_state=0)
    c = clone(est)
    assert c.get_params() == est.get_params()
    p = cross_val_predict(est, X, y, groups=g, cv=GroupKFold(3), method="predict_proba")
    assert p.shape == (600, 2) and np.isfinite(p).all()


BAD = [
    (SoftVoting(), np.ones((4, 2)), np.array([1, 1, 1, 1]), "one class"),
    (SoftVoting(), np.ones((4, 2)), np.array([0, 1, 2, 1]), "0 \\(Fake\\) or 1"),
    (SoftVoting(), np.array([[0.0, np.nan], [1.0, 2.0]]), np.array([0, 1]), "NaN or inf"),
    (SoftVoting(), np.array([[0.0, np.inf], [1.0, 2.0]]), np.array([0, 1]), "NaN or inf"),
    (SoftVoting(), np.ones(4), np.array([0, 1, 0, 1]), "2-D"),
    (SoftVoting(), np.ones((4, 2)), np.array([0, 1, 0]), "4 entries"),
    (SoftVoting(calibration="isotonic"), np.ones((4, 2)), np.array([0, 1, 0, 1]),
     "calibration must be"),
    (StackedLogisticRegression(Cs=0), np.ones((4, 2)), np.array([0, 1, 0, 1]), "Cs must"),
    (StackedLogisticRegression(cv=1), np.ones((4, 2)), np.array([0, 1, 0, 1]), "cv must"),
    (CaruanaSelection(metric="auc"), np.ones((4, 2)), np.array([0, 1, 0, 1]), "metric must"),
    (CaruanaSelection(n_iter=0), np.ones((4, 2)), np.array([0, 1, 0, 1]), "n_iter must"),
    (CaruanaSelection(bag_fraction=0.0), np.ones((4, 2)), np.array([0, 1, 0, 1]),
     "bag_fraction"),
    (WeightedSoftVoting(max_iter=0), np.ones((4, 2)), np.array([0, 1, 0, 1]), "max_iter"),
]


@pytest.mark.parametrize("est,X,y,match", BAD)
def test_bad_inputs(est, X, y, match):
    with pytest.raises(MetaLearnerError, match=match):
        est.fit(X, y)


def test_predict_checks_column_count_and_fit():
    X, y, _ = _data(13, n=200)
    est = SoftVoting().fit(X, y)
    with pytest.raises(MetaLearnerError, match="fit on 5"):
        est.predict(X[:, :3])
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        SoftVoting().predict(X)


def test_grouped_folds_need_two_groups():
    with pytest.raises(MetaLearnerError, match="at least 2 groups"):
        grouped_folds(np.array([0, 1, 0]), np.array(["a", "a", "a"]))


def test_registry_rejects_unknown_and_duplicates():
    from ensemble_dfd.ensemble import register

    with pytest.raises(MetaLearnerError, match="unknown meta-learner"):
        make_meta_learner("nope")
    with pytest.raises(ValueError, match="twice"):
        register("soft_vote")(lambda random_state=None: SoftVoting())
