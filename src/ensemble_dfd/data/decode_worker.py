"""Image decoding that can be stopped: a warm worker process with a memory limit.

A verdict's image decode runs in a child process (``python -m
ensemble_dfd.data.decode_worker``, started with fork+exec, never a bare fork of a process
that holds TensorFlow's threads). The child caps its own address space (``RLIMIT_AS``:
what it held after importing OpenCV plus ``memory_budget(max_pixels)``) and tells OpenCV
the pixel limit (``OPENCV_IO_MAX_IMAGE_PIXELS``). The parent waits for the pixels while
checking the input's ``Deadline`` (time and cancel flag) every ``POLL_S`` and kills the
child when it passes, so a decode that would take minutes costs the deadline and no more.
Idle workers are kept (per limit pair) and reused: a normal image pays one pipe copy, not a
process start; a killed worker is dropped and the next decode starts a fresh one.

Where no worker can run (not a POSIX platform, or the child cannot be started) the image
is decoded in-process as before; ``decode_rgb`` says which ran.

Protocol (pipes): request = one JSON line ``{"path", "delay"}``; reply = 4-byte length, a
JSON header (``{"ok", "shape"}`` or ``{"error", "message"}``), then the RGB bytes.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ensemble_dfd.data.images import ImageReadError, read_rgb
from ensemble_dfd.inference.limits import Deadline, LimitExceeded

log = logging.getLogger(__name__)
POLL_S = 0.1  # how often a waiting parent looks at the deadline's clock and cancel flag
START_S = 30.0  # a worker that is not ready within this (and the deadline) is not used
IDLE_WORKERS = 4  # warm workers kept per limit pair (serve runs a few requests at once)
BASE_BUDGET = 64 << 20
BYTES_PER_PIXEL = 16  # the file, the decoded BGR, its RGB copy, a 16-bit TIFF's buffer
TEST_DELAY_S = 0.0  # tests only: seconds a worker sleeps before each decode (a slow file)
_HEADER = struct.Struct("<I")


class WorkerUnavailable(RuntimeError):
    """No worker process can run here (the caller decodes in-process)."""


def memory_budget(max_pixels: int) -> int:
    """Bytes a worker may add to what it held after start: enough for a picture at the
    pixel limit, decoded and turned to RGB."""
    return BASE_BUDGET + BYTES_PER_PIXEL * max_pixels


def worker_possible() -> bool:
    return os.name == "posix"


class Worker:
    """One child process; ``decode`` raises LimitExceeded after killing it when the
    deadline passes, the cancel flag is set, or it ran out of memory."""

    def __init__(self, max_pixels: int, memory_bytes: int, deadline: Deadline):
        self.key = (max_pixels, memory_bytes)
        self.memory_bytes = memory_bytes
        src = str(Path(__file__).resolve().parents[2])  # this tree, whatever the cwd
        env = dict(os.environ, OPENCV_IO_MAX_IMAGE_PIXELS=str(max_pixels),
                   MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(memory_bytes)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                start_new_session=True)  # a Ctrl-C reaches the parent, which ends it
        except OSError as exc:
            raise WorkerUnavailable(f"cannot start an image decoder process: {exc}") from exc
        try:
            hello = self._reply(_start_deadline(deadline), "starting the image decoder")
        except LimitExceeded as exc:  # a child that dies or hangs at start: no worker here
            if deadline.cancel.is_set():
                raise
            raise WorkerUnavailable(f"the image decoder process did not start ({exc})"
                                    ) from exc
        if not hello.get("ready"):
            self.kill()
            raise WorkerUnavailable("the image decoder process did not start")
        self.memory_limited = bool(hello.get("memory_limit"))
        self.busy = False  # a request sent, its answer not read to the end

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for fh in (self.proc.stdin, self.proc.stdout):
            if fh is not None:
                fh.close()

    def decode(self, path: Path, deadline: Deadline, max_pixels: int) -> np.ndarray:
        """RGB uint8 pixels of ``path``; ImageReadError when it is not decodable."""
        assert self.proc.stdin is not None
        req = json.dumps({"path": str(path), "delay": TEST_DELAY_S}) + "\n"
        try:
            self.proc.stdin.write(req.encode())
            self.proc.stdin.flush()
        except OSError as exc:  # it ended while idle
            self.kill()
            raise WorkerUnavailable(f"the image decoder process ended: {exc}") from exc
        self.busy = True
        head = self._reply(deadline, "decoding the image")
        self.busy = "error" not in head
        if "error" in head:
            if head["error"] == "memory":
                raise LimitExceeded("decoding needs more than the memory limit of "
                                    f"{self.memory_bytes / 2**20:.0f} MB")
            raise ImageReadError(head["message"])
        shape = tuple(int(v) for v in head["shape"])
        if len(shape) != 3 or shape[2] != 3 or shape[0] * shape[1] > max_pixels:
            self.kill()
            raise LimitExceeded(f"decodes to {shape}, over the pixel limit")
        rgb = np.empty(shape, np.uint8)
        self._read_into(memoryview(rgb).cast("B"), deadline, "decoding the image")
        self.busy = False
        return rgb

    def _reply(self, deadline: Deadline, doing: str) -> dict[str, Any]:
        size = bytearray(_HEADER.size)
        self._read_into(memoryview(size), deadline, doing)
        body = bytearray(_HEADER.unpack(size)[0])
        self._read_into(memoryview(body), deadline, doing)
        return json.loads(body)

    def _read_into(self, buf: memoryview, deadline: Deadline, doing: str) -> None:
        """Fill ``buf`` from the worker, checking the deadline every POLL_S; the worker is
        killed when the deadline passes or it ends without an answer."""
        assert self.proc.stdout is not None
        fd, got = self.proc.stdout.fileno(), 0
        while got < len(buf):
            try:
                deadline.check()
            except LimitExceeded:
                self.kill()
                raise
            ready, _, _ = select.select([fd], [], [], max(0.0, min(POLL_S,
                                                                   deadline.remaining())))
            if not ready:
                continue
            n = os.readv(fd, [buf[got:]])
            if n == 0:
                self.kill()
                raise LimitExceeded(f"the image decoder process ended while {doing} (exit "
                                    f"{self.proc.returncode}): a corrupt file, or over the "
                                    f"memory limit of {self.memory_bytes / 2**20:.0f} MB")
            got += n


def _start_deadline(deadline: Deadline) -> Deadline:
    """The request's deadline, but never longer than START_S (a start that hangs)."""
    if deadline.remaining() <= START_S:
        return deadline
    return Deadline(START_S, deadline.cancel)


class _Pool:
    """Idle warm workers per (max_pixels, memory_bytes); thread-safe."""

    def __init__(self) -> None:
        self.idle: dict[tuple[int, int], list[Worker]] = {}
        self.lock = threading.Lock()
        self.started = 0  # workers started in this process (tests: reuse vs restart)

    def take(self, max_pixels: int, memory_bytes: int, deadline: Deadline) -> Worker:
        with self.lock:
            idle = self.idle.get((max_pixels, memory_bytes), [])
            while idle:
                w = idle.pop()
                if w.alive():
                    return w
                w.kill()
            self.started += 1
        return Worker(max_pixels, memory_bytes, deadline)

    def give(self, w: Worker) -> None:
        with self.lock:
            idle = self.idle.setdefault(w.key, [])
            if w.alive() and not w.busy and len(idle) < IDLE_WORKERS:
                idle.append(w)
                return
        w.kill()

    def close(self) -> None:
        with self.lock:
            workers = [w for ws in self.idle.values() for w in ws]
            self.idle.clear()
        for w in workers:
            w.kill()


POOL = _Pool()
atexit.register(POOL.close)


def decode_rgb(path: str | Path, deadline: Deadline, max_pixels: int,
               memory_bytes: int | None = None, use_worker: bool = True
               ) -> tuple[np.ndarray, str]:
    """(RGB uint8 pixels, "worker" or "in-process"): decoded in a warm worker that is
    killed at the deadline or past ``memory_bytes`` (default ``memory_budget``), else
    in-process where no worker can run. Raises ImageReadError (not decodable, naming the
    file) or LimitExceeded (time, cancelled, memory)."""
    path = Path(path)
    if use_worker and worker_possible():
        memory = memory_budget(max_pixels) if memory_bytes is None else memory_bytes
        for attempt in range(2):  # an idle worker found dead is replaced once
            try:
                w = POOL.take(max_pixels, memory, deadline)
            except WorkerUnavailable as exc:
                log.warning("%s; decoding in-process (not stoppable at the deadline)", exc)
                break
            try:
                return w.decode(path, deadline, max_pixels), "worker"
            except WorkerUnavailable as exc:
                if attempt:
                    log.warning("%s; decoding in-process", exc)
            finally:  # one that answered is kept; a killed or interrupted one is dropped
                POOL.give(w)
    return read_rgb(path), "in-process"


# ---------------------------------------------------------------- the child


def _limit_memory(budget: int) -> int | None:
    """Cap this process's address space at what it holds now plus ``budget``."""
    try:
        import resource

        with open("/proc/self/statm") as fh:
            held = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = held + budget if hard == resource.RLIM_INFINITY else min(hard, held + budget)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        return cap
    except (ImportError, OSError, ValueError):
        return None


def _send(out: BinaryIO, head: dict[str, Any], data: memoryview | None = None) -> None:
    body = json.dumps(head).encode()
    out.write(_HEADER.pack(len(body)) + body)
    if data is not None:
        out.write(data)
    out.flush()


def _is_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "memory" in text or "allocate" in text


def _serve(budget: int) -> None:
    out = os.fdopen(os.dup(1), "wb")  # the replies; OpenCV's own prints go to stderr
    os.dup2(2, 1)
    import cv2

    cv2.setNumThreads(1)  # no thread pool (each thread's stack counts against the cap)
    _send(out, {"ready": True, "memory_limit": _limit_memory(budget)})
    for line in sys.stdin.buffer:
        req = json.loads(line)
        time.sleep(float(req.get("delay", 0.0)))
        try:
            rgb = np.ascontiguousarray(read_rgb(req["path"]))
        except ImageReadError as exc:
            _send(out, {"error": "read", "message": str(exc)})
        except (MemoryError, cv2.error) as exc:
            if _is_memory(exc):
                _send(out, {"error": "memory"})
            else:
                _send(out, {"error": "read", "message": f"{req['path']}: not a decodable "
                                                        "image (corrupt or unusual file)"})
        else:
            _send(out, {"ok": True, "shape": list(rgb.shape)}, memoryview(rgb).cast("B"))
            del rgb


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
