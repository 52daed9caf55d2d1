"""Which frames to decode to reach the wanted ones, known before any decoding (pure).

Reaching frame k of a compressed video means decoding every frame from the keyframe before
it. Given the keyframe layout (``data/avframes.py`` demuxes it without decoding) and the
wanted frame indices, the plan is one run per keyframe segment that holds wanted frames: seek
to the segment's keyframe, decode forward to its last wanted frame. Dense sampling becomes a
sequential walk, sparse sampling a few short runs. A plan that would decode more than a
budget is moved toward the keyframes: each run decodes at most ``budget // runs`` frames and
a wanted frame beyond that is replaced by the run's last decodable one.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DecodePlan:
    """runs: (keyframe index to seek to, wanted indices in its segment, increasing);
    decoded: frames the plan decodes; exact: the wanted frames, unmoved; needed: frames the
    exact plan would decode."""

    runs: tuple[tuple[int, tuple[int, ...]], ...]
    decoded: int
    exact: bool
    needed: int

    @property
    def frames(self) -> list[int]:
        return [i for _, idx in self.runs for i in idx]


def _segments(keyframes: list[int], wanted: list[int]) -> dict[int, list[int]]:
    keys = sorted(set(keyframes)) or [0]
    if keys[0] > 0:  # frames before the first keyframe are reached from the start
        keys = [0, *keys]
    runs: dict[int, list[int]] = {}
    for w in sorted(set(wanted)):
        start = keys[bisect.bisect_right(keys, w) - 1]
        runs.setdefault(start, []).append(w)
    return runs


# a run that starts within this many frames of the previous run's end continues it instead
# of seeking (a seek flushes the decoder, whose threads then refill: ~ a few frames)
MERGE_GAP = 8


def _merge(runs: dict[int, list[int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for s in sorted(runs):
        if out:
            prev = max(out)
            if s - out[prev][-1] <= MERGE_GAP:
                out[prev].extend(runs[s])
                continue
        out[s] = list(runs[s])
    return out


def plan_decoding(keyframes: list[int], wanted: list[int], budget: int = 0) -> DecodePlan:
    """The runs that decode ``wanted`` (frame indices) from ``keyframes`` (frame indices of
    the video's keyframes), within ``budget`` decoded frames (0 = no budget)."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    segments = _segments(keyframes, wanted)
    runs = _merge(segments)
    needed = sum(idx[-1] - s + 1 for s, idx in runs.items())
    if not budget or needed <= budget:
        return DecodePlan(tuple((s, tuple(i)) for s, i in runs.items()), needed, True, needed)
    runs = segments  # moved runs are short: each seeks (merging would add its gap frames)
    starts = sorted(runs)
    if len(starts) > budget:  # fewer runs than segments: spread them
        pick = np.unique(np.round(np.linspace(0, len(starts) - 1, budget)).astype(np.int64))
        starts = [starts[int(k)] for k in pick]
    depth = budget // len(starts)  # frames each run may decode, keyframe included
    moved = []
    for s in starts:
        idx = sorted({min(i, s + depth - 1) for i in runs[s]})
        moved.append((s, tuple(idx)))
    decoded = sum(idx[-1] - s + 1 for s, idx in moved)
    return DecodePlan(tuple(moved), decoded, False, needed)
