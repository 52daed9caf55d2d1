"""Resident memory of this process: current, peak since the last reset, and giving freed
heap back to the system between models (Linux /proc; elsewhere the lifetime peak)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import resource
import sys
from pathlib import Path

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
