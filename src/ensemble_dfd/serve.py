"""``python -m ensemble_dfd.serve --run RUN_DIR``: the verdict as a local web service.

- ``POST /api/predict`` (multipart field ``file``: an image or a video): the same record as
  ``python -m ensemble_dfd.predict`` gives for that file; ``?crops=true`` adds the face crops
  as base64 JPEG. Errors are always JSON ``{"detail": ...}``: 401 token missing, 403 foreign
  Host or Origin, 408 upload stalled, 413 upload or image too large (pixels are read from the
  header), 415 not an image or video (judged by content, never by name), 422 unreadable,
  truncated or no face, 500 unexpected (details only in the server log), 503 busy or no
  temporary storage, 504 over the per-request time limit.
- ``GET /api/health``: what is loaded; 200 ``status: ok`` only when the models are warm and no
  request is held past its limit, else 503 (``warming``, ``stuck``).
  ``GET /openapi.json``: the schema. ``GET /``: a plain HTML page (no external CSS/JS) to
  upload a file and see verdict, votes and crops.

Limits: the busy check happens before the body is read, and an upload holds no worker slot
until its body is complete; an upload that stalls for ``--read-timeout`` s, averages under
``--min-upload-kib`` KiB/s after its first 5 s, or would be one more than
``--max-slow-uploads`` uploads still running after 5 s is cut (408): slow clients cannot
starve the rest. Each request works at most ``--timeout`` s, on at most ``--max-frames``
video frames and images of at most ``--max-megapixels``; work stops (between frames) when
the client goes away or the server stops (SIGTERM/SIGINT: running requests answer 503 within
seconds; a second SIGINT stops at once, still answering JSON). Every answer carries a strict
Content-Security-Policy (the page's own inline script and style by hash, frame-ancestors
'none'), nosniff and no-referrer headers. Host/Origin checks and the optional bearer token
are in ``ensemble_dfd.inference.access``.

Safety: uploads go to a private temporary folder (mode 0700) under a server-chosen name and
are deleted after each request (folders left by a killed server are removed at start); the
client's file name is only echoed back, never used as a path; the only model and learner
files loaded are the configured run's. One bounded worker pool runs the work; when it and
its queue are full the service answers 503 at once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from ensemble_dfd.inference.access import AccessPolicy, bind_warning, is_loopback
from ensemble_dfd.inference.limits import Deadline, Limits
from ensemble_dfd.inference.verdict import (
    SNIFF_BYTES,
    InputError,
    LimitError,
    Predictor,
    no_face_message,
    sniff,
)

log = logging.getLogger(__name__)

MiB = 1 << 20
CHUNK = MiB
MULTIPART_SLACK = 64 * 1024  # boundary and part headers around the file in the body
SUFFIX = {"image": ".img", "video": ".vid"}  # OpenCV/FFmpeg probe content, not names


class Admission:
    """Request slots with start times: the busy check (before any body byte is read) and
    the stuck check of /api/health. ``acquire`` returns a token (truthy) or None."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self._next = 1

    def acquire(self, blocking: bool = False) -> int | None:
        with self._lock:
            if len(self._started) >= self.capacity:
                return None
            token, self._next = self._next, self._next + 1
            self._started[token] = time.monotonic()
            return token

    def free(self) -> int:
        with self._lock:
            return self.capacity - len(self._started)

    def release(self, token: int | None = None) -> None:
        with self._lock:
            if token is None and self._started:  # the oldest, for callers without a token
                token = min(self._started)
            self._started.pop(token, None)

    def state(self) -> tuple[int, float]:
        """(requests in flight, age in seconds of the oldest)."""
        with self._lock:
            oldest = min(self._started.values(), default=None)
            n = len(self._started)
        return n, (time.monotonic() - oldest) if oldest is not None else 0.0


def json_response(status: int, detail: str, headers: dict[str, str] | None = None
                  ) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


@dataclass(frozen=True)
class UploadRules:
    """How uploads may behave (the slow-client defences of ``Guard``).

    read_timeout: seconds an upload may send nothing; seconds: for the whole body;
    min_rate: bytes/s an upload must average once it has run ``grace`` seconds;
    max_slow: uploads allowed past ``grace`` at once (the others are cut: slow clients
    cannot hold every connection); max_uploads: bodies being received at once. An upload
    holds no worker slot: one is taken when its body is complete."""

    read_timeout: float = 10.0
    seconds: float = 120.0
    min_rate: float = 32 * 1024
    grace: float = 5.0
    max_slow: int = 2
    max_uploads: int = 16


def security_headers(send: Any) -> Any:
    """``send`` with the page's security headers added to every response."""
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)
    return wrapped


class Guard:
    """ASGI middleware in front of everything: security headers on every answer; Host,
    Origin and token checks; 413 on size (Content-Length first, then by counting); 503 when
    no worker is free or too many uploads run, before the body is read, and when the
    temporary folder is missing; 408 when an upload stalls, is too slow or is one slow
    upload too many (``UploadRules``); JSON for anything unexpected, cancellation included.
    Holds a worker slot from the end of the body until the app has answered."""

    def __init__(self, app: Any, policy: AccessPolicy, limit: int, slots: Admission,
                 rules: UploadRules, tmp_root: Path | None = None):
        self.app, self.policy, self.limit, self.slots = app, policy, limit, slots
        self.rules, self.tmp_root = rules, tmp_root
        self.uploads = Admission(rules.max_uploads)
        self.slow = 0  # uploads past the grace period (event loop only: no lock)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = security_headers(send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        refusal = self.policy.refuse(scope.get("path", ""), headers)
        if refusal is None and scope.get("method") == "POST":
            refusal = self._refuse_post(headers)
        if refusal:
            await json_response(*refusal)(scope, receive, send)
            return
        if scope.get("method") != "POST":
            await self._run(scope, receive, send)
            return
        upload = self.uploads.acquire()
        if upload is None:
            await json_response(503, "busy: too many uploads in progress; retry"
                                )(scope, receive, send)
            return
        state: dict[str, Any] = {"upload": upload, "slot": None}
        try:
            await self._run(scope, receive, send, state)
        finally:
            if state["upload"] is not None:
                self.uploads.release(state["upload"])
            if state["slot"] is not None:
                self.slots.release(state["slot"])

    def _refuse_post(self, headers: dict[str, str]) -> tuple[int, str, dict] | None:
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            return 413, self._too_large_text(), {"connection": "close"}
        if self.slots.free() <= 0:
            return 503, "busy: all workers and queue slots are taken; retry", {}
        if not _writable_temp(self.tmp_root):
            log.error("the temporary folder is missing or not writable")
            return 503, ("the server cannot store uploads right now (temporary storage "
                         "unavailable); retry later"), {}
        return None

    async def _run(self, scope: dict, receive: Any, send: Any,
                   counted: dict[str, Any] | None = None) -> None:
        state = {"cut": "", "started": False}
        watch = None if counted is None else BodyWatch(self, counted, state, receive)
        guarded_receive = receive if watch is None else watch.receive

        async def guarded_send(message: dict) -> None:
            if state["cut"]:
                return  # the app's own answer to the cut body is replaced by ours
            state["started"] = True
            await send(message)

        try:
            await self._call_app(scope, guarded_receive, guarded_send, receive, send, state)
        finally:  # an app that stops reading part-way (e.g. a form over its own limits)
            if watch is not None:  # must not keep counting as a slow upload
                watch.close()
        if state["cut"] and not state["started"]:
            await json_response(*self._cut_answer(state["cut"]), {"connection": "close"}
                                )(scope, receive, send)

    async def _call_app(self, scope: dict, guarded_receive: Any, guarded_send: Any,
                        receive: Any, send: Any, state: dict[str, Any]) -> None:
        """The app, with JSON answers when it is cancelled or fails before answering."""
        try:
            await self.app(scope, guarded_receive, guarded_send)
        except asyncio.CancelledError:  # the server is stopping (a second Ctrl-C)
            if not state["started"]:
                state["started"] = True
                await json_response(503, "the server is stopping; retry later",
                                    {"connection": "close"})(scope, receive, send)
            raise
        except Exception:  # noqa: BLE001 - last line: the client gets JSON, the log the trace
            if not state["cut"]:
                log.exception("unexpected error in %s", scope.get("path"))
                if not state["started"]:
                    await json_response(500, "internal error (see the server log)"
                                        )(scope, receive, send)

    def _cut_answer(self, why: str) -> tuple[int, str]:
        r = self.rules
        return {"size": (413, self._too_large_text()),
                "busy": (503, "busy: all workers and queue slots are taken; retry"),
                "timeout": (408, f"upload too slow: no data for {r.read_timeout:g} s or not "
                                 f"complete within {r.seconds:g} s"),
                "rate": (408, f"upload too slow: under {r.min_rate / 1024:g} KiB/s after "
                              f"{r.grace:g} s"),
                "slow_cap": (408, f"upload too slow: {r.max_slow} slow uploads are already "
                                  "running; retry")}[why]

    def _too_large_text(self) -> str:
        return f"upload too large (limit about {(self.limit - MULTIPART_SLACK) / MiB:.0f} MiB)"


class BodyWatch:
    """One request's body as the app reads it: counted against the size limit, timed
    against ``UploadRules``; when complete, the upload slot is swapped for a worker slot.
    A cut body reads as a client that went away (``state['cut']`` says why)."""

    def __init__(self, guard: Guard, slots: dict[str, Any], state: dict[str, Any],
                 receive: Any):
        self.guard, self.slots, self.state, self.raw = guard, slots, state, receive
        self.seen, self.done, self.is_slow = 0, False, False
        self.t0 = self.last = time.monotonic()

    async def receive(self) -> dict:
        if self.done:
            return await self.raw()
        while True:
            why = self._verdict()
            if why:
                return self._cut(why)
            try:
                message = await asyncio.wait_for(self.raw(), timeout=0.5)
            except TimeoutError:
                continue
            if message["type"] != "http.request":
                self._finish()
                return message
            self.seen += len(message.get("body", b""))
            self.last = time.monotonic()
            if self.seen > self.guard.limit:
                return self._cut("size")
            if not message.get("more_body", False):
                self._finish()
                slot = self.guard.slots.acquire()
                if slot is None:
                    return self._cut("busy")
                self.slots["slot"] = slot
            return message

    def _verdict(self) -> str:
        """Why the upload must be cut now ('' = it may go on)."""
        r, now = self.guard.rules, time.monotonic()
        elapsed = now - self.t0
        if now - self.last > r.read_timeout or elapsed > r.seconds:
            return "timeout"
        if elapsed <= r.grace:
            return ""
        if self.seen / elapsed < r.min_rate:
            return "rate"
        if not self.is_slow:
            if self.guard.slow >= r.max_slow:
                return "slow_cap"
            self.is_slow = True
            self.guard.slow += 1
        return ""

    def _finish(self) -> None:
        self.done = True
        if self.is_slow:
            self.guard.slow -= 1
            self.is_slow = False
        if self.slots["upload"] is not None:
            self.guard.uploads.release(self.slots["upload"])
            self.slots["upload"] = None

    def close(self) -> None:
        """The request is over: an unfinished body stops counting (slow, upload slot)."""
        if not self.done:
            self._finish()

    def _cut(self, why: str) -> dict:
        self.state["cut"] = why
        self._finish()
        return {"type": "http.disconnect"}


def _writable_temp(tmp_root: Path | None) -> bool:
    """Whether uploads can be stored: our folder and the one the form parser spools to."""
    dirs = {Path(tempfile.gettempdir())} | ({tmp_root} if tmp_root else set())
    return all(d.is_dir() and os.access(d, os.W_OK | os.X_OK) for d in dirs)


class Service:
    """The loaded predictor, the worker pool, the slots and the temp-file policy of one app."""

    def __init__(self, predictor: Predictor, max_upload_bytes: int, workers: int,
                 queue: int, tmp_root: Path | None):
        self.predictor = predictor
        self.max_upload_bytes = max_upload_bytes
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predict")
        # requests running or waiting; beyond it the service answers 503 instead of queueing
        self.slots = Admission(workers + queue)
        self.tmp_root = tmp_root
        self.warm = threading.Event()
        self.stopping = threading.Event()
        self._deadlines: set[Deadline] = set()
        self._lock = threading.Lock()

    @contextmanager
    def deadline(self) -> Iterator[Deadline]:
        """A request's deadline, cancelled by ``stop`` while the request runs."""
        d = Deadline(self.predictor.limits.seconds)
        with self._lock:
            self._deadlines.add(d)
        if self.stopping.is_set():
            d.cancel.set()
        try:
            yield d
        finally:
            with self._lock:
                self._deadlines.discard(d)

    def stop(self) -> None:
        """The server is stopping: cancel every running request (each stops at its next
        check) and refuse new ones. Safe to call from a signal handler."""
        self.stopping.set()
        for d in list(self._deadlines):
            d.cancel.set()

    def run_one(self, path: Path, kind: str, name: str, crops: bool,
                deadline: Deadline | None = None) -> dict[str, Any]:
        """Extract and score one uploaded file (in a worker thread)."""
        faces = self.predictor.extract(path, kind, name=name, deadline=deadline)
        if not faces.faces:
            raise HTTPException(422, no_face_message(faces))
        rec = self.predictor.score([faces])[0]
        if crops:
            for row, f in zip(rec["face_results"], faces.faces, strict=True):
                row["jpeg_base64"] = base64.b64encode(f.jpeg).decode("ascii")
        return rec

    def start(self, warm: bool) -> None:
        """At server start: remove a killed server's upload folders, then warm up the
        models in the background (or mark ready at once)."""
        for d in remove_stale_uploads(self.tmp_root):
            log.info("removed a stale upload folder: %s", d)
        if warm:
            threading.Thread(target=self.warm_up, name="warm-up", daemon=True).start()
        else:
            self.warm.set()

    def warm_up(self) -> None:
        """Run every model once on each batch shape a request can use, then mark ready."""
        try:
            warm = getattr(self.predictor, "warm_up", None)
            if warm is not None:
                warm()
        except Exception:  # noqa: BLE001 - a failed warm-up leaves the service not ready
            log.exception("warm-up failed")
            return
        self.warm.set()

    def health(self, stuck_after: float) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body): 200 ready; 503 warming up or a request held past the limit."""
        in_flight, oldest = self.slots.state()
        if oldest > stuck_after:
            status = "stuck"
        elif not self.warm.is_set():
            status = "warming"
        else:
            status = "ok"
        body = {"status": status, "ready": status == "ok", "in_flight": in_flight,
                "capacity": self.slots.capacity, "oldest_request_s": round(oldest, 1)}
        return (200 if status == "ok" else 503), body


def _display_name(filename: str | None) -> str:
    # only echoed back to the client; never touches the file system
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in name if ch.isprintable())[:200] or "upload"


def _input_error(exc: InputError, svc: Service) -> HTTPException:
    if isinstance(exc, LimitError) and exc.reason == "cancelled" and svc.stopping.is_set():
        return HTTPException(503, "the server is stopping; retry later")
    if isinstance(exc, LimitError):
        return HTTPException(504 if exc.reason in ("time", "cancelled") else 413, str(exc))
    return HTTPException(422, str(exc))


UPLOAD_PREFIX = "ensemble_dfd-upload-"


def upload_folder(tmp_root: Path | None) -> Path:
    """A private (0700) folder for one upload, named after this process so that a later
    server can tell a dead server's leftovers (``remove_stale_uploads``)."""
    return Path(tempfile.mkdtemp(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-", dir=tmp_root))


def remove_stale_uploads(tmp_root: Path | None, max_age_s: float = 3600.0) -> list[Path]:
    """Remove upload folders left by a server that was killed: ours by name whose process
    is gone, and older unnamed ones (``ensemble_dfd-upload-XXXX``) past ``max_age_s``.
    Only real folders owned by this user are touched. Returns what was removed."""
    root = tmp_root or Path(tempfile.gettempdir())
    removed = []
    for d in root.glob(f"{UPLOAD_PREFIX}*"):
        try:
            st = d.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        pid = d.name[len(UPLOAD_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and "-" in d.name[len(UPLOAD_PREFIX):]:
            stale = int(pid) != os.getpid() and not _alive(int(pid))
        else:
            stale = time.time() - st.st_mtime > max_age_s
        if stale:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _save_upload(file: UploadFile, svc: Service) -> tuple[Path, Path, str]:
    """(temp folder, file, kind) of an upload, judged by content; HTTPException otherwise."""
    head = await file.read(SNIFF_BYTES)
    kind = sniff(head)
    if kind is None:
        raise HTTPException(415, "unsupported file: not an image (JPEG, PNG, BMP, WebP, "
                                 "TIFF) or video (MP4/MOV, MKV/WebM, AVI, ...) by its content")
    try:
        tmp = upload_folder(svc.tmp_root)
    except OSError as exc:
        log.error("cannot create an upload folder: %s", exc)
        raise HTTPException(503, "the server cannot store uploads right now (temporary "
                                 "storage unavailable); retry later") from None
    path = tmp / f"upload{SUFFIX[kind]}"  # our own name, never the client's
    try:
        size = len(head)
        with path.open("wb") as fh:
            fh.write(head)
            while chunk := await file.read(CHUNK):
                size += len(chunk)
                if size > svc.max_upload_bytes:
                    raise HTTPException(413, f"upload too large (limit "
                                             f"{svc.max_upload_bytes / MiB:.0f} MiB)")
                fh.write(chunk)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, path, kind


async def _run_watched(request: Request, svc: Service, args: tuple, deadline: Deadline
                       ) -> dict[str, Any]:
    """Run the work in the pool; cancel it (between frames) when the client goes away."""
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(svc.pool, svc.run_one, *args, deadline)
    while True:
        done, _ = await asyncio.wait({fut}, timeout=0.25)
        if done:
            return fut.result()
        if not deadline.cancel.is_set() and await request.is_disconnected():
            deadline.cancel.set()


def create_app(run_dir: str | Path, learner: str | None = None, aggregate: str = "mean",
               faces: str = "auto", max_upload_mb: float = 50, workers: int = 1,
               queue: int = 4, tmp_root: str | Path | None = None,
               predictor: Predictor | None = None, limits: Limits | None = None,
               policy: AccessPolicy | None = None, read_timeout: float = 10.0,
               upload_seconds: float = 120.0, warm: bool = True,
               rules: UploadRules | None = None) -> FastAPI:
    """The FastAPI app for one run (``predictor`` lets tests share a loaded one).

    ``policy``: Host/Origin/token rules (default: loopback names only, no token);
    ``rules``: how uploads may behave (default: ``UploadRules`` with ``read_timeout``, the
    seconds an upload may stall, and ``upload_seconds``, for the whole body);
    ``warm``: warm the models up in the background at start (/api/health: 503 until done).
    Upload folders left by a killed server are removed at start.
    """
    rules = rules or UploadRules(read_timeout=read_timeout, seconds=upload_seconds)
    predictor = predictor or Predictor(run_dir, learner, aggregate, faces, limits=limits)
    if limits is not None:
        predictor.limits = limits
    limit = int(max_upload_mb * MiB)
    svc = Service(predictor, limit, max(1, workers), max(0, queue),
                  Path(tmp_root) if tmp_root else None)
    stuck_after = 2 * predictor.limits.seconds + 30 if predictor.limits.seconds else 600.0
    # /docs and /redoc would pull Swagger/ReDoc from a CDN: the service is meant offline

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        svc.start(warm)
        yield
        svc.stop()
        svc.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="ensemble_dfd verdicts",
                  description="Deepfake verdicts from a trained ensemble_dfd run.",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.service = svc

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error: %s: %s", type(exc).__name__, exc)
        return json_response(500, "internal error (see the server log)")

    @app.get("/api/health")
    def health() -> JSONResponse:
        code, state = svc.health(stuck_after)
        return JSONResponse({**state, **predictor.describe(), "max_upload_mb": limit / MiB,
                             "workers": workers}, status_code=code)

    @app.post("/api/predict")
    async def predict(request: Request,
                      file: UploadFile = File(..., description="an image or a video"),
                      crops: bool = Query(False, description="add face crops (base64 JPEG)"),
                      ) -> dict[str, Any]:
        # the busy slot is held by Guard from before the body was read until the answer
        tmp = None
        try:
            tmp, path, kind = await _save_upload(file, svc)
            with svc.deadline() as deadline:
                try:
                    return await _run_watched(
                        request, svc, (path, kind, _display_name(file.filename), crops),
                        deadline)
                except InputError as exc:
                    raise _input_error(exc, svc) from None
        finally:
            await file.close()
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    # outermost: refuse foreign origins, oversized bodies and busy moments before the
    # multipart parser reads a byte
    app.add_middleware(Guard, policy=policy or AccessPolicy(), limit=limit + MULTIPART_SLACK,
                       slots=svc.slots, rules=rules, tmp_root=svc.tmp_root)
    return app


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ensemble_dfd: real or fake?</title>
<style>
body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
#verdict{font-size:1.6em;font-weight:bold;margin:.5em 0}
.real{color:#176b20}.fake{color:#a31616}.err{color:#a31616}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.2em .6em}
.crops figure{display:inline-block;margin:.3em;text-align:center;font-size:.8em}
.crops img{width:96px;height:96px;object-fit:cover;display:block}
</style></head><body>
<h1>Real or fake?</h1>
<p>Upload an image or a short video. Faces are found as in the run's training data, every
model votes, and the ensemble decides. Research prototype: not proof of anything.</p>
<form id="form"><input type="file" id="file" name="file" accept="image/*,video/*" required>
<button type="submit" id="submit">Check</button>
<label>access token (if the service has one) <input type="password" id="token"></label></form>
<p id="status"></p>
<div id="verdict"></div>
<p id="whole"></p>
<div id="details"></div>
<div class="crops" id="crops"></div>
<script>
const form=document.getElementById('form'), statusEl=document.getElementById('status');
function esc(s){return String(s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;',
 '"':'&quot;',"'":'&#39;'}[c]));}
form.addEventListener('submit', async ev=>{
 ev.preventDefault();
 const f=document.getElementById('file').files[0]; if(!f) return;
 const v=document.getElementById('verdict'), d=document.getElementById('details'),
       c=document.getElementById('crops');
 v.textContent=''; v.className=''; d.innerHTML=''; c.innerHTML='';
 statusEl.textContent='Checking '+f.name+' ...';
 const body=new FormData(); body.append('file', f);
 const tok=document.getElementById('token').value, headers={};
 if(tok) headers['Authorization']='Bearer '+tok;
 const w=document.getElementById('whole'); w.textContent='';
 let r, j;
 try { r=await fetch('/api/predict?crops=true',{method:'POST',body,headers});
       j=await r.json(); }
 catch(e){ statusEl.textContent='Request failed: '+e; return; }
 if(!r.ok){ statusEl.textContent=''; v.className='err';
   v.textContent='Error '+r.status+': '+(j.detail||'unknown'); v.dataset.verdict='error';
   return; }
 statusEl.textContent='';
 v.className=j.verdict; v.dataset.verdict=j.verdict;
 v.textContent=j.verdict.toUpperCase()+' (P(real) '+j.p_real.toFixed(3)+', '+j.aggregate+
   ' over '+j.faces+' face'+(j.faces==1?'':'s')+', '+j.learner+')';
 if(j.whole_image){ w.className='err'; w.dataset.whole='true';
   w.textContent='No face was detected: the whole image was scored as a face crop '+
   '(it looks like one). Check that it really shows a face.'; }
 let h='<table><tr><th>model</th><th>P(real)</th><th>vote</th></tr>';
 for(const [m,x] of Object.entries(j.models)){
   h+='<tr><td>'+esc(m)+'</td><td>'+x.p_real.toFixed(3)+'</td><td class="'+x.verdict+'">'+
      x.verdict+'</td></tr>'; }
 d.innerHTML=h+'</table>';
 for(const fr of j.face_results){
   const fig=document.createElement('figure'), img=document.createElement('img');
   img.src='data:image/jpeg;base64,'+fr.jpeg_base64; img.alt='face, frame '+fr.frame;
   const cap=document.createElement('figcaption');
   cap.textContent='frame '+fr.frame+': '+fr.verdict+' '+fr.p_real.toFixed(2);
   cap.className=fr.verdict; fig.append(img,cap); c.append(fig); }
});
</script></body></html>
"""


def _inline_hash(tag: str) -> str:
    """CSP source for the page's one inline <tag> block (its sha256)."""
    body = PAGE.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]
    return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"


# the page needs its own inline script and style, data: crops and fetch to this server only
CSP = ("default-src 'none'; "
       f"script-src {_inline_hash('script')}; style-src {_inline_hash('style')}; "
       "img-src data:; connect-src 'self'; form-action 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = [(k.encode(), v.encode()) for k, v in (
    ("content-security-policy", CSP), ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"), ("referrer-policy", "no-referrer"),
    ("cross-origin-resource-policy", "same-origin"), ("cache-control", "no-store"))]


def policy_for(host: str, allow_hosts: Sequence[str], allow_origins: Sequence[str],
               token: str | None) -> AccessPolicy:
    """Allowed Host names: the loopback names, the bound address and --allow-host; any
    name when bound to all interfaces without --allow-host (the token then matters)."""
    hosts = list(dict.fromkeys([*("127.0.0.1", "localhost", "::1"), *allow_hosts]))
    if host in ("0.0.0.0", "::", "") and not allow_hosts:
        hosts = ["*"]
    elif not is_loopback(host):
        hosts.append(host)
    return AccessPolicy(tuple(hosts), tuple(allow_origins), token or None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ensemble_dfd.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=50)
    p.add_argument("--workers", type=int, default=1, help="requests processed at once")
    p.add_argument("--queue", type=int, default=4, help="requests waiting before 503")
    p.add_argument("--learner", default="auto")
    p.add_argument("--aggregate", default="mean")
    p.add_argument("--faces", default="auto")
    d = Limits()
    p.add_argument("--max-frames", type=int, default=d.max_frames)
    p.add_argument("--max-megapixels", type=float, default=d.max_pixels / 1e6)
    p.add_argument("--max-decoded-frames", type=int, default=d.max_decoded_frames,
                   help="video frames decoded at most per request (see predict --help)")
    p.add_argument("--timeout", type=float, default=d.seconds, help="seconds per request")
    p.add_argument("--keyframes", action="store_true",
                   help="videos: decode only keyframes (fast; see predict --help)")
    p.add_argument("--backend", choices=("onnx", "keras"), default="onnx",
                   help="ONNX artifacts where fresh, else Keras (see ensemble_dfd.artifacts)")
    r = UploadRules()
    p.add_argument("--read-timeout", type=float, default=r.read_timeout,
                   help="seconds an upload may send nothing before it is cut (408)")
    p.add_argument("--min-upload-kib", type=float, default=r.min_rate / 1024,
                   help=f"KiB/s an upload must average after {r.grace:g} s, else it is cut "
                        f"(408; default {r.min_rate / 1024:g})")
    p.add_argument("--max-slow-uploads", type=int, default=r.max_slow,
                   help=f"uploads still running after {r.grace:g} s allowed at once; more "
                        f"are cut (408; default {r.max_slow})")
    p.add_argument("--verbose", action="store_true",
                   help="show TensorFlow's start-up messages")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another Host name clients use (repeatable)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="another web origin allowed to call the API, e.g. "
                        "https://lab.example (repeatable)")
    p.add_argument("--token", default=os.environ.get("ENSEMBLE_DFD_TOKEN"),
                   help="require 'Authorization: Bearer TOKEN' on /api/ (default: "
                        "$ENSEMBLE_DFD_TOKEN)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ensemble_dfd.errors import UserError
    from ensemble_dfd.predict import native_stderr_silenced, quiet_libraries

    warning = bind_warning(args.host, args.token)
    if warning:
        print(warning, file=sys.stderr)
    if not args.verbose:
        quiet_libraries()
    try:
        limits = Limits(max_frames=args.max_frames,
                        max_pixels=int(args.max_megapixels * 1e6), seconds=args.timeout,
                        keyframes=args.keyframes,
                        max_decoded_frames=args.max_decoded_frames)
        with native_stderr_silenced(not args.verbose):  # TensorFlow's C++ start-up notes
            predictor = Predictor(args.run, args.learner, args.aggregate, args.faces,
                                  limits=limits, backend=args.backend)
        rules = UploadRules(read_timeout=args.read_timeout, min_rate=args.min_upload_kib * 1024,
                            max_slow=args.max_slow_uploads)
        app = create_app(args.run, args.learner, args.aggregate, args.faces,
                         args.max_upload_mb, args.workers, args.queue, limits=limits,
                         predictor=predictor,
                         policy=policy_for(args.host, args.allow_host, args.allow_origin,
                                           args.token), rules=rules)
    except (UserError, ValueError) as exc:  # a bad limit value is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve_app(app, args.host, args.port)
    return 0


STOP_GRACE_S = 5.0  # after a stop signal: seconds running requests get to answer


def serve_app(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    """Run the app under uvicorn until SIGINT/SIGTERM. The first signal cancels every
    running request (each answers 503 at its next check) and the server waits at most
    ``STOP_GRACE_S`` for them; a second SIGINT stops at once (still with a JSON answer)."""
    import uvicorn

    svc: Service = app.state.service

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            svc.stop()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, workers=1, log_level=log_level,
                            timeout_graceful_shutdown=int(STOP_GRACE_S))
    try:
        Server(config).run()  # re-raises the stop signal once it has shut down
    except KeyboardInterrupt:
        pass
    finally:
        svc.pool.shutdown(wait=False, cancel_futures=True)
        stuck = [t for t in threading.enumerate() if t.name.startswith("predict")]
        for t in stuck:
            t.join(STOP_GRACE_S)
        if any(t.is_alive() for t in stuck):  # a decoder that never checks its deadline
            log.error("a request did not stop within %g s; exiting anyway", STOP_GRACE_S)
            logging.shutdown()
            os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
