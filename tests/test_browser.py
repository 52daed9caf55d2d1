"""Drive the upload page in headless Chromium (Debian's chromium + chromium-driver, Selenium).

The server runs with uvicorn in a thread on 127.0.0.1 and a free port; Selenium gets the
driver path explicitly and SE_OFFLINE=true, so Selenium Manager never downloads anything.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from helpers import chrome_driver, need_browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """Base URL of the service for the tiny run, running in a background thread."""
    need_browser()
    import uvicorn

    from ensemble_dfd.serve import create_app

    uploads = tmp_path_factory.mktemp("browser_uploads")
    app = create_app(tiny_run, tmp_root=uploads)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", uploads
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture()
def browser(tmp_path):
    with chrome_driver(tmp_path / "profile") as driver:
        yield driver


def _upload_file(tmp_path) -> Path:
    """A wild video when ../shared/data is present, else a synthetic face crop."""
    from conftest import SHARED_DATA

    wild = SHARED_DATA / "wild" / "519.mp4"
    if wild.is_file():
        return wild
    from helpers import write_crop

    return write_crop(tmp_path / "face.jpg", 7)


def test_page_upload_shows_verdict(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, uploads = server
    media = _upload_file(tmp_path)
    browser.get(url + "/")
    assert "Real or fake" in browser.title or "real or fake" in browser.title.lower()
    browser.find_element(By.ID, "file").send_keys(str(media.resolve()))
    browser.find_element(By.ID, "submit").click()
    verdict = WebDriverWait(browser, 180).until(
        lambda d: d.find_element(By.ID, "verdict").get_attribute("data-verdict"))
    text = browser.find_element(By.ID, "verdict").text
    assert verdict in ("real", "fake"), text
    assert verdict.upper() in text
    votes = browser.find_elements(By.CSS_SELECTOR, "#details tr")
    assert len(votes) == 1 + 2  # header + M2, M6
    crops = browser.find_elements(By.CSS_SELECTOR, "#crops img")
    assert crops and all(c.get_attribute("src").startswith("data:image/jpeg;base64,")
                         for c in crops)
    assert list(uploads.iterdir()) == []
