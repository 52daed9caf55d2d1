"""Weighted voting and Caruana selection do not degenerate (issue 13, item 6).

Six synthetic models with independent errors of similar size: averaging probabilities and
fitting weights to log-loss at a fixed scale put ~80% of the weight on the two strongest
models and lost ~6 points of accuracy against the plain soft vote. Both learners now pool
logits with a fitted scale."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble_dfd.ensemble import (
    CaruanaSelection,
    MetaLearnerError,
    WeightedSoftVoting,
    make_meta_learner,
)
from ensemble_dfd.ensemble.saved import load_meta_learner, save_meta_learner
from ensemble_dfd.stacking import metrics as M
from ensemble_dfd.stacking.synthetic_logits import make_matrix

SIMILAR = [0.7, 0.65, 0.6, 0.6, 0.55, 0.5]  # single-model ACC ~0.69-0.76, soft vote ~0.93


def _pair(strength, seed, n=3000):
    rng = np.random.default_rng(seed)
    return (make_matrix(n, len(strength), strength, rng=rng),
            make_matrix(n, len(strength), strength, rng=rng))


@pytest.fixture(scope="module", params=[0, 1])
def similar(request):
    return _pair(SIMILAR, request.param)


@pytest.mark.parametrize("name", ["weighted_vote", "caruana"])
def test_not_below_soft_vote_on_similar_independent_models(name, similar):
    (X, y, g), (Xt, yt, _) = similar
    soft = M.evaluate(yt, make_meta_learner("soft_vote").fit(X, y).decision_function(Xt))
    est = make_meta_learner(name, random_state=0).fit(X, y, groups=g)
    acc = M.evaluate(yt, est.decision_function(Xt))["acc"]
    assert soft["acc"] > 0.9  # the setting of the issue
    assert acc >= soft["acc"] - 0.01, (name, acc, soft["acc"], est.weights_)
    # no degenerate concentration: the two largest weights hold well under 80%
    assert np.sort(est.weights_)[-2:].sum() < 0.45, est.weights_


@pytest.mark.parametrize("seed", [3, 4])
def test_useless_model_gets_about_zero_weight(seed):
    (X, y, g), _ = _pair([0.7, 0.65, 0.6, 0.6, 0.55, 0.0], seed)
    for est in (WeightedSoftVoting().fit(X, y), CaruanaSelection(random_state=0).fit(X, y),
                make_meta_learner("caruana_bagged", random_state=0).fit(X, y)):
        assert est.weights_[5] <= 0.05, (type(est).__name__, est.weights_)
        assert est.weights_[:5].min() > 0.1


def test_weighted_vote_is_invariant_to_each_models_logit_scale():
    (X, y, _), (Xt, _, _) = _pair(SIMILAR, 5)
    scale = np.array([5.0, 1.0, 0.3, 1.0, 2.0, 1.0])  # one model 5x overconfident, one shy
    a = WeightedSoftVoting().fit(X, y)
    b = WeightedSoftVoting().fit(X * scale, y)
    assert np.allclose(a.decision_function(Xt), b.decision_function(Xt * scale),
                       rtol=1e-3, atol=2e-3)
    assert np.allclose(b.weights_ * scale / (b.weights_ * scale).sum(), a.weights_, atol=5e-3)


def test_scale_makes_pooled_logits_calibrated():
    # the fitted scale turns the weighted mean of six logits into a calibrated score: the
    # log-loss is no worse than stacked logistic regression's on fresh data
    (X, y, g), (Xt, yt, _) = _pair(SIMILAR, 6)
    lr = make_meta_learner("stack_lr", random_state=0).fit(X, y, groups=g)
    for name in ("weighted_vote", "caruana"):
        est = make_meta_learner(name, random_state=0).fit(X, y, groups=g)
        assert est.scale_ > 1.0  # six pieces of evidence: sharper than their mean
        ours = M.evaluate(yt, est.decision_function(Xt))["logloss"]
        assert ours <= M.evaluate(yt, lr.decision_function(Xt))["logloss"] + 0.005


@pytest.mark.parametrize("name", ["weighted_vote", "caruana", "caruana_bagged"])
def test_saved_form_round_trips(name, tmp_path):
    (X, y, g), (Xt, _, _) = _pair(SIMILAR, 7, n=600)
    est = make_meta_learner(name, random_state=0).fit(X, y, groups=g)
    models = [f"M{k + 1}" for k in range(X.shape[1])]
    save_meta_learner(tmp_path, name, est, models, 0.0, {"weights": est.weight_table()})
    loaded = load_meta_learner(tmp_path / f"{name}.json", models)
    assert np.array_equal(loaded.decision(Xt), est.decision_function(Xt))
    table = est.weight_table()
    assert {"weight", "scale", "intercept"} <= set(table)
    assert np.ndim(table["scale"]) == 0 and np.ndim(table["weight"]) == 1


def test_a_learner_pickled_by_the_old_version_is_refused_clearly():
    (X, y, _), _ = _pair(SIMILAR, 8, n=300)
    est = WeightedSoftVoting().fit(X, y)
    del est.scale_  # what an unpickled pre-pooling (probability-averaging) learner lacks
    with pytest.raises(MetaLearnerError, match="older version.*re-run the stack"):
        est.decision_function(X)
