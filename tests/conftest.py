"""Shared fixtures: where the research data lives, and skipping when it is absent."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ENSEMBLE_DFD_SHARED", ROOT.parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: integration data lives in ../shared/data beside the "
                    "checkout (CI has it; a fresh clone does not)")
    return path


@pytest.fixture(scope="session")
def dfd_mini() -> Path:
    return _need(SHARED_DATA / "dfd-mini")


@pytest.fixture(scope="session")
def wild() -> Path:
    return _need(SHARED_DATA / "wild")


TINY_TRAIN = ["--image-size", "32", "--weights", "none", "--epochs-frozen", "1",
              "--epochs-finetune", "1", "--batch-size", "16",
              "--set", "train.freeze_base=false", "--set", "train.base_bn_training=true",
              "--set", "train.bn_momentum=0.9", "--set", "train.lr_frozen=1e-3"]


def once_per_session(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """`build(path)` run once per test session, even with pytest-xdist's workers: the first
    worker to ask builds it under a lock in the folder the workers' temp folders share, the
    others wait for it and reuse it (the pattern pytest-xdist documents)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """A small synthetic face dataset in the study's layout (no ../shared needed)."""
    from ensemble_dfd.data.synthetic import make_dataset

    def build(out: Path) -> None:
        make_dataset(out, identities=16, frames=3, size_range=(40, 56), seed=3)

    return once_per_session(tmp_path_factory, "synthetic", build)


@pytest.fixture(scope="session")
def tiny_run(synthetic_dataset, tmp_path_factory) -> Path:
    """A real run folder: two tiny models (M6, M2 at 32 px) trained on synthetic faces,
    logits collected on validation and test, meta-learners stacked. Takes ~1 min on 2 cores,
    once per session (all workers share it); tests must not modify it (copy it with
    helpers.link_copy first)."""
    from ensemble_dfd import base_train, stack

    def build(run: Path) -> None:
        assert base_train.main(["--data", str(synthetic_dataset), "--out", str(run),
                                "--models", "M6,M2", *TINY_TRAIN]) == 0
        assert stack.main(["--run", str(run), "--bootstrap", "100"]) == 0

    return once_per_session(tmp_path_factory, "tiny_run", build)


def pytest_collection_modifyitems(config, items) -> None:
    """Tests that use the trained `tiny_run` (directly or through another fixture) train
    real models: they are `slow`, like every other training test. The slow tests go first
    (each module's tests kept in order), so that pytest-xdist's workers, handed tests in
    this order, start the long ones early and finish together."""
    for item in items:
        if "tiny_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
