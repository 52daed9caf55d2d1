"""`prepare` on a local Dask cluster: the same manifest as a local run, and a worker lost
mid-run costs no video (its tasks are retried; a video that keeps killing workers gets a
logged failure). Few videos and a coarse --every keep these short."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from ensemble_dfd.prepare import main as prepare_main

pytest.importorskip("dask.distributed", reason="needs the dask extra (pip install .[dask])")
pytestmark = pytest.mark.integration

VIDEOS = ["004.mp4", "004_982.mp4", "519.mp4", "519_515.mp4", "brtujopkby.mp4"]


@pytest.fixture(scope="module")
def few(wild, tmp_path_factory) -> Path:
    """A labels CSV listing five of the wild videos (2 real, 3 fake)."""
    labels = pd.read_csv(wild / "labels.csv")
    csv = tmp_path_factory.mktemp("labels") / "labels.csv"
    labels[labels["path"].isin(VIDEOS)].to_csv(csv, index=False)
    return csv


def _prepare(wild: Path, labels: Path, out: Path, *extra: str) -> None:
    assert prepare_main(["all", "--videos", str(wild), "--labels", str(labels), "--out",
                         str(out), "--every", "300", "--ratios", "0.6,0.2,0.2", *extra]) == 0


def test_dask_run_gives_the_local_manifest(wild, few, tmp_path):
    _prepare(wild, few, tmp_path / "local", "--workers", "2")
    _prepare(wild, few, tmp_path / "dask", "--dask-workers", "2")
    local = pd.read_csv(tmp_path / "local" / "manifest.csv")
    dask = pd.read_csv(tmp_path / "dask" / "manifest.csv")
    assert len(local) > 0 and set(local["split"]) > {"train"}
    cols = ["path", "split", "label", "group", "sha256"]
    pd.testing.assert_frame_equal(local[cols], dask[cols])
    log = pd.read_csv(tmp_path / "dask" / "faces" / "face_log.csv")
    assert sorted(log["video"]) == sorted(Path(v).stem for v in VIDEOS)
    # a rerun finds the finished output and does nothing
    _prepare(wild, few, tmp_path / "dask", "--dask-workers", "2")


class DyingProcess:
    """Wraps extract.process: kills its worker process on chosen videos, once per video
    (a marker file remembers), or every time for `always`."""

    def __init__(self, process, marks: str, once: set[str], always: set[str]) -> None:
        self.process, self.marks, self.once, self.always = process, marks, once, always

    def __call__(self, task, out, s):
        mark = Path(self.marks) / task.video
        if task.video in self.always or (task.video in self.once and not mark.exists()):
            mark.touch()
            os._exit(1)  # the worker dies mid-task, as on a lost machine
        return self.process(task, out, s)


def test_lost_worker_videos_are_retried_or_logged(wild, few, tmp_path):
    import cloudpickle
    import dask
    from dask.distributed import Client, LocalCluster

    from ensemble_dfd.prepare.common import Problems
    from ensemble_dfd.prepare.dask_map import map_tasks
    from ensemble_dfd.prepare.extract import Settings, run_faces_stage
    from ensemble_dfd.prepare.plan import plan_videos, read_labels

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests
    problems = Problems()
    tasks = plan_videos(wild, read_labels(few, problems), problems, few)
    marks = tmp_path / "marks"
    marks.mkdir()
    dying = DyingProcess(None, str(marks), once={"519"}, always={"004_982"})
    # one task per single-threaded worker at a time, so a death hits only the running video;
    # a video is given up after killing 2 workers (Dask's default is 3)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.scheduler.worker-saturation": 1.0}), \
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:

        def mapper(process, todo, out, s, on_result):
            dying.process = process
            # in plan order, not largest first: which healthy video shares a worker with a
            # dying one depends on the order, and allowed-failures = 1 leaves no slack
            map_tasks(client, dying, sorted(todo, key=lambda t: t.video), out, s, on_result)

        table = run_faces_stage(tmp_path / "faces", tasks, Settings(every=300), 1, problems,
                                mapper)
    log = pd.read_csv(tmp_path / "faces" / "face_log.csv", dtype={"video": str})
    assert sorted(log["video"]) == sorted(Path(v).stem for v in VIDEOS)
    rows = log.set_index("video")
    assert rows.loc["519", "status"] == "done" and rows.loc["519", "faces_saved"] > 0
    assert (marks / "519").exists()  # it did die once, and was run again
    assert rows.loc["004_982", "status"] == "failed"
    assert "KilledWorker" in rows.loc["004_982", "error"]
    assert any(p["path"] == "004_982" and p["kind"] == "failed" for p in problems.items)
    for video in ("004", "519", "519_515", "brtujopkby"):
        assert rows.loc[video, "status"] == "done"
        saved = table[table["video"] == video]
        assert len(saved) == rows.loc[video, "faces_saved"]
        assert all((tmp_path / "faces" / p).is_file() for p in saved["path"])
