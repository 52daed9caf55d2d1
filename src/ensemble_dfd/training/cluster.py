"""Train a run's models on a dask.distributed cluster: one task per model.

`base_train --dask-workers N` starts a local cluster of N workers; `--scheduler ADDRESS`
uses a running one (workers on every machine, the run folder and the dataset on storage
they all see, as for `prepare`). `--gpus-per-model K` makes each task ask for the worker
resource ``GPU=K``: start one worker per GPU with ``--resources GPU=1`` (and its
CUDA_VISIBLE_DEVICES), or `dask cuda worker`; a local cluster gives each worker its own
group of K visible GPUs.

On a worker, a task trains its model in a fresh ``python -m ensemble_dfd.training.cluster``
process (Dask workers are daemonic processes, which multiprocessing may not give children;
a plain subprocess is allowed, and it returns all of its memory when it exits, as the local
`train.process_per_model` child does). The child dies with its worker (prctl), so a lost
worker leaves no model training on behind it; Dask then runs the task again on another
worker, where the model resumes from its last checkpoint. The client skips finished models
without a task, logs where each model starts (attempt n) and ends, and keeps that record in
RUN/cluster.json.

Needs the ``dask`` extra (``pip install -e .[dask]``); imported only when asked for.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ensemble_dfd.cli_common import dask_client
from ensemble_dfd.config import ConfigError
from ensemble_dfd.errors import UserError
from ensemble_dfd.runio import read_json, write_json
from ensemble_dfd.training.modeldir import ModelDir
from ensemble_dfd.training.plan import ModelPlan

TOPIC = "ensemble_dfd.training.train"  # the Dask event topic a task announces its start on
PROGRESS_FILE = "cluster.json"
LOOPBACK = "127.0.0.1"  # where a local cluster listens


class TrainingFailed(UserError, RuntimeError):
    """A model's task failed on the cluster (the others finished; a rerun resumes)."""


@dataclass(frozen=True)
class ClusterTarget:
    """Where to train: a running scheduler's address, else a local cluster of N workers;
    each model's task asks for `gpus_per_model` units of the workers' GPU resource."""

    scheduler: str = ""
    workers: int = 0
    gpus_per_model: int = 0

    def resources(self) -> dict[str, int] | None:
        return {"GPU": self.gpus_per_model} if self.gpus_per_model else None

    def argv(self, gpus: bool = True) -> list[str]:
        """The flags that ask for this cluster (pipeline passes them on to its steps;
        gpus=False leaves --gpus-per-model out, for prepare)."""
        where = (["--scheduler", self.scheduler] if self.scheduler
                 else ["--dask-workers", str(self.workers)])
        if gpus and self.gpus_per_model:
            where += ["--gpus-per-model", str(self.gpus_per_model)]
        return where


def add_cluster_args(parser: argparse.ArgumentParser) -> None:
    """base_train's flags, the same as prepare's (--scheduler / --dask-workers) plus
    --gpus-per-model."""
    g = parser.add_argument_group("cluster (one Dask task per model; needs the dask extra)")
    pick = g.add_mutually_exclusive_group()
    pick.add_argument("--scheduler", metavar="ADDRESS",
                      help="train on a running Dask scheduler, e.g. tcp://HEAD:8786")
    pick.add_argument("--dask-workers", type=int, metavar="N",
                      help="train on a local Dask cluster of N workers")
    g.add_argument("--gpus-per-model", type=int, metavar="K",
                   help="each model's task needs K units of the workers' GPU resource "
                        "(workers started with --resources GPU=1, one per GPU)")


def target_from_args(args: argparse.Namespace) -> ClusterTarget | None:
    """The cluster the flags ask for, or None (train here, one model after the other)."""
    gpus = args.gpus_per_model or 0
    if gpus < 0 or (args.dask_workers or 0) < 0:
        raise ConfigError("--dask-workers and --gpus-per-model must be positive")
    if not (args.scheduler or args.dask_workers):
        if gpus:
            raise ConfigError("--gpus-per-model needs --scheduler ADDRESS or --dask-workers N")
        return None
    return ClusterTarget(args.scheduler or "", args.dask_workers or 0, gpus)


def configured_target(target: ClusterTarget | None, workers: int,
                      log: Callable[[str], None]) -> ClusterTarget | None:
    """The flags' cluster, else a local one of `workers` (``pipeline.dask_workers``) when
    dask is installed; None: the steps run here."""
    if target is not None or workers < 1:
        return target
    if importlib.util.find_spec("distributed") is None:
        log(f"pipeline.dask_workers = {workers}: dask[distributed] is not installed "
            "(pip install -e '.[dask]'); the models train here, one after the other")
        return None
    return ClusterTarget("", workers, 0)


def visible_gpus() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES names it (else nvidia-smi's count)."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [d for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines())
            if line.startswith("GPU ")] if out.returncode == 0 else []


def gpu_groups(gpus: Sequence[str], workers: int, per_model: int) -> list[str | None]:
    """Each local worker's CUDA_VISIBLE_DEVICES: worker i gets the i-th group of
    `per_model` GPUs; None for all when there is no GPU (the resource alone, e.g. a test)."""
    if not gpus:
        return [None] * workers
    if workers * per_model > len(gpus):
        raise ConfigError(f"--dask-workers {workers} x --gpus-per-model {per_model} needs "
                          f"{workers * per_model} GPUs; this machine has {len(gpus)}")
    return [",".join(gpus[i * per_model:(i + 1) * per_model]) for i in range(workers)]


def open_cluster(target: ClusterTarget, log: Callable[[str], None]) -> tuple[Any, Any]:
    """(client, local cluster or None). Local workers: one single-threaded worker process
    per model slot, each with its GPU resource and devices when --gpus-per-model is given."""
    distributed, client = dask_client(target.scheduler)
    if client is not None:
        return client, None
    k = target.gpus_per_model
    gpus = visible_gpus() if k else []
    n = target.workers or (len(gpus) // k if k else 1)
    if n < 1:
        raise ConfigError(f"--gpus-per-model {k}: this machine has only {len(gpus)} GPU(s)")
    if k and not gpus:
        log(f"no GPU found: {n} local worker(s) get the resource GPU={k} without devices")
    workers = {}
    for i, devices in enumerate(gpu_groups(gpus, n, k) if k else [None] * n):
        # no memory limit: the worker only waits, the model trains in its child process
        options: dict[str, Any] = {"nthreads": 1, "resources": target.resources() or {},
                                   "silence_logs": logging.WARNING, "memory_limit": 0,
                                   "host": LOOPBACK}
        if devices is not None:
            options["env"] = {"CUDA_VISIBLE_DEVICES": devices}
        workers[f"train-{i}"] = {"cls": distributed.Nanny, "options": options}
    # loopback only (as LocalCluster's default): a Dask scheduler or worker runs whatever
    # pickled function a client sends it, and SpecCluster's default is every interface
    cluster = distributed.SpecCluster(workers=workers, scheduler={
        "cls": distributed.Scheduler, "options": {
            "host": LOOPBACK, "dashboard": False, "dashboard_address": f"{LOOPBACK}:0"}},
        silence_logs=40)
    return distributed.Client(cluster), cluster


# ---- on a worker ------------------------------------------------------------------------

def run_child(fn: Callable[..., Any], args: tuple, label: str,
              malloc: str | None = None) -> Any:
    """fn(*args, parent_pid) in a fresh ``python -m ensemble_dfd.training.cluster`` process
    (allowed in a daemonic Dask worker, unlike multiprocessing); its result comes back
    pickled. `malloc` is preloaded into the child. Raises RuntimeError with the end of the
    child's stderr when it fails or is killed."""
    from ensemble_dfd.training import memory

    env = dict(os.environ)
    if malloc:
        env.update(memory.preload_env(malloc, env))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="ensemble_dfd-") as tmp:
        call, result, err = Path(tmp, "call.pkl"), Path(tmp, "result.pkl"), Path(tmp, "err")
        call.write_bytes(pickle.dumps((fn, args)))
        with err.open("wb") as stderr:
            rc = subprocess.run([sys.executable, "-m", __name__, str(call), str(result),
                                 label], env=env, stdin=subprocess.DEVNULL,
                                stdout=stderr, stderr=stderr).returncode
        if rc != 0 or not result.exists():
            tail = err.read_bytes()[-3000:].decode(errors="replace")
            how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
            raise RuntimeError(f"{label}: the training process ended ({how}):\n{tail}")
        return pickle.loads(result.read_bytes())


def train_task(plan: ModelPlan, data: str, run_dir: str, tune: bool) -> dict[str, Any]:
    """One model's task: train (or resume, or skip) it in a child process, then export its
    ONNX artifact in another (as base_train does locally; in the same one with
    ``train.export_apart = false``); return its summary and where it ran. A cluster-wide
    lock on the model folder keeps a second task (an earlier client's, still running on a
    worker) from training the same model at the same time."""
    from ensemble_dfd import base_train
    from ensemble_dfd.training import memory

    where = _announce(plan.ref)
    data_p, run_p = Path(data), Path(run_dir)
    model_dir = ModelDir.of(run_p, plan.ref)
    t0 = time.perf_counter()
    malloc = memory.allocator_library(plan.allocator)  # this machine's library
    with _model_lock(plan.ref, model_dir.path):
        summary = run_child(base_train._train_in_child, (plan, data_p, run_p, False, tune),
                            plan.ref, malloc)
        if plan.train.export == "onnx" and model_dir.needs_export():
            summary = run_child(base_train._export_in_child, (plan, data_p, run_p),
                                f"{plan.ref}-export")
    return {"summary": summary, **where, "seconds": round(time.perf_counter() - t0, 1)}


@contextlib.contextmanager
def _model_lock(ref: str, folder: Path) -> Iterator[None]:
    """Hold the Dask lock named for `folder` (nothing off a cluster). The lock of a worker
    that died is freed after distributed.scheduler.locks.lease-timeout (30 s)."""
    try:
        from distributed import Lock, get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        yield
        return
    lock = Lock(f"ensemble_dfd-train:{folder}")
    if not lock.acquire(timeout=5):
        worker.log_event(TOPIC, {"ref": ref, "waiting": True, "worker": worker.address})
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _announce(ref: str) -> dict[str, Any]:
    """Tell the client (a Dask event) that this worker starts `ref`; return where it runs."""
    where: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(),
                             "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    try:
        from distributed import get_worker

        worker = get_worker()
        where["worker"] = worker.address
        worker.log_event(TOPIC, {"ref": ref, **where})
    except (ImportError, ValueError):  # not on a Dask worker (called directly)
        where["worker"] = ""
    return where


# ---- the client ------------------------------------------------------------------------

class Progress:
    """RUN/cluster.json: each model's status, attempts, worker, host and GPUs, written
    whenever one changes (from the client's event thread too, hence the lock)."""

    def __init__(self, path: Path, log: Callable[[str], None]):
        self.path, self.log, self.lock = path, log, threading.Lock()
        self.models: dict[str, dict[str, Any]] = {}
        if path.exists():
            self.models = read_json(path).get("models", {})

    def update(self, ref: str, **fields: Any) -> None:
        with self.lock:
            self.models[ref] = {**self.models.get(ref, {}), **fields}
            write_json(self.path, {"models": self.models})

    def started(self, event: Any) -> None:
        """Handler of the tasks' start events: (time, message) pairs."""
        msg = event[1] if isinstance(event, tuple) else event
        ref = msg["ref"]
        if msg.get("waiting"):
            self.log(f"{ref}: waiting on {msg['worker']}: another task is training it (an "
                     "earlier client's, or one whose worker died: freed after 30 s)")
            return
        attempt = self.models.get(ref, {}).get("attempts", 0) + 1
        gpus = f", GPUs {msg['gpus']}" if msg.get("gpus") else ""
        self.log(f"{ref}: started on {msg['worker']} ({msg['host']}{gpus}), attempt {attempt}")
        status = "done" if self.models.get(ref, {}).get("status") == "done" else "running"
        self.update(ref, status=status, attempts=attempt, worker=msg["worker"],
                    host=msg["host"], gpus=msg.get("gpus", ""))


def train_on_cluster(plans: Sequence[ModelPlan], data: Path, run_dir: Path,
                     overwrite: bool, tune: bool, target: ClusterTarget,
                     log: Callable[[str], None] = print) -> dict[str, dict]:
    """Train every model not finished yet, one task each; return all models' summaries.
    With overwrite, the models' folders are reset here, once, so that a task run again
    after its worker died resumes instead of starting over. A model whose task fails (or
    whose workers kept dying, Dask's allowed-failures) is a TrainingFailed after the others
    finished."""
    summaries: dict[str, dict] = {}
    todo = []
    for plan in plans:
        model_dir = ModelDir.of(run_dir, plan.ref)
        if overwrite:
            model_dir.reset()
        if model_dir.finished() and (plan.train.export != "onnx"
                                     or model_dir.fresh_artifact() is not None):
            log(f"{plan.ref}: finished earlier, skipping ({model_dir.path})")
            summaries[plan.ref] = model_dir.summary()
        else:
            todo.append(plan)
    if not todo:
        return summaries
    progress = Progress(run_dir / PROGRESS_FILE, log)
    client, cluster = open_cluster(target, log)
    try:
        failed = _run_tasks(client, todo, data, run_dir, tune, target, progress, summaries)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    if failed:
        raise TrainingFailed("; ".join(f"{ref}: {err}" for ref, err in failed.items())
                             + f" (the other models finished; rerun to resume, see "
                               f"{run_dir / 'base_train.log'})")
    return {plan.ref: summaries[plan.ref] for plan in plans}


def _run_tasks(client: Any, todo: list[ModelPlan], data: Path, run_dir: Path, tune: bool,
               target: ClusterTarget, progress: Progress,
               summaries: dict[str, dict]) -> dict[str, str]:
    """Submit one task per model, record each result; return {ref: error} of failed ones."""
    from dask.distributed import as_completed

    workers = client.scheduler_info().get("workers", {})
    k = target.gpus_per_model
    progress.log(f"dask: {len(todo)} model(s) on {len(workers)} worker(s) at "
                 f"{client.scheduler.address}" + (f", each with GPU={k}" if k else ""))
    if k and not any(w.get("resources", {}).get("GPU", 0) >= k for w in workers.values()):
        progress.log(f"warning: no worker offers GPU={k} yet; the models wait for one "
                     f"(start workers with --resources GPU={k}, see the README)")
    for plan in todo:  # attempts count this client's tries
        progress.update(plan.ref, status="queued", attempts=0)
    client.subscribe_topic(TOPIC, progress.started)
    run = uuid.uuid4().hex[:8]
    futures = {client.submit(train_task, plan, str(data.resolve()), str(run_dir.resolve()),
                             tune, pure=False, key=f"train-{plan.ref}-{run}",
                             resources=target.resources()): plan.ref
               for plan in todo}
    failed: dict[str, str] = {}
    for fut in as_completed(list(futures)):
        ref = futures[fut]
        if fut.status == "finished":
            res = fut.result()
            summaries[ref] = res["summary"]
            progress.log(f"{ref}: finished on {res['worker']} ({res['host']}) "
                         f"in {res['seconds']:.0f} s")
            progress.update(ref, status="done", seconds=res["seconds"], worker=res["worker"])
        else:
            exc = fut.exception()
            failed[ref] = f"{type(exc).__name__}: {exc}".strip()
            progress.log(f"{ref}: failed: {failed[ref]}")
            progress.update(ref, status="failed", error=failed[ref][-2000:])
    client.unsubscribe_topic(TOPIC)
    return failed


def _child_main(argv: list[str]) -> int:
    """python -m ensemble_dfd.training.cluster CALL RESULT LABEL: run the pickled
    (fn, args) with this process's parent's pid appended, pickle what it returns."""
    call, result = Path(argv[0]), Path(argv[1])
    fn, args = pickle.loads(call.read_bytes())
    value = fn(*args, os.getppid())
    tmp = result.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(value))
    tmp.replace(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
