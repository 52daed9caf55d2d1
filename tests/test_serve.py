"""The web service: same answers as `predict`, clear 4xx for bad uploads, no leftovers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers import write_crop, write_face_video
from synthetic_media import make_image, make_video, truncate

from ensemble_dfd import predict
from ensemble_dfd.serve import create_app


@pytest.fixture(scope="module")
def predictor(tiny_run):
    from ensemble_dfd.verdict import Predictor

    return Predictor(tiny_run)  # the defaults of `predict` (auto faces, mean, auto learner)


@pytest.fixture()
def uploads(tmp_path) -> Path:
    d = tmp_path / "uploads"
    d.mkdir()
    return d


@pytest.fixture()
def client(tiny_run, predictor, uploads):
    app = create_app(tiny_run, predictor=predictor, tmp_root=uploads, max_upload_mb=1)
    with TestClient(app) as c:
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
    with TestClient(app) as c:
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

    def spy(path, kind, name, crops):
        seen.append(path)
        assert path.exists()
        return real(path, kind, name, crops)

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
    with TestClient(app) as c:
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
