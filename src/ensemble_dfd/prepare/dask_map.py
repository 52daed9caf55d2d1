"""Map the per-video extraction over a dask.distributed cluster instead of a local pool.

Each video is one Dask task running the same `process` as the local pool. Workers write
crops under the output folder (shared storage on a real cluster); results come back to the
client, which writes the logs, the manifest and the splits exactly as a local run does.
Dask itself recomputes the tasks of a worker that is lost; a video whose task still fails
(it was on more than `allowed-failures` workers that died) gets a "failed" log row like any
unreadable video, and a rerun of the same command resumes with the videos not yet done.

Needs the ``dask`` extra (``pip install -e .[dask]``); imported only when asked for.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ensemble_dfd.cli_common import dask_client
from ensemble_dfd.data import avframes
from ensemble_dfd.prepare.common import LOG_COLUMNS, label_text, log
from ensemble_dfd.prepare.plan import VideoTask


@dataclass(frozen=True)
class DaskTarget:
    """Where to run: a running scheduler's address, else a local cluster of N workers."""

    scheduler: str = ""
    workers: int = 0


def failed_result(task: VideoTask, error: str) -> dict[str, Any]:
    """The result `process` would return for a video that could not be processed."""
    row: dict[str, Any] = {c: 0 for c in LOG_COLUMNS}
    row.update(video=task.video, label=label_text(task.label), source=task.source,
               group=task.group, error=f"{task.path or task.video}: {error}", status="failed")
    return {"log": row, "faces": [], "frames": []}


def open_client(target: DaskTarget) -> tuple[Any, Any]:
    """(client, local cluster or None). A local cluster has one single-threaded worker
    process per core (dlib and video decoding hold the GIL, so threads would not help)."""
    import dask

    distributed, client = dask_client(target.scheduler)
    if client is not None:
        return client, None
    # worker processes start as the local pool's do (fork on Linux): spawned ones import
    # the package and load the detector again, ~2 s of a short run (prepare_throughput)
    with dask.config.set({"distributed.worker.multiprocessing-method":
                          multiprocessing.get_start_method()}):
        cluster = distributed.LocalCluster(n_workers=target.workers or os.cpu_count() or 1,
                               threads_per_worker=1, processes=True, dashboard_address=None)
    return distributed.Client(cluster), cluster


def map_tasks(client: Any, process: Callable[..., dict[str, Any]],
              tasks: Sequence[VideoTask], out: Path, settings: Any,
              on_result: Callable[[dict[str, Any]], None]) -> None:
    """Run process(task, out, settings) for every task on the cluster; hand each result
    (or a failed row for a task that raised or lost its workers) to on_result as it comes."""
    from dask.distributed import as_completed

    futures = client.map(process, list(tasks), out=str(out), s=settings, pure=False,
                         key=[f"video-{i}-{t.video}" for i, t in enumerate(tasks)])
    owner = {f.key: t for f, t in zip(futures, tasks, strict=True)}
    for fut in as_completed(futures):
        if fut.status == "finished":
            on_result(fut.result())
            continue
        exc = fut.exception()
        on_result(failed_result(owner[fut.key], f"{type(exc).__name__}: {exc}"))
    client.cancel(futures)


def dask_mapper(target: DaskTarget) -> Callable[..., None]:
    """A mapper for extract.run_tasks: opens the client, maps, closes what it opened."""

    def run(process: Callable[..., dict[str, Any]], tasks: Sequence[VideoTask], out: Path,
            settings: Any, on_result: Callable[[dict[str, Any]], None]) -> None:
        client, cluster = open_client(target)
        try:
            n = len(client.scheduler_info().get("workers", {}))
            log(f"dask: {len(tasks)} video(s) on {n} worker(s) at {client.scheduler.address}")
            # a local cluster's workers share this machine; a running cluster's are taken
            # to be one per core (the README's recipe)
            share = avframes.share_of_cores(n) if cluster is not None else 1
            map_tasks(client, process, tasks, out, replace(settings, decode_threads=share),
                      on_result)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()

    return run
