"""Shared fixtures: where the research data lives, and skipping when it is absent."""

from __future__ import annotations

import os
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
