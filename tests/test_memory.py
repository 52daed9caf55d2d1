"""train.allocator: which malloc the per-model processes get, and that they really get it."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

from ensemble_dfd.training import memory

IN_USE = ("import os; from ensemble_dfd.training import memory; "
          "print(memory.allocator_in_use(), os.environ.get('MALLOC_CONF'))")


def test_system_needs_no_library_and_a_missing_one_is_named(monkeypatch):
    assert memory.allocator_library("system") is None
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert memory.allocator_library("auto") is None  # auto falls back to the system's
    with pytest.raises(memory.AllocatorError, match="apt-get install libjemalloc2"):
        memory.allocator_library("jemalloc")
    with pytest.raises(memory.AllocatorError, match="libtcmalloc_minimal"):
        memory.allocator_library("tcmalloc")


def test_processes_started_inside_preloaded_get_that_malloc():
    lib = memory.allocator_library("auto") if sys.platform.startswith("linux") else None
    if lib is None:
        pytest.skip("jemalloc is not installed (apt-get install libjemalloc2)")
    before = os.environ.get("LD_PRELOAD"), os.environ.get("MALLOC_CONF")
    with memory.preloaded(lib):
        inside = subprocess.run([sys.executable, "-c", IN_USE], capture_output=True,
                                text=True, check=True).stdout.strip()
    assert (os.environ.get("LD_PRELOAD"), os.environ.get("MALLOC_CONF")) == before  # restored
    after = subprocess.run([sys.executable, "-c", IN_USE], capture_output=True, text=True,
                           check=True, env={k: v for k, v in os.environ.items()
                                            if k != "LD_PRELOAD"}).stdout.strip()
    conf = before[1] or memory.JEMALLOC_CONF  # a user's MALLOC_CONF is kept
    assert (inside, after) == (f"jemalloc {conf}", f"system {before[1]}")
    assert memory.allocator_in_use() == "system"  # this process was not touched
