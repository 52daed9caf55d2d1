"""The minimum detectable difference against a simulation, and the claim rule."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ensemble_dfd import stack
from ensemble_dfd.stacking import metrics as M
from ensemble_dfd.stacking import power
from ensemble_dfd.stacking.logits import write_store
from ensemble_dfd.stacking.synthetic_logits import make_store

G, FRAMES, P_BEST = 150, 2, 0.75


def _dataset(rng: np.random.Generator, p_other: float):
    """G groups of FRAMES frames; each model right or wrong on a whole group, the two
    independently, so the true ACC difference is exactly p_other - P_BEST."""
    codes = np.repeat(np.arange(G), FRAMES)
    y = rng.integers(0, 2, codes.size)
    sign = 2 * y - 1
    out = []
    for p in (P_BEST, p_other):
        right = (rng.random(G) < p)[codes]
        out.append(np.where(right, sign, -sign) * (0.5 + rng.random(codes.size)))
    return y, codes, out[0], out[1]


def _paired(rng, p_other, n_boot=200):
    y, codes, zb, zo = _dataset(rng, p_other)
    counts = M.bootstrap_counts(G, n_boot, rng)
    bb = M.bootstrap_samples(y, zb, codes, counts)
    bo = M.bootstrap_samples(y, zo, codes, counts)
    return bo.acc - bb.acc


def test_mdd_gives_80_percent_power_in_simulation():
    rng = np.random.default_rng(0)
    # the bootstrap figure agrees with the analytic one for independent group outcomes
    pilot = float(np.median([power.mdd(_paired(rng, P_BEST)) for _ in range(10)]))
    analytic = power.Z_SUM * np.sqrt(2 * P_BEST * (1 - P_BEST) / G)
    assert pilot == pytest.approx(analytic, rel=0.12)
    # plant a true difference equal to the MDD: the 95% CI excludes 0 in ~80% of sets
    delta = float(np.median([power.mdd(_paired(rng, P_BEST + pilot)) for _ in range(10)]))
    hits = [np.quantile(_paired(rng, P_BEST + delta), 0.025) > 0 for _ in range(200)]
    assert 0.70 <= np.mean(hits) <= 0.90, np.mean(hits)
    # and at half the MDD it mostly does not
    half = [np.quantile(_paired(rng, P_BEST + delta / 2), 0.025) > 0 for _ in range(100)]
    assert np.mean(half) < 0.5


def test_mdd_edge_cases():
    assert np.isnan(power.mdd(None)) and np.isnan(power.mdd(np.zeros(50)))
    assert pytest.approx(1.959964 + 0.841621, abs=1e-5) == power.Z_SUM


def _table(rows):
    cols = ["split", "predictor", "kind", "n", "n_groups", "d_acc_lo", "mdd_acc", "mdd_auc"]
    df = pd.DataFrame(rows, columns=cols).assign(level="frame", source="all", vs="M1")
    extra = df.assign(level="video", d_acc_lo=-1.0)  # video rows never count for claims
    return pd.concat([df, extra], ignore_index=True)


def _split(name, n, groups, mdd, lo):
    return [(name, "M1", "single", n, groups, 0.0, np.nan, np.nan),
            (name, "M2", "single", n, groups, -0.1, mdd, mdd),
            (name, "stack_lr", "ensemble", n, groups, lo, mdd, mdd)]


def test_claim_made_when_small_split_is_too_small():
    t = _table(_split("validation_oof", 1000, 300, 0.01, -0.5) + _split("big", 3000, 1521,
               0.02, 0.01) + _split("test", 201, 61, 0.11, -0.05))
    c = power.claims(t, "M1", 0.03)
    assert c["splits"]["test"] == {"level": "frame", "n": 201, "n_groups": 61,
                                   "mdd_acc": 0.11, "mdd_auc": 0.11, "large_enough": False}
    assert c["splits"]["big"]["large_enough"] and "validation_oof" not in c["splits"]
    p = c["predictors"]["stack_lr"]
    assert p["beats_best"] and p["supported_on"] == ["big"] and p["too_small"] == ["test"]
    assert not c["predictors"]["M2"]["beats_best"] and "M1" not in c["predictors"]
    assert c["headline"].startswith("stack_lr beats the best single model (M1)")
    assert "too small: test (201 faces, 61 groups" in c["headline"]


def test_no_claim_when_one_large_split_disagrees():
    t = _table(_split("big", 3000, 1521, 0.02, 0.01) + _split("big2", 2000, 900, 0.025, -0.01))
    c = power.claims(t, "M1", 0.03)
    p = c["predictors"]["stack_lr"]
    assert not p["beats_best"] and p["not_supported_on"] == ["big2"] and p["too_small"] == []
    assert c["headline"].startswith("No ensemble beats the best single model (M1)")


def test_no_claim_without_a_large_split():
    c = power.claims(_table(_split("test", 201, 61, 0.11, 0.02)), "M1", 0.03)
    assert not c["predictors"]["stack_lr"]["beats_best"]
    assert c["headline"].startswith("No evaluation split is large enough")
    assert power.claims(_table(_split("test", 201, 61, 0.11, 0.02)), "M1",
                        0.2)["predictors"]["stack_lr"]["beats_best"]


def test_headline_rows_one_level_all_sources():
    t = pd.DataFrame({"split": ["test"] * 4, "level": ["frame", None, "video", "frame"],
                      "source": ["all", "all", "all", "FaceSwap"]})
    assert list(power.headline_rows(t).index) == [0, 1]  # an empty level is frame
    assert list(power.headline_rows(t, "video").index) == [2]
    bare = t.drop(columns=["level", "source"])  # a table written before those columns
    assert len(power.headline_rows(bare)) == 4 and power.headline_rows(bare, "video").empty


def test_claims_json_end_to_end(tmp_path):
    """A large test split where the ensembles are clearly ahead, a tiny wild split."""
    logits, imgs = make_store(n_models=4, sizes={"validation": 600, "test": 1500, "wild": 40},
                              strength=[0.9, 0.7, 0.7, 0.7], seed=11)
    write_store(tmp_path / "r", logits, imgs)
    assert stack.main(["--run", str(tmp_path / "r"), "--bootstrap", "200", "--learners",
                       "soft_vote,stack_lr", "--min-effect", "0.04"]) == 0
    c = json.loads((tmp_path / "r" / "stack" / "claims.json").read_text())
    assert c["min_effect"] == 0.04 and set(c["splits"]) == {"test", "wild"}
    assert c["splits"]["test"]["large_enough"] and not c["splits"]["wild"]["large_enough"]
    assert c["predictors"]["soft_vote"]["beats_best"], c
    assert c["predictors"]["soft_vote"]["too_small"] == ["wild"]
    md = (tmp_path / "r" / "stack" / "comparison.md").read_text()
    assert "too small" in md and "MDD ACC" in md
