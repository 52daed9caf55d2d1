"""Helpers shared by several test modules (test modules never import each other)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ensemble_dfd.data.synthetic import draw_face

ROOT = Path(__file__).resolve().parents[1]


def dfb_reference():
    """benchmarks/dfb_reference.py: DeepfakeBench's recipe transcribed (not in the package)."""
    spec = importlib.util.spec_from_file_location("dfb_reference",
                                                  ROOT / "benchmarks" / "dfb_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def link_copy(src: Path, dst: Path) -> Path:
    """A copy of a run folder made of hard links: instant, and safe because the steps never
    change a file in place (they write a new file and rename it over the old one)."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def write_noise_jpegs(folder: Path, n: int, widen: bool = False) -> list[str]:
    """n seeded random-noise JPEGs of growing height (20 + i px; width 30, or 30 + i with
    `widen`), so that every file needs a real resize."""
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        path = folder / f"{i:02d}.jpg"
        shape = (20 + i, 30 + i if widen else 30, 3)
        cv2.imwrite(str(path), rng.integers(0, 256, shape, dtype=np.uint8))
        files.append(str(path))
    return files


def write_crop(path: Path, seed: int = 0, size: int = 48) -> Path:
    """A drawn face crop like the synthetic training data (RGB -> BGR for OpenCV)."""
    rgb = draw_face(np.random.default_rng(seed), size)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def write_face_video(path: Path, n_frames: int = 250, size: int = 64, seed: int = 0) -> Path:
    """A small mp4 whose frames are one drawn face with slight jitter (frames 0/120/240 kept
    with the default every=120)."""
    rng = np.random.default_rng(seed)
    face = cv2.cvtColor(draw_face(rng, size), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (size, size))
    assert writer.isOpened()
    for i in range(n_frames):
        writer.write(np.roll(face, i % 3, axis=1))
    writer.release()
    return path


CHROMIUM = os.environ.get("ENSEMBLE_DFD_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ENSEMBLE_DFD_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run")


def need_browser() -> None:
    """Skip the calling test, with the reason, where Chromium, its driver or Selenium is
    absent."""
    import pytest

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.skip(f"{', '.join(missing)} absent: install Debian's chromium and "
                    "chromium-driver packages to run the browser test")
    pytest.importorskip("selenium", reason="selenium is not installed (dev extra)")


@contextlib.contextmanager
def chrome_driver(profile: Path, *flags: str) -> Iterator:
    """Headless Debian Chromium driven by Selenium (driver path given, SE_OFFLINE: Selenium
    Manager never downloads anything); skips the test where it cannot run."""
    need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*CHROME_FLAGS, *flags, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
