"""``python -m ensemble_dfd.serve --run RUN_DIR``: the verdict as a local web service.

- ``POST /api/predict`` (multipart field ``file``: an image or a video): the same record as
  ``python -m ensemble_dfd.predict`` gives for that file; ``?crops=true`` adds the face crops
  as base64 JPEG. Errors are JSON ``{"detail": ...}``: 413 too large, 415 not an image or
  video (judged by content, never by name), 422 unreadable/truncated or no face, 503 busy.
- ``GET /api/health``: what is loaded. ``GET /openapi.json``: the schema. ``GET /``: a plain
  HTML page (no external CSS/JS) to upload a file and see verdict, votes and crops.

Safety: uploads go to a private temporary folder (mode 0700) under a server-chosen name and
are deleted after each request; the client's file name is only echoed back, never used as a
path; the only joblib/model files loaded are the configured run's. One bounded worker pool
runs the work; when it and its queue are full the service answers 503 at once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import shutil
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from ensemble_dfd.verdict import (
    SNIFF_BYTES,
    InputError,
    Predictor,
    no_face_message,
    sniff,
)

MiB = 1 << 20
CHUNK = MiB
MULTIPART_SLACK = 64 * 1024  # boundary and part headers around the file in the body
SUFFIX = {"image": ".img", "video": ".vid"}  # OpenCV/FFmpeg probe content, not names


class BodyLimit:
    """ASGI middleware: 413 for a POST body over ``limit`` bytes, by Content-Length before
    reading anything, and by counting while reading (chunked uploads have no length)."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._too_large(send)
            return
        seen = 0
        exceeded = False
        started = False

        async def counting_receive() -> dict:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    # stop the upload here: the app sees a client that went away
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if exceeded:
                return  # the app's own answer to the cut body is replaced by our 413
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._too_large(send)

    async def _too_large(self, send: Any) -> None:
        mb = self.limit / MiB
        resp = JSONResponse({"detail": f"upload too large (limit about {mb:.0f} MiB)"},
                            status_code=413)
        await resp({"type": "http"}, None, send)


class Service:
    """The loaded predictor, the worker pool and the temp-file policy of one app."""

    def __init__(self, predictor: Predictor, max_upload_bytes: int, workers: int,
                 queue: int, tmp_root: Path | None):
        self.predictor = predictor
        self.max_upload_bytes = max_upload_bytes
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predict")
        # requests running or waiting; beyond it the service answers 503 instead of queueing
        self.slots = threading.BoundedSemaphore(workers + queue)
        self.tmp_root = tmp_root

    def run_one(self, path: Path, kind: str, name: str, crops: bool) -> dict[str, Any]:
        """Extract and score one uploaded file (in a worker thread)."""
        faces = self.predictor.extract(path, kind, name=name, strict=True)
        if not faces.faces:
            raise HTTPException(422, no_face_message(faces))
        rec = self.predictor.score([faces])[0]
        if crops:
            for row, f in zip(rec["face_results"], faces.faces, strict=True):
                row["jpeg_base64"] = base64.b64encode(f.jpeg).decode("ascii")
        return rec


def _display_name(filename: str | None) -> str:
    # only echoed back to the client; never touches the file system
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in name if ch.isprintable())[:200] or "upload"


def create_app(run_dir: str | Path, learner: str | None = None, aggregate: str = "mean",
               faces: str = "auto", max_upload_mb: float = 50, workers: int = 1,
               queue: int = 4, tmp_root: str | Path | None = None,
               predictor: Predictor | None = None) -> FastAPI:
    """The FastAPI app for one run (``predictor`` lets tests share a loaded one)."""
    predictor = predictor or Predictor(run_dir, learner, aggregate, faces)
    limit = int(max_upload_mb * MiB)
    svc = Service(predictor, limit, max(1, workers), max(0, queue),
                  Path(tmp_root) if tmp_root else None)
    # /docs and /redoc would pull Swagger/ReDoc from a CDN: the service is meant offline

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        svc.pool.shutdown(wait=False)

    app = FastAPI(title="ensemble_dfd verdicts",
                  description="Deepfake verdicts from a trained ensemble_dfd run.",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.service = svc

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", **predictor.describe(),
                "max_upload_mb": limit / MiB, "workers": workers}

    @app.post("/api/predict")
    async def predict(file: UploadFile = File(..., description="an image or a video"),
                      crops: bool = Query(False, description="add face crops (base64 JPEG)"),
                      ) -> dict[str, Any]:
        if not svc.slots.acquire(blocking=False):
            raise HTTPException(503, "busy: all workers and queue slots are taken; retry")
        tmp = Path(tempfile.mkdtemp(prefix="ensemble_dfd-upload-", dir=svc.tmp_root))
        try:
            head = await file.read(SNIFF_BYTES)
            kind = sniff(head)
            if kind is None:
                raise HTTPException(415, "unsupported file: not an image (JPEG, PNG, BMP, "
                                         "WebP, TIFF) or video (MP4/MOV, MKV/WebM, AVI, ...) "
                                         "by its content")
            path = tmp / f"upload{SUFFIX[kind]}"  # our own name, never the client's
            size = len(head)
            with path.open("wb") as fh:
                fh.write(head)
                while chunk := await file.read(CHUNK):
                    size += len(chunk)
                    if size > svc.max_upload_bytes:
                        raise HTTPException(413, f"upload too large (limit "
                                                 f"{svc.max_upload_bytes / MiB:.0f} MiB)")
                    fh.write(chunk)
            name = _display_name(file.filename)
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(svc.pool, svc.run_one, path, kind, name,
                                                  crops)
            except InputError as exc:
                raise HTTPException(422, str(exc)) from None
        finally:
            await file.close()
            shutil.rmtree(tmp, ignore_errors=True)
            svc.slots.release()

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    # outermost: reject oversized bodies before the multipart parser spools them
    app.add_middleware(BodyLimit, limit=limit + MULTIPART_SLACK)
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
<button type="submit" id="submit">Check</button></form>
<p id="status"></p>
<div id="verdict"></div>
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
 let r, j;
 try { r=await fetch('/api/predict?crops=true',{method:'POST',body}); j=await r.json(); }
 catch(e){ statusEl.textContent='Request failed: '+e; return; }
 if(!r.ok){ statusEl.textContent=''; v.className='err';
   v.textContent='Error '+r.status+': '+(j.detail||'unknown'); v.dataset.verdict='error';
   return; }
 statusEl.textContent='';
 v.className=j.verdict; v.dataset.verdict=j.verdict;
 v.textContent=j.verdict.toUpperCase()+' (P(real) '+j.p_real.toFixed(3)+', '+j.aggregate+
   ' over '+j.faces+' face'+(j.faces==1?'':'s')+', '+j.learner+')';
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


def main(argv: Sequence[str] | None = None) -> int:
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
    args = p.parse_args(argv)
    import uvicorn

    from ensemble_dfd.errors import UserError

    try:
        app = create_app(args.run, args.learner, args.aggregate, args.faces,
                         args.max_upload_mb, args.workers, args.queue)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
