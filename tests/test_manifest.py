"""Grouped splits, groups of fakes, balancing, composition and leakage checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_dfd.data import manifest as mf


def test_fakes_join_the_group_of_their_real_videos() -> None:
    stems = ["004", "004_982", "519", "519_515", "750_743", "brtujopkby", "982"]
    labels = [1, 0, 1, 0, 0, 0, 1]
    g = mf.video_groups(stems, labels)
    assert g["004_982"] == g["004"] == g["982"] == "004"  # both parts present: merged
    assert g["519_515"] == "519"
    assert g["750_743"] == "750_743"  # neither real video present
    assert g["brtujopkby"] == "brtujopkby"


def test_a_real_video_never_joins_another() -> None:
    assert mf.video_groups(["1_2", "1", "2"], [1, 1, 1]) == {"1_2": "1_2", "1": "1", "2": "2"}


def test_split_ratios_and_determinism() -> None:
    rng = np.random.default_rng(0)
    groups = [f"g{i}" for i in range(400) for _ in range(rng.integers(1, 6))]
    labels = [int(g[1:]) % 2 for g in groups]
    a = mf.grouped_split(groups, labels, (0.8, 0.19, 0.01), seed=7)
    assert a == mf.grouped_split(groups, labels, (0.8, 0.19, 0.01), seed=7)
    assert a != mf.grouped_split(groups, labels, (0.8, 0.19, 0.01), seed=8)
    share = pd.Series(a).value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.80, abs=0.02)
    assert share["validation"] == pytest.approx(0.19, abs=0.02)
    assert share["test"] == pytest.approx(0.01, abs=0.01)


def test_zero_ratio_split_gets_nothing() -> None:
    groups = [str(i) for i in range(50)]
    out = mf.grouped_split(groups, [i % 2 for i in range(50)], (0.5, 0.5, 0.0), seed=1)
    assert "test" not in out


@pytest.mark.parametrize("ratios", [(0.5, 0.5), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1)])
def test_bad_ratios(ratios: tuple) -> None:
    with pytest.raises(ValueError, match="ratios"):
        mf.grouped_split(["a"], [1], ratios)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 1)), min_size=1, max_size=200),
    ratios=st.sampled_from([(0.8, 0.19, 0.01), (0.34, 0.33, 0.33), (0.5, 0.5, 0.0),
                            (1.0, 0.0, 0.0)]),
    seed=st.integers(0, 2**31),
)
def test_property_no_group_in_two_splits(rows: list, ratios: tuple, seed: int) -> None:
    groups = [f"v{g}" for g, _ in rows]
    labels = [y for _, y in rows]
    splits = mf.grouped_split(groups, labels, ratios, seed)
    df = pd.DataFrame({"group": groups, "split": splits})
    assert (df.groupby("group")["split"].nunique() == 1).all()
    assert set(splits) <= {s for s, r in zip(mf.SPLITS, ratios, strict=True) if r > 0}


def test_balance_classes_per_split() -> None:
    df = pd.DataFrame({"split": ["train"] * 10 + ["test"] * 4,
                       "label": [1] * 7 + [0] * 3 + [1, 0, 0, 0]})
    out = mf.balance_classes(df, seed=0)
    counts = out.groupby(["split", "label"]).size()
    assert counts[("train", 0)] == counts[("train", 1)] == 3
    assert counts[("test", 0)] == counts[("test", 1)] == 1


def test_layout_paths_never_collide() -> None:
    paths = mf.layout_paths(["a.jpg", "a.jpg", "b.jpg", "a.jpg"], ["train"] * 3 + ["test"],
                            [1, 1, 0, 1])
    assert paths == ["train/Real/a.jpg", "train/Real/a_2.jpg", "train/Fake/b.jpg",
                     "test/Real/a.jpg"]


def test_composition_table_counts_and_percentages() -> None:
    df = pd.DataFrame({"split": ["train"] * 3 + ["test"],
                       "source": ["x", "x", "y", "x"], "label": [1, 0, 0, "Real"]})
    t = mf.composition_table(df).set_index(["split", "source"])
    assert t.loc[("train", "x"), ["Fake", "Real", "total"]].tolist() == [1, 1, 2]
    assert t.loc[("train", "all"), "pct_of_all"] == pytest.approx(75.0)
    assert t.loc[("train", "x"), "pct_of_split"] == pytest.approx(200 / 3)
    assert t.loc[("all", "all"), "total"] == 4
    assert "pct_of_split" in mf.format_composition(mf.composition_table(df))


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    import cv2

    return cv2.GaussianBlur((rng.random((64, 64, 3)) * 255).astype(np.uint8), (0, 0), 3)


def test_dhash_tolerates_resize_and_separates_images() -> None:
    import cv2

    a = _image(0)
    near = mf.dhash(cv2.resize(a, (50, 50), interpolation=cv2.INTER_AREA))
    assert bin(mf.dhash(a) ^ near).count("1") <= 4
    assert bin(mf.dhash(a) ^ mf.dhash(_image(1))).count("1") > 10
    assert 0 <= mf.dhash(a) < 2**64


def test_leakage_checks() -> None:
    a, b, c = (mf.dhash(_image(i)) for i in range(3))
    df = pd.DataFrame({
        "path": ["t/1", "v/1", "t/2", "v/2", "t/3"],
        "split": ["train", "validation", "train", "validation", "train"],
        "sha256": ["s1", "s1", "s2", "s3", "s4"],
        "dhash": [a, a, b, b ^ 0b11, c],
        "group": ["g1", "g2", "g3", "g3", "g4"],
    })
    exact = mf.exact_duplicates(df)
    assert exact["sha256"].tolist() == ["s1"]
    near = mf.near_duplicates(df, threshold=2)
    assert sorted(zip(near["path_a"], near["path_b"], strict=True)) == [("t/1", "v/1"),
                                                                        ("t/2", "v/2")]
    assert mf.groups_across_splits(df) == ["g3"]
