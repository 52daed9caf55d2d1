"""The web service: same answers as `predict`, clear 4xx for bad uploads, no leftovers."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers import write_crop, write_face_video
from synthetic_media import make_image, make_video, truncate

from ensemble_dfd import predict
from ensemble_dfd.inference.limits import Limits
from ensemble_dfd.serve import MiB, create_app


@pytest.fixture(scope="module")
def predictor(tiny_run):
    from ensemble_dfd.inference.verdict import Predictor

    return Predictor(tiny_run)  # the defaults of `predict` (auto faces, mean, auto learner)


@pytest.fixture()
def uploads(tmp_path) -> Path:
    d = tmp_path / "uploads"
    d.mkdir()
    return d


@pytest.fixture()
def client(tiny_run, predictor, uploads):
    app = create_app(tiny_run, predictor=predictor, tmp_root=uploads, max_upload_mb=1)
    with local_client(app) as c:
        yield c


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("upload_media")
    return {
        "crop": write_crop(d / "crop.jpg", 5),
        "video": write_face_video(d / "face.mp4", n_frames=130),
        "noface": make_image(d / "landscape.jpg", size=(400, 300)),
        "truncated": truncate(make_video(d / "cut.mp4", n_frames=60), 0.4),
        "text_as_jpg": _write(d / "notes.jpg", b"meeting notes\n" * 20),
        "pdf": _write(d / "doc.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n" + b"x" * 200),
        "bad_jpeg": _write(d / "broken.jpg", b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50),
        "big": make_image(d / "big.png", size=(1200, 900), seed=1),
    }


@contextmanager
def local_client(app) -> Iterator[TestClient]:
    """A test client that talks to the app as a local browser would (Host 127.0.0.1),
    started and warmed up (the first request pays no tracing; /api/health says ok)."""
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert app.state.service.warm.wait(300), "warm-up did not finish"
        yield client


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def post(client: TestClient, path: Path, name: str | None = None, crops: bool = False):
    with path.open("rb") as fh:
        return client.post("/api/predict", params={"crops": crops},
                           files={"file": (name or path.name, fh, "application/octet-stream")})


def assert_alive(client: TestClient, uploads: Path) -> None:
    assert client.get("/api/health").json()["status"] == "ok"
    assert list(uploads.iterdir()) == [], "temporary upload files left behind"


@pytest.mark.parametrize("key", ["crop", "video"])
def test_api_agrees_with_predict_cli(client, tiny_run, files, uploads, capsys, key):
    assert predict.main([str(files[key]), "--run", str(tiny_run)]) == 0
    cli = json.loads(capsys.readouterr().out)
    r = post(client, files[key])
    assert r.status_code == 200, r.text
    api = r.json()
    for field in ("faces", "p_real", "verdict", "models", "learner", "aggregate", "kind"):
        assert api[field] == cli[field], field
    assert api["input"] == files[key].name  # the client's name, echoed only
    assert [f["p_real"] for f in api["face_results"]] == [f["p_real"]
                                                          for f in cli["face_results"]]
    assert_alive(client, uploads)


def test_api_returns_crops_as_base64_jpeg(client, files, uploads):
    r = post(client, files["video"], crops=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["faces"] == 2  # frames 0 and 120 of 130, each used whole (small, no face)
    for f in body["face_results"]:
        assert base64.b64decode(f["jpeg_base64"])[:3] == b"\xff\xd8\xff"
    assert_alive(client, uploads)


@pytest.mark.parametrize("key, status, words", [
    ("text_as_jpg", 415, "not an image"),
    ("pdf", 415, "not an image"),
    ("truncated", 422, "cannot open as a video"),
    ("noface", 422, "no face found"),
    ("bad_jpeg", 422, "not a decodable image"),
    ("big", 413, "too large"),
])
def test_bad_uploads_get_clear_4xx_and_server_keeps_serving(client, files, uploads, key,
                                                            status, words):
    r = post(client, files[key])
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert_alive(client, uploads)
    ok = post(client, files["crop"])
    assert ok.status_code == 200 and ok.json()["verdict"] in ("real", "fake")
    assert_alive(client, uploads)


def test_too_large_checked_while_reading(tiny_run, predictor, files, uploads):
    """A file over the limit but within the multipart slack is caught by the handler, and a
    chunked body without Content-Length by the counting middleware."""
    app = create_app(tiny_run, predictor=predictor, tmp_root=uploads, max_upload_mb=0.01)
    with local_client(app) as c:
        r = c.post("/api/predict", files={"file": ("x.jpg", b"\xff\xd8\xff" + b"0" * 20000)})
        assert r.status_code == 413

        def chunks():
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n"
            for _ in range(200):
                yield b"\xff" * 4096

        r = c.post("/api/predict", content=chunks(),
                   headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413
        assert c.get("/api/health").status_code == 200
    assert list(uploads.iterdir()) == []


def test_client_file_name_never_used_on_disk(client, files, uploads, monkeypatch):
    seen: list[Path] = []
    svc = client.app.state.service
    real = svc.run_one

    def spy(path, kind, name, crops, *rest):
        seen.append(path)
        assert path.exists()
        return real(path, kind, name, crops, *rest)

    monkeypatch.setattr(svc, "run_one", spy)
    r = post(client, files["crop"], name="../../../etc/evil name.jpg")
    assert r.status_code == 200
    assert r.json()["input"] == "evil name.jpg"
    (path,) = seen
    assert path.parent.parent == uploads and path.name == "upload.img"
    assert not path.exists() and not path.parent.exists()  # removed after the request
    assert_alive(client, uploads)


def test_busy_pool_answers_503(tiny_run, predictor, files, uploads):
    app = create_app(tiny_run, predictor=predictor, tmp_root=uploads, workers=1, queue=0)
    with local_client(app) as c:
        slots = app.state.service.slots
        assert slots.acquire(blocking=False)  # a request in flight holds the only slot
        try:
            r = post(c, files["crop"])
            assert r.status_code == 503 and "busy" in r.json()["detail"]
        finally:
            slots.release()
        assert post(c, files["crop"]).status_code == 200
    assert list(uploads.iterdir()) == []


def test_health_openapi_and_page(client, tiny_run):
    h = client.get("/api/health").json()
    recommended = json.loads((tiny_run / "stack" / "stack.json").read_text())["recommended"]
    assert h["models"] == ["M2", "M6"] and h["learner"] == recommended
    schema = client.get("/openapi.json").json()
    assert "/api/predict" in schema["paths"] and "/api/health" in schema["paths"]
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'type="file"' in html and "/api/predict" in html
    # offline: no external scripts, styles or fonts
    assert "http://" not in html and "https://" not in html and "<link" not in html


# ---------------------------------------------------------------- hostile input


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    from hostile_media import write_frame_bomb, write_png_bomb

    d = tmp_path_factory.mktemp("hostile_uploads")
    return {"png_bomb": write_png_bomb(d / "bomb.png"),
            "frame_bomb": write_frame_bomb(d / "bomb.mp4")}


def test_header_bomb_png_refused_from_header(client, files, hostile, uploads):
    from hostile_media import peak_rss_mb

    before = peak_rss_mb()
    t0 = time.perf_counter()
    r = post(client, hostile["png_bomb"])
    assert r.status_code == 413 and "20000x20000 px" in r.json()["detail"], r.text
    assert time.perf_counter() - t0 < 5.0
    assert peak_rss_mb() - before < 300
    assert_alive(client, uploads)
    assert post(client, files["crop"]).status_code == 200


def test_frame_count_bomb_answered_within_limit(client, files, hostile, uploads):
    from hostile_media import peak_rss_mb

    assert hostile["frame_bomb"].stat().st_size < MiB  # under this app's upload limit
    before = peak_rss_mb()
    t0 = time.perf_counter()
    r = post(client, hostile["frame_bomb"])
    assert time.perf_counter() - t0 < 20.0
    assert r.status_code == 422 and "32 kept frame(s)" in r.json()["detail"], r.text
    assert peak_rss_mb() - before < 300
    assert_alive(client, uploads)
    assert post(client, files["crop"]).status_code == 200


def test_request_time_limit_answers_504(tiny_run, predictor, files, uploads):
    app = create_app(tiny_run, predictor=predictor, tmp_root=uploads,
                     limits=Limits(seconds=1e-6))
    try:
        with local_client(app) as c:
            r = post(c, files["video"])
            assert r.status_code == 504 and "took longer" in r.json()["detail"]
            assert c.get("/api/health").json()["in_flight"] == 0
    finally:
        predictor.limits = Limits()  # the shared predictor: back to the defaults


def test_temp_dir_failure_releases_the_slot(client, files, uploads, monkeypatch):
    from ensemble_dfd import serve

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(serve.tempfile, "mkdtemp", no_space)
    capacity = client.app.state.service.slots.capacity
    for _ in range(capacity + 3):  # more failures than there are slots
        r = post(client, files["crop"])
        assert r.status_code == 503 and "temporary storage" in r.json()["detail"]
    monkeypatch.undo()
    assert client.get("/api/health").json()["in_flight"] == 0
    assert post(client, files["crop"]).status_code == 200
    assert_alive(client, uploads)


def test_unexpected_error_is_json_500_and_releases_the_slot(client, files, uploads,
                                                            monkeypatch):
    svc = client.app.state.service

    def boom(*args):
        raise RuntimeError("cv2 internal /src/secret/path.cpp:42")

    monkeypatch.setattr(svc, "run_one", boom)
    r = post(client, files["crop"])
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error (see the server log)"}
    monkeypatch.undo()
    assert post(client, files["crop"]).status_code == 200
    assert_alive(client, uploads)


def test_health_not_ok_when_a_slot_is_stuck(client):
    slots = client.app.state.service.slots
    token = slots.acquire()
    try:
        slots._started[token] -= 10_000  # a request that has held its slot for hours
        r = client.get("/api/health")
        assert r.status_code == 503 and r.json()["status"] == "stuck"
    finally:
        slots.release(token)
    assert client.get("/api/health").json()["status"] == "ok"


def test_foreign_origin_and_host_refused(client, files):
    with files["crop"].open("rb") as fh:
        r = client.post("/api/predict", files={"file": ("c.jpg", fh)},
                        headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "origin" in r.json()["detail"]
    with files["crop"].open("rb") as fh:
        r = client.post("/api/predict", files={"file": ("c.jpg", fh)},
                        headers={"origin": "http://127.0.0.1:8000"})  # its own page
    assert r.status_code == 200
    r = client.get("/api/health", headers={"host": "rebound.example:8000"})
    assert r.status_code == 403 and "host" in r.json()["detail"]


def test_bearer_token(tiny_run, predictor, files, uploads):
    from ensemble_dfd.inference.access import AccessPolicy

    app = create_app(tiny_run, predictor=predictor, tmp_root=uploads,
                     policy=AccessPolicy(token="s3cret"))
    with local_client(app) as c:
        assert post(c, files["crop"]).status_code == 401
        assert c.get("/api/health").status_code == 401
        with files["crop"].open("rb") as fh:
            r = c.post("/api/predict", files={"file": ("c.jpg", fh)},
                       headers={"authorization": "Bearer s3cret"})
        assert r.status_code == 200
        assert c.get("/").status_code == 200  # the page (it asks for the token)


def test_serve_warns_when_exposed_without_token(tiny_run, capsys, monkeypatch):
    from ensemble_dfd import serve

    monkeypatch.setattr(serve, "serve_app", lambda *a, **k: None)
    monkeypatch.setattr(serve, "create_app", lambda *a, **k: None)
    monkeypatch.setattr(serve, "Predictor", lambda *a, **k: None)
    assert serve.main(["--run", str(tiny_run), "--host", "0.0.0.0"]) == 0
    assert "without a token" in capsys.readouterr().err
    assert serve.main(["--run", str(tiny_run), "--host", "127.0.0.1"]) == 0
    assert "without a token" not in capsys.readouterr().err


def test_whole_image_flag_in_json_and_page(client, tmp_path):
    import cv2
    import numpy as np

    from ensemble_dfd.data.synthetic import draw_face

    crop = tmp_path / "tight.png"  # seed 3: found only once a border is added back
    cv2.imwrite(str(crop), cv2.cvtColor(draw_face(np.random.default_rng(3), 48),
                                        cv2.COLOR_RGB2BGR))
    r = post(client, crop)
    assert r.status_code == 200 and r.json()["whole_image"] is True
    assert "j.whole_image" in client.get("/").text


# ---------------------------------------------------------------- a real server


@pytest.fixture()
def live_server(tiny_run, predictor, uploads):
    """The app under uvicorn on a free loopback port, in a thread (real sockets)."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(tiny_run, predictor=predictor, tmp_root=uploads, workers=1, queue=0,
                     read_timeout=1.0)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started and app.state.service.warm.wait(300)
    yield app, port
    server.should_exit = True
    thread.join(10)


def _raw_request(port: int, head: bytes, body: bytes = b"", wait: float = 10.0) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(head + body)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except TimeoutError:
            pass
    return data


def _multipart_head(port: int, length: int) -> bytes:
    return (f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {length}\r\n"
            "Connection: close\r\n\r\n").encode()


def test_slow_upload_cut_and_busy_refused_before_the_body(live_server, files, uploads):
    import httpx

    app, port = live_server
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    # a half-sent upload: the head and a few bytes, then silence
    t0 = time.perf_counter()
    answer = _raw_request(port, _multipart_head(port, 500_000), part + b"\xff\xd8\xff")
    assert b" 408 " in answer.split(b"\r\n", 1)[0], answer[:200]
    assert b'"detail"' in answer and time.perf_counter() - t0 < 8.0
    # busy: the only slot is taken; a 40 MiB upload is refused before a body byte is sent
    slots = app.state.service.slots
    token = slots.acquire()
    try:
        t0 = time.perf_counter()
        answer = _raw_request(port, _multipart_head(port, 40 * MiB))
        assert b" 503 " in answer.split(b"\r\n", 1)[0] and b"busy" in answer
        assert time.perf_counter() - t0 < 5.0
    finally:
        slots.release(token)
    # and it still serves
    with files["crop"].open("rb") as fh:
        r = httpx.post(f"http://127.0.0.1:{port}/api/predict",
                       files={"file": ("c.jpg", fh)}, timeout=120)
    assert r.status_code == 200 and r.json()["verdict"] in ("real", "fake")
    assert httpx.get(f"http://127.0.0.1:{port}/api/health").json()["status"] == "ok"
    assert list(uploads.iterdir()) == []


def test_work_stops_when_the_client_goes_away(live_server, files, monkeypatch):
    import socket

    from ensemble_dfd.inference.limits import LimitExceeded
    from ensemble_dfd.inference.verdict import LimitError

    app, port = live_server
    svc = app.state.service
    stopped = []

    def endless(path, kind, name, crops, deadline):
        try:
            while True:  # a long video: the deadline is checked between frames
                deadline.check()
                time.sleep(0.02)
        except LimitExceeded as exc:
            stopped.append(exc.reason)
            raise LimitError(str(exc), exc.reason) from None

    monkeypatch.setattr(svc, "run_one", endless)
    data = files["crop"].read_bytes()
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="c.jpg"\r\n\r\n'
            + data + b"\r\n--b--\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(_multipart_head(port, len(body)) + body)
        time.sleep(1.0)  # the work has started; now the client leaves
    t0 = time.monotonic()
    while (stopped == [] or svc.slots.state()[0]) and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert stopped == ["cancelled"] and svc.slots.state()[0] == 0
