"""The Dask mapper runs videos in the order given (prepare hands it the largest first, as
to its own process pool) and reports a task that raised as a failed video."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("dask.distributed", reason="needs the dask extra (pip install .[dask])")

from ensemble_dfd.prepare.dask_map import map_tasks  # noqa: E402
from ensemble_dfd.prepare.plan import VideoTask  # noqa: E402

started_videos: list[str] = []
LOCK = threading.Lock()


def _record(task: VideoTask, out: str, s: object) -> dict:
    with LOCK:
        started_videos.append(task.video)
    if task.video == "bad":
        raise RuntimeError("cannot decode")
    return {"log": {"video": task.video, "status": "ok"}, "faces": [], "frames": []}


def test_tasks_run_in_the_given_order_and_failures_are_rows(tmp_path):
    from dask.distributed import Client, LocalCluster

    names = [f"v{i}" for i in range(12)] + ["bad"]
    tasks = [VideoTask(video=n, path="", label=0, source="s", group=n) for n in names]
    results: list[dict] = []
    started_videos.clear()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        map_tasks(client, _record, tasks, tmp_path, None, results.append)
    assert started_videos == names  # one single-threaded worker: exactly the submission order
    rows = {r["log"]["video"]: r["log"] for r in results}
    assert set(rows) == set(names)
    assert rows["bad"]["status"] == "failed" and "cannot decode" in rows["bad"]["error"]
