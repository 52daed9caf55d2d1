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

Limits: the busy check happens before the body is read; an upload that stalls for
``--read-timeout`` s is cut (408); each request works at most ``--timeout`` s, on at most
``--max-frames`` video frames and images of at most ``--max-megapixels``; work stops (between
frames) when the client goes away. Host/Origin checks and the optional bearer token are in
``ensemble_dfd.access``.

Safety: uploads go to a private temporary folder (mode 0700) under a server-chosen name and
are deleted after each request; the client's file name is only echoed back, never used as a
path; the only joblib/model files loaded are the configured run's. One bounded worker pool
runs the work; when it and its queue are full the service answers 503 at once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from ensemble_dfd.access import AccessPolicy, bind_warning, is_loopback
from ensemble_dfd.limits import Deadline, Limits
from ensemble_dfd.verdict import (
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


class Guard:
    """ASGI middleware in front of everything: Host, Origin and token checks; 413 on size
    (Content-Length first, then by counting); 503 when busy, before the body is read; 408
    when an upload stalls; a JSON 500 for anything unexpected. Holds the request's slot
    until the app has answered, whatever path the request took."""

    def __init__(self, app: Any, policy: AccessPolicy, limit: int, slots: Admission,
                 read_timeout: float, upload_seconds: float):
        self.app, self.policy, self.limit, self.slots = app, policy, limit, slots
        self.read_timeout, self.upload_seconds = read_timeout, upload_seconds

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        refusal = self.policy.refuse(scope.get("path", ""), headers)
        if refusal:
            await json_response(*refusal)(scope, receive, send)
            return
        if scope.get("method") != "POST":
            await self._run(scope, receive, send)
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await self._too_large(scope, receive, send)
            return
        token = self.slots.acquire(blocking=False)
        if token is None:
            await json_response(503, "busy: all workers and queue slots are taken; "
                                     "retry")(scope, receive, send)
            return
        try:
            await self._run(scope, receive, send, counted=True)
        finally:
            self.slots.release(token)

    async def _run(self, scope: dict, receive: Any, send: Any, counted: bool = False
                   ) -> None:
        state = {"seen": 0, "cut": "", "started": False, "body_done": not counted}
        t0 = time.monotonic()

        async def guarded_receive() -> dict:
            if state["body_done"]:
                return await receive()
            budget = min(self.read_timeout, self.upload_seconds - (time.monotonic() - t0))
            try:
                message = await asyncio.wait_for(receive(), timeout=max(budget, 0.001))
            except TimeoutError:
                state["cut"] = "timeout"
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.limit:
                    state["cut"] = "size"
                    # stop the upload here: the app sees a client that went away
                    return {"type": "http.disconnect"}
                state["body_done"] = not message.get("more_body", False)
            return message

        async def guarded_send(message: dict) -> None:
            if state["cut"]:
                return  # the app's own answer to the cut body is replaced by ours
            state["started"] = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:  # noqa: BLE001 - last line: the client gets JSON, the log the trace
            if not state["cut"]:
                log.exception("unexpected error in %s", scope.get("path"))
                if not state["started"]:
                    await json_response(500, "internal error (see the server log)"
                                        )(scope, receive, send)
                return
        if state["cut"] == "size" and not state["started"]:
            await self._too_large(scope, receive, send)
        elif state["cut"] == "timeout" and not state["started"]:
            await json_response(408, f"upload too slow: no data for {self.read_timeout:g} s "
                                     f"or not complete within {self.upload_seconds:g} s",
                                {"connection": "close"})(scope, receive, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        mb = (self.limit - MULTIPART_SLACK) / MiB
        await json_response(413, f"upload too large (limit about {mb:.0f} MiB)",
                            {"connection": "close"})(scope, receive, send)


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


def _input_error_status(exc: InputError) -> int:
    if isinstance(exc, LimitError):
        return 504 if exc.reason in ("time", "cancelled") else 413
    return 422


async def _save_upload(file: UploadFile, svc: Service) -> tuple[Path, Path, str]:
    """(temp folder, file, kind) of an upload, judged by content; HTTPException otherwise."""
    head = await file.read(SNIFF_BYTES)
    kind = sniff(head)
    if kind is None:
        raise HTTPException(415, "unsupported file: not an image (JPEG, PNG, BMP, WebP, "
                                 "TIFF) or video (MP4/MOV, MKV/WebM, AVI, ...) by its content")
    try:
        tmp = Path(tempfile.mkdtemp(prefix="ensemble_dfd-upload-", dir=svc.tmp_root))
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
               upload_seconds: float = 120.0, warm: bool = True) -> FastAPI:
    """The FastAPI app for one run (``predictor`` lets tests share a loaded one).

    ``policy``: Host/Origin/token rules (default: loopback names only, no token);
    ``read_timeout``: seconds an upload may stall; ``upload_seconds``: for the whole body;
    ``warm``: warm the models up in the background at start (/api/health: 503 until done).
    """
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
        if warm:
            threading.Thread(target=svc.warm_up, name="warm-up", daemon=True).start()
        else:
            svc.warm.set()
        yield
        svc.pool.shutdown(wait=False)

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
            deadline = Deadline(predictor.limits.seconds)
            try:
                return await _run_watched(request, svc,
                                          (path, kind, _display_name(file.filename), crops),
                                          deadline)
            except InputError as exc:
                raise HTTPException(_input_error_status(exc), str(exc)) from None
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
                       slots=svc.slots, read_timeout=read_timeout,
                       upload_seconds=upload_seconds)
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
    p.add_argument("--timeout", type=float, default=d.seconds, help="seconds per request")
    p.add_argument("--keyframes", action="store_true",
                   help="videos: decode only keyframes (fast; see predict --help)")
    p.add_argument("--backend", choices=("onnx", "keras"), default="onnx",
                   help="ONNX artifacts where fresh, else Keras (see ensemble_dfd.artifacts)")
    p.add_argument("--read-timeout", type=float, default=10.0,
                   help="seconds an upload may send nothing before it is cut (408)")
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
    import uvicorn

    from ensemble_dfd.errors import UserError

    warning = bind_warning(args.host, args.token)
    if warning:
        print(warning, file=sys.stderr)
    try:
        limits = Limits(max_frames=args.max_frames,
                        max_pixels=int(args.max_megapixels * 1e6), seconds=args.timeout,
                        keyframes=args.keyframes)
        predictor = Predictor(args.run, args.learner, args.aggregate, args.faces,
                              limits=limits, backend=args.backend)
        app = create_app(args.run, args.learner, args.aggregate, args.faces,
                         args.max_upload_mb, args.workers, args.queue, limits=limits,
                         predictor=predictor,
                         policy=policy_for(args.host, args.allow_host, args.allow_origin,
                                           args.token),
                         read_timeout=args.read_timeout)
    except (UserError, ValueError) as exc:  # a bad limit value is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
