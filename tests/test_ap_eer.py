"""AP and the EER value against scikit-learn (average_precision_score, roc_curve)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq

from ensemble_dfd.stacking import metrics as M

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(40))
def test_ap_eer_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 120))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    z = np.round(rng.normal(size=n) + y, int(rng.integers(0, 3)))  # ties at low precision
    assert M.average_precision(y, z) == pytest.approx(sk.average_precision_score(y, z),
                                                      abs=1e-12)
    assert M.fake_ap(y, z) == pytest.approx(sk.average_precision_score(1 - y, -z), abs=1e-12)
    fpr, tpr, _ = sk.roc_curve(y, z, drop_intermediate=False)
    want = brentq(lambda x: 1.0 - x - np.interp(x, fpr, tpr), 0.0, 1.0)
    assert M.eer(y, z) == pytest.approx(want, abs=1e-9)


def test_bootstrap_ap_is_weighted_ap():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 90)
    z = np.round(rng.normal(size=90) + y, 1)
    codes, g = M.group_codes(np.arange(90) // 3)
    counts = M.bootstrap_counts(g, 20, 0)
    bs = M.bootstrap_samples(y, z, codes, counts)
    for b in range(20):
        w = counts[b][codes]
        assert bs.ap[b] == pytest.approx(
            sk.average_precision_score(1 - y, -z, sample_weight=w), abs=1e-6)  # float32


def test_perfect_and_one_class():
    y = np.array([0, 0, 1, 1])
    assert M.eer(y, np.array([-2.0, -1, 1, 2])) == 0.0
    assert M.eer(y, np.array([2.0, 1, -1, -2])) == 1.0
    assert M.fake_ap(y, np.array([-2.0, -1, 1, 2])) == 1.0
    assert np.isnan(M.eer(np.ones(3, int), np.zeros(3)))
    assert np.isnan(M.average_precision(np.zeros(3, int), np.arange(3.0)))
