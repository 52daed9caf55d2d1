"""Meta-learners over an (n_images x n_models) logit matrix, and their registry.

`META_LEARNERS[name](random_state=None)` returns an unfitted scikit-learn estimator; the
`stack` CLI fits every entry (or those named with --learners).
"""

from __future__ import annotations

from collections.abc import Callable

from sklearn.base import BaseEstimator

from ensemble_dfd.ensemble.base import (
    LogitMetaLearner,
    MetaLearnerError,
    check_labels,
    check_logits,
    fit_calibration,
)
from ensemble_dfd.ensemble.cv import grouped_folds, oof_decision
from ensemble_dfd.ensemble.learners import (
    CaruanaSelection,
    HardVoting,
    SoftVoting,
    StackedLogisticRegression,
    WeightedSoftVoting,
)

Factory = Callable[..., BaseEstimator]
META_LEARNERS: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """Decorator: add a factory `f(random_state=None) -> estimator` to META_LEARNERS."""
    def deco(f: Factory) -> Factory:
        if name in META_LEARNERS:
            raise ValueError(f"meta-learner {name!r} registered twice")
        META_LEARNERS[name] = f
        return f
    return deco


def make_meta_learner(name: str, random_state: int | None = None) -> BaseEstimator:
    try:
        factory = META_LEARNERS[name]
    except KeyError:
        raise MetaLearnerError(f"unknown meta-learner {name!r} (have: "
                               f"{', '.join(META_LEARNERS)})") from None
    return factory(random_state=random_state)


@register("soft_vote")
def _soft_vote(random_state=None) -> BaseEstimator:
    return SoftVoting()


@register("hard_vote")
def _hard_vote(random_state=None) -> BaseEstimator:
    return HardVoting()


@register("soft_vote_temp")
def _soft_vote_temp(random_state=None) -> BaseEstimator:
    return SoftVoting(calibration="temperature")


@register("soft_vote_platt")
def _soft_vote_platt(random_state=None) -> BaseEstimator:
    return SoftVoting(calibration="platt")


@register("weighted_vote")
def _weighted_vote(random_state=None) -> BaseEstimator:
    return WeightedSoftVoting()


@register("stack_lr")
def _stack_lr(random_state=None) -> BaseEstimator:
    return StackedLogisticRegression(random_state=random_state)


@register("caruana")
def _caruana(random_state=None) -> BaseEstimator:
    return CaruanaSelection(random_state=random_state)


@register("caruana_bagged")
def _caruana_bagged(random_state=None) -> BaseEstimator:
    return CaruanaSelection(n_iter=20, n_init=1, n_bags=10, bag_fraction=0.5,
                            random_state=random_state)


__all__ = [
    "META_LEARNERS", "CaruanaSelection", "HardVoting", "LogitMetaLearner", "MetaLearnerError",
    "SoftVoting", "StackedLogisticRegression", "WeightedSoftVoting", "check_labels",
    "check_logits", "fit_calibration", "grouped_folds", "make_meta_learner", "oof_decision",
    "register",
]
