"""What decoding a video's frames costs with PyAV, per option, on the shared videos: the
planned reader (``data/avframes.iter_planned``) against decoding every frame, with and
without ``skip_frame = NONREF``; decoder thread settings; and the YUV -> BGR conversion of
a kept frame on 1 thread vs every core (the same pixels is asserted). All in one run.

    PYTHONPATH=src python benchmarks/decode_options.py [--videos ../shared/data/wild]
        [--every 30]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from ensemble_dfd.data import avframes
from ensemble_dfd.data.frames import FrameReport

ROOT = Path(__file__).resolve().parents[1]
THREADS = (("AUTO", 0), ("AUTO", 2), ("AUTO", 3), ("AUTO", 4), ("FRAME", 0), ("SLICE", 0),
           ("NONE", 0))


def walk(path: Path, thread_type: str = "AUTO", count: int = 0, skip: str = "DEFAULT",
         every: int = 0) -> tuple[int, float]:
    """(frames out, seconds) decoding every packet; every `every`-th frame converted."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = thread_type
        if count:
            s.codec_context.thread_count = count
        s.codec_context.skip_frame = skip
        t, n = time.perf_counter(), 0
        for frame in c.decode(s):
            if every and n % every == 0:
                frame.to_ndarray(format="bgr24")
            n += 1
        return n, time.perf_counter() - t


def conversion(path: Path, every: int) -> tuple[int, float, float]:
    """(frames, ms a frame on 1 thread, on every core) for the kept frames' conversion."""
    import av

    with av.open(str(path)) as c:
        frames = [f for i, f in enumerate(c.decode(c.streams.video[0])) if i % every == 0]
    t = time.perf_counter()
    one = [f.to_ndarray(format="bgr24") for f in frames]
    t1 = time.perf_counter() - t
    t = time.perf_counter()
    many = [avframes.to_bgr(f) for f in frames]
    tn = time.perf_counter() - t
    assert all(np.array_equal(a, b) for a, b in zip(one, many, strict=True)), path
    return len(frames), 1000 * t1 / len(frames), 1000 * tn / len(frames)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "data" / "wild")
    ap.add_argument("--every", type=int, default=30)
    args = ap.parse_args()
    videos = sorted(args.videos.glob("*.mp4"))
    print(f"{len(videos)} videos from {args.videos}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print(f"| video | size | planned read of every {args.every}th: s (frames out) | every "
          "frame: s (frames) | NONREF: s (frames out) | convert ms/frame: 1 thread | "
          "every core |")
    print("|---|---|---|---|---|---|---|")
    for v in videos:
        rep = FrameReport(v)
        t = time.perf_counter()
        for _ in avframes.iter_planned(v, lambda n, fps: list(range(0, n, args.every)), 0,
                                       rep, 1 << 30):
            pass
        planned = time.perf_counter() - t
        n_all, t_all = walk(v)
        n_nonref, t_nonref = walk(v, skip="NONREF")
        _, c1, cn = conversion(v, args.every)
        import av

        with av.open(str(v)) as c:
            cc = c.streams.video[0].codec_context
            size = f"{cc.width}x{cc.height}"
        print(f"| {v.name} | {size} | {planned:.2f} ({rep.frames_decoded}) | {t_all:.2f} "
              f"({n_all}) | {t_nonref:.2f} ({n_nonref}) | {c1:.1f} | {cn:.1f} |")
    print(f"\ndecoder threads, every frame of the {len(videos)} videos, every {args.every}th "
          "converted:")
    for thread_type, count in THREADS:
        total = sum(walk(v, thread_type, count, every=args.every)[1] for v in videos)
        print(f"  {thread_type} {count or 'FFmpeg default'}: {total:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
