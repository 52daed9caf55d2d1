"""Attribution statistics and degradations on synthetic data with planted answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ensemble_dfd.analysis import attribution as A
from ensemble_dfd.data.quality import blur_score
from ensemble_dfd.data.synthetic import draw_face


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return draw_face(np.random.default_rng(0), 96)


def test_blur_score_falls_monotonically_with_sigma(face):
    scores = [blur_score(A.gaussian_blur(face, s)) for s in (0, 0.5, 1, 2, 3, 4, 6)]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores


def test_downscale_and_jpeg_lose_detail(face):
    base = blur_score(face)
    for f in (2, 4, 8):
        out = A.down_up(face, f)
        assert out.shape == face.shape and out.dtype == np.uint8
        assert blur_score(out) < base
    assert np.array_equal(A.down_up(face, 1), face)
    assert np.array_equal(A.gaussian_blur(face, 0), face)
    assert np.array_equal(A.jpeg(face, 0), face)
    err = [np.abs(A.jpeg(face, q).astype(int) - face).mean() for q in (95, 50, 10)]
    assert err[0] < err[1] < err[2]
    with pytest.raises(ValueError, match="uint8"):
        A.gaussian_blur(face.astype(float), 1)


def test_degradation_levels_always_start_with_the_original():
    d = A.DEGRADATIONS["downscale"]
    assert d.levels_with_original() == [1.0, 2.0, 4.0, 8.0]
    assert d.levels_with_original([4, 1, 2]) == [1.0, 4.0, 2.0]
    assert A.DEGRADATIONS["jpeg"].levels_with_original([30])[0] == 0.0


def test_wilson_ci():
    lo, hi = A.wilson_ci(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert lo[0] == pytest.approx(0.0, abs=1e-12) and hi[2] == pytest.approx(1.0)
    assert lo[1] < 0.5 < hi[1]
    assert hi[0] > 0 and lo[2] < 1  # never degenerate at 0 or n
    lo, hi = A.wilson_ci(0, 0)
    assert np.isnan(lo) and np.isnan(hi)


def test_quantile_bins():
    v = np.array([1, 2, 3, 4, 5, 6, 7, 8, np.nan])
    codes, edges = A.quantile_bins(v, 4)
    assert codes.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, -1]
    assert edges[0] == 1 and edges[-1] == 8
    codes, edges = A.quantile_bins(np.array([224.0] * 6 + [100.0, 300.0]), 4)
    assert edges.size - 1 < 4  # tied quantiles merge bins
    assert set(codes) <= set(range(edges.size - 1))


def _planted(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    blur = np.exp(rng.normal(5, 1, n))
    area = np.exp(rng.normal(10, 0.5, n))
    z = -1.5 * (np.log1p(blur) - 5)  # blurrier (lower Laplacian variance) -> more errors
    wrong = rng.random(n) < 1 / (1 + np.exp(-z))
    props = pd.DataFrame({"width": np.sqrt(area), "height": np.sqrt(area), "area": area,
                          "blur": blur, "brightness": rng.normal(120, 20, n),
                          "contrast": rng.normal(50, 10, n), "jpeg_quality": np.nan})
    return props, wrong, rng


def test_logistic_regression_recovers_the_sign_of_a_planted_effect():
    props, wrong, rng = _planted()
    y = (rng.random(len(wrong)) < 0.5).astype(int)
    res = A.logistic_attribution(props, {"M1": wrong}, labels=y)
    coef = res.set_index("term")["coef"]
    ci = res.set_index("term")
    assert coef["log_blur"] < 0 and ci.loc["log_blur", "ci_hi"] < 0
    assert ci.loc["log_area", "ci_lo"] < 0 < ci.loc["log_area", "ci_hi"]  # no planted effect
    assert "jpeg_quality" not in set(res["term"])  # unknown everywhere: left out
    assert list(res.columns) == A.LOGIT_COLUMNS


def test_fit_logistic_matches_unpenalised_sklearn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 2))
    y = (rng.random(300) < 1 / (1 + np.exp(-(0.5 + X @ [1.0, -2.0])))).astype(int)
    fit = A.fit_logistic(X, y, ridge=0.0)
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(X, y)
    assert np.allclose(fit.coef, np.r_[ref.intercept_, ref.coef_[0]], atol=1e-4)
    assert fit.converged and (fit.se > 0).all()


def test_separable_data_stays_finite():
    X = np.r_[np.zeros(10), np.ones(10)][:, None]
    y = np.r_[np.zeros(10), np.ones(10)]
    fit = A.fit_logistic(X, y)
    assert np.isfinite(fit.coef).all() and fit.coef[1] > 0


def test_rank_tests_and_bins_find_the_planted_direction():
    props, wrong, _ = _planted()
    ranks = A.rank_tests(props, {"M1": wrong, "ens": ~wrong}, ["blur", "area"],
                         kinds={"ens": "ensemble"})
    r = ranks.set_index(["predictor", "property"])
    assert r.loc[("M1", "blur"), "rank_biserial"] < -0.2 and r.loc[("M1", "blur"), "p"] < 1e-4
    assert r.loc[("ens", "blur"), "rank_biserial"] > 0.2  # the mirror image
    assert r.loc[("ens", "blur"), "kind"] == "ensemble"
    bins = A.error_by_bin(props, {"M1": wrong}, ["blur"], n_bins=4)
    assert len(bins) == 4 and bins["n"].sum() == len(wrong)
    rates = bins["error_rate"].to_numpy()
    assert rates[0] > rates[-1]  # blurriest quarter worse than sharpest
    assert ((bins["ci_lo"] <= bins["error_rate"]) & (bins["error_rate"] <= bins["ci_hi"])).all()


def test_rank_biserial_bounds():
    assert A.rank_biserial(0, 5, 4) == -1 and A.rank_biserial(20, 5, 4) == 1
    assert np.isnan(A.rank_biserial(0, 0, 4))


def test_always_right_predictor_is_left_out_of_the_regression():
    props, wrong, _ = _planted(60)
    res = A.logistic_attribution(props, {"never": np.zeros(60, bool), "M1": wrong})
    assert set(res["predictor"]) == {"M1"}


def test_missing_property_column_is_an_error():
    with pytest.raises(ValueError, match="no image property"):
        A.error_by_bin(pd.DataFrame({"blur": [1.0]}), {"M1": np.array([True])}, ["area"])
