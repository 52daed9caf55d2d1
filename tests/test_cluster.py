"""base_train on a local Dask cluster: one task per model, each trained in a child process
of its worker; the same run folder as the serial run; a killed worker's model is retried and
resumes from its checkpoint; a rerun trains nothing; --gpus-per-model with fake resources."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_TRAIN

pytest.importorskip("dask.distributed", reason="needs the dask extra (pip install .[dask])")

from ensemble_dfd.config import ConfigError  # noqa: E402
from ensemble_dfd.stacking import logits  # noqa: E402
from ensemble_dfd.training.cluster import (  # noqa: E402
    ClusterTarget,
    add_cluster_args,
    configured_target,
    gpu_groups,
    target_from_args,
)

SRC = Path(__file__).parents[1] / "src"


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_cluster_args(p)
    return p.parse_args(list(argv))


def test_flags_to_target():
    assert target_from_args(_args()) is None
    assert target_from_args(_args("--dask-workers", "2", "--gpus-per-model", "1")) == \
        ClusterTarget("", 2, 1)
    assert target_from_args(_args("--scheduler", "tcp://h:8786")).resources() is None
    with pytest.raises(ConfigError, match="--gpus-per-model needs"):
        target_from_args(_args("--gpus-per-model", "1"))
    with pytest.raises(SystemExit):  # one of the two
        _args("--scheduler", "tcp://h:8786", "--dask-workers", "2")
    # pipeline passes them on: all to base_train, the cluster alone to prepare
    target = ClusterTarget("tcp://h:8786", 0, 2)
    assert target.argv() == ["--scheduler", "tcp://h:8786", "--gpus-per-model", "2"]
    assert target.argv(gpus=False) == ["--scheduler", "tcp://h:8786"]
    assert target_from_args(_args(*ClusterTarget("", 3, 1).argv())) == ClusterTarget("", 3, 1)


@pytest.mark.parametrize(("gpus", "workers", "k", "want"), [
    (["0", "1", "2", "3"], 2, 2, ["0,1", "2,3"]),
    (["4", "6"], 2, 1, ["4", "6"]),
    ([], 3, 1, [None, None, None]),
])
def test_gpu_groups(gpus, workers, k, want):
    assert gpu_groups(gpus, workers, k) == want


def test_configured_target(monkeypatch):
    """pipeline.dask_workers: a local cluster unless the flags name one; without dask, the
    steps run here and the log says why."""
    from ensemble_dfd.training import cluster

    lines: list[str] = []
    flags = ClusterTarget("tcp://h:8786", 0, 0)
    assert configured_target(flags, 2, lines.append) is flags
    assert configured_target(None, 0, lines.append) is None
    assert configured_target(None, 2, lines.append) == ClusterTarget("", 2, 0)
    assert lines == []
    monkeypatch.setattr(cluster.importlib.util, "find_spec", lambda name: None)
    assert configured_target(None, 2, lines.append) is None
    assert len(lines) == 1 and "dask[distributed] is not installed" in lines[0]


def test_local_cluster_listens_on_loopback_only():
    """A Dask scheduler or worker runs any pickled function a client sends it: the local
    cluster's must not be reachable from the network (SpecCluster's default host is every
    interface: it listened on the machine's address before)."""
    from ensemble_dfd.training.cluster import open_cluster

    client, cluster = open_cluster(ClusterTarget("", 1, 0), print)
    try:
        client.wait_for_workers(1, timeout=60)
        info = client.scheduler_info()
        addresses = [client.scheduler.address, *info["workers"],
                     *(w["nanny"] for w in info["workers"].values())]
        assert addresses and all(a.startswith("tcp://127.0.0.1:") for a in addresses), \
            addresses
        assert cluster.scheduler.http_server.address == "127.0.0.1"
    finally:
        client.close()
        cluster.close()


def test_gpu_groups_too_few():
    with pytest.raises(ConfigError, match="needs 4 GPUs; this machine has 2"):
        gpu_groups(["0", "1"], 2, 2)


def _cmd(data: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ensemble_dfd.base_train", "--data", str(data),
            "--out", str(run), *TINY_TRAIN, *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_two_workers_match_the_serial_run(synthetic_dataset, tiny_run, tmp_path):
    """Also train.export_apart = false (the demo's): each task exports its model in the
    child that trained it, not in a second one; the same files."""
    run = tmp_path / "dask"
    proc = subprocess.run(_cmd(synthetic_dataset, run, "--models", "M6,M2",
                               "--dask-workers", "2", "--set", "train.export_apart=false"),
                          env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run / "cluster.json").read_text())["models"]
    assert {r: (m["status"], m["attempts"]) for r, m in record.items()} == \
        {"M6": ("done", 1), "M2": ("done", 1)}
    assert record["M6"]["worker"] != record["M2"]["worker"]  # each on its own worker
    for ref in ("M6", "M2"):  # the same files per model as the serial run
        serial = sorted(p.name for p in (tiny_run / "models" / ref).iterdir())
        assert sorted(p.name for p in (run / "models" / ref).iterdir()) == serial
        a = pd.read_csv(tiny_run / "models" / ref / "history.csv")
        b = pd.read_csv(run / "models" / ref / "history.csv")
        assert a[["epoch", "phase"]].equals(b[["epoch", "phase"]])
        done = {r: json.loads((r / "models" / ref / "done.json").read_text())
                for r in (tiny_run, run)}
        assert (done[tiny_run]["export_process"], done[run]["export_process"]) == \
            ("own", "training")
    ours, theirs = logits.read_store(run), logits.read_store(tiny_run)
    key = ["model", "split", "path"]
    ours, theirs = ours.sort_values(key, ignore_index=True), theirs.sort_values(
        key, ignore_index=True)
    assert ours[[*key, "label"]].equals(theirs[[*key, "label"]])
    assert logits.read_images(run).sort_values("path", ignore_index=True).equals(
        logits.read_images(tiny_run).sort_values("path", ignore_index=True))
    assert set(pd.read_csv(run / "summary.csv")["ref"]) == {"M6", "M2"}


def _training_child(ref: str) -> int | None:
    """The pid of the child process training `ref` on a Dask worker (None before it runs)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ensemble_dfd.training.cluster" in argv and ref.encode() in argv:
            return int(proc.name)
    return None


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_worker_is_retried_and_rerun_trains_nothing(synthetic_dataset, tmp_path):
    """--gpus-per-model 1 on two local workers with fake GPU=1 resources; M2's worker is
    killed after M2's first checkpoint: the task runs again and M2 resumes from it."""
    run = tmp_path / "r"
    cmd = _cmd(synthetic_dataset, run, "--models", "M2", "--epochs-finetune", "3",
               "--no-collect", "--set", "train.export=none", "--dask-workers", "2",
               "--gpus-per-model", "1")
    # the killed worker's model lock is freed after 5 s instead of 30
    env = {**_env(), "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT": "5s",
           "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_VALIDATION_INTERVAL": "1s"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = run / "models" / "M2" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
            break
        time.sleep(0.1)
    child = _training_child("M2")
    assert proc.poll() is None and child is not None, "training ended before the kill"
    worker = _parent(child)
    os.kill(worker, signal.SIGKILL)
    killed_at = json.loads(state.read_text())["epoch"]
    assert proc.wait(timeout=600) == 0
    log = (run / "base_train.log").read_text()
    assert "GPU=1 without devices" in log and "each with GPU=1" in log
    assert f"M2: resuming after epoch {killed_at}" in log
    record = json.loads((run / "cluster.json").read_text())["models"]["M2"]
    assert record["status"] == "done" and record["attempts"] == 2
    h = pd.read_csv(run / "models" / "M2" / "history.csv")
    assert h["epoch"].tolist() == [1, 2, 3, 4]
    assert _training_child("M2") is None  # the killed worker's child died with it
    model = run / "models" / "M2" / "model.keras"
    before = model.stat().st_mtime_ns
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "M2: finished earlier, skipping" in again.stderr
    assert "dask:" not in again.stderr  # nothing to train: no cluster started
    assert model.stat().st_mtime_ns == before


def _fake_task(first, *args, **kwargs) -> dict:
    """Stands in for train_task on an in-process cluster: M2's training fails."""
    ref = getattr(first, "ref", first)
    if ref == "M2":
        raise RuntimeError("M2: the training process ended (exit code 1)")
    return {"summary": {"ref": ref}, "worker": "w", "host": "h", "seconds": 0.1}


def test_a_failed_model_does_not_stop_the_others(tmp_path, monkeypatch):
    from dask.distributed import Client, LocalCluster

    from ensemble_dfd.config import RunConfig
    from ensemble_dfd.training import cluster
    from ensemble_dfd.training.plan import plan_models

    lc = LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None)
    monkeypatch.setattr(cluster, "open_cluster", lambda target, log: (Client(lc), lc))
    monkeypatch.setattr(cluster, "train_task", _fake_task)
    lines: list[str] = []
    with pytest.raises(cluster.TrainingFailed, match="M2: RuntimeError: M2: the training "
                       "process ended .*the other models finished; rerun to resume"):
        cluster.train_on_cluster(plan_models(RunConfig(), "M6,M2"), tmp_path / "data",
                                 tmp_path, False, False, ClusterTarget("", 1, 0), lines.append)
    record = json.loads((tmp_path / "cluster.json").read_text())["models"]
    assert record["M6"]["status"] == "done" and record["M2"]["status"] == "failed"
    assert "exit code 1" in record["M2"]["error"]
    assert any(line.startswith("M6: finished on w") for line in lines)


def _visible() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_local_workers_get_their_own_gpus(monkeypatch):
    """--dask-workers 2 --gpus-per-model 2 on a machine showing GPUs 3,5,6,7: each worker
    sees its own two (and offers GPU=2); without --dask-workers, one worker per group."""
    from ensemble_dfd.training.cluster import open_cluster

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")
    for target, want in ((ClusterTarget("", 2, 2), ["3,5", "6,7"]),
                         (ClusterTarget("", 0, 1), ["3", "5", "6", "7"])):
        client, local = open_cluster(target, print)
        try:
            assert sorted(client.run(_visible).values()) == want
            resources = [w["resources"] for w in client.scheduler_info()["workers"].values()]
            assert resources == [{"GPU": target.gpus_per_model}] * len(want)
        finally:
            client.close()
            local.close()
