"""The decoding plan (pure): one run per keyframe segment holding wanted frames, runs close
together merged, and a plan over its budget moved toward the keyframes."""

from __future__ import annotations

import pytest

from ensemble_dfd.data.decode_plan import plan_decoding


def test_dense_sampling_is_one_sequential_walk() -> None:
    plan = plan_decoding([0, 250], list(range(0, 300, 30)))
    assert plan.exact and plan.frames == list(range(0, 300, 30))
    assert plan.runs == ((0, (0, 30, 60, 90, 120, 150, 180, 210, 240)), (250, (270,)))
    assert plan.decoded == 241 + 21


def test_sparse_sampling_seeks_to_the_keyframe_before_each_frame() -> None:
    keys = list(range(0, 10_000, 100))
    plan = plan_decoding(keys, [0, 2050, 9999])
    assert [s for s, _ in plan.runs] == [0, 2000, 9900]
    assert plan.decoded == 1 + 51 + 100


def test_close_runs_are_merged_not_seeked() -> None:
    plan = plan_decoding(list(range(60)), list(range(0, 60, 2)))  # every frame a keyframe
    assert len(plan.runs) == 1 and plan.decoded == 59


def test_over_budget_moves_frames_toward_keyframes() -> None:
    """One keyframe in 60,000 frames: the exact plan decodes them all; the budget keeps the
    cost at most 300 by taking the frames nearest the keyframe."""
    wanted = [round(k * 59_999 / 31) for k in range(32)]
    plan = plan_decoding([0], wanted, budget=300)
    assert not plan.exact and plan.needed == 60_000
    assert plan.decoded <= 300 and plan.frames[-1] == 299


def test_over_budget_with_more_segments_than_budget() -> None:
    keys = list(range(0, 1000, 10))
    plan = plan_decoding(keys, list(range(5, 1000, 10)), budget=20)
    assert plan.decoded <= 20 and all(f in keys for f in plan.frames)


def test_frames_before_the_first_keyframe_and_bad_budget() -> None:
    assert plan_decoding([10], [3]).runs == ((0, (3,)),)
    with pytest.raises(ValueError, match="budget"):
        plan_decoding([0], [1], budget=-1)
