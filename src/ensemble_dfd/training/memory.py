"""Resident memory of this process: current, peak since the last reset, giving freed heap
back to the system between models (Linux /proc; elsewhere the lifetime peak), and the malloc
that child processes get (``train.allocator``)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import resource
import sys
from collections.abc import Iterator
from pathlib import Path

from ensemble_dfd.errors import UserError

_STATUS = Path("/proc/self/status")


def _status_kb(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Resident set size now, in MB (0 where unknown)."""
    kb = _status_kb("VmRSS")
    return round(kb / 1024, 1) if kb is not None else 0.0


def peak_rss_mb() -> float:
    """Peak resident set size since the last reset_peak() (else since start), in MB."""
    kb = _status_kb("VmHWM")
    if kb is None:  # macOS reports bytes, Linux kilobytes
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb = kb / 1024 if sys.platform == "darwin" else kb
    return round(kb / 1024, 1)


def reset_peak() -> bool:
    """Restart the peak (VmHWM) at the current RSS; True where the kernel allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def release() -> None:
    """Collect garbage and hand free heap pages back to the system (glibc malloc_trim):
    without it, memory freed by a finished model stays mapped and RSS only grows."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)


# train.allocator's named mallocs: (library ctypes.util.find_library looks for, Debian package)
ALLOCATOR_LIBS = {"jemalloc": ("jemalloc", "libjemalloc2"),
                  "tcmalloc": ("tcmalloc_minimal", "libtcmalloc-minimal4")}
ALLOCATOR_SETTINGS = ("auto", "system", *ALLOCATOR_LIBS)


class AllocatorError(UserError, RuntimeError):
    """A named allocator that is not installed."""


def allocator_library(setting: str) -> str | None:
    """The malloc library to preload for `setting` (train.allocator), or None for the
    system's: "auto" is jemalloc where installed (Linux); a named one that is missing is an
    AllocatorError naming the package that provides it."""
    if setting == "system":
        return None
    name, package = ALLOCATOR_LIBS["jemalloc" if setting == "auto" else setting]
    lib = ctypes.util.find_library(name) if sys.platform.startswith("linux") else None
    if lib is None and setting != "auto":
        raise AllocatorError(f"train.allocator = {setting}: lib{name} is not installed "
                             f"(Debian/Ubuntu: apt-get install {package}; Linux only)")
    return lib


# jemalloc hands freed pages back after ~1 s (default 10 s), from a background thread:
# EfficientNetB7's training peak -127 MiB in benchmarks/model_memory.py, -20 to -44 MiB in
# base_train runs, at the same speed (results/benchmarks/ and results/cpu/ READMEs)
JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"


def preload_env(library: str, environ: dict[str, str]) -> dict[str, str]:
    """The variables that make a process started with `environ` use `library` as its malloc
    (LD_PRELOAD; jemalloc also JEMALLOC_CONF unless MALLOC_CONF is set already)."""
    env = {"LD_PRELOAD": ":".join(filter(None, [library, environ.get("LD_PRELOAD")]))}
    if "jemalloc" in library and "MALLOC_CONF" not in environ:
        env["MALLOC_CONF"] = JEMALLOC_CONF
    return env


@contextlib.contextmanager
def preloaded(library: str | None) -> Iterator[None]:
    """Processes started inside get `library` as their malloc (preload_env)."""
    if library is None:
        yield
        return
    env = preload_env(library, dict(os.environ))
    before = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def allocator_in_use() -> str:
    """"jemalloc" / "tcmalloc" when that library is mapped into this process, else "system"."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return next((name for name, (lib, _) in ALLOCATOR_LIBS.items() if f"lib{lib}" in maps),
                "system")
