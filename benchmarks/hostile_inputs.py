"""Issue 26's done-means, measured: every hostile input answered within 20 s and within
300 MB of a normal face's peak, with default settings, CLI and server alike.

Builds the issue's hostile files with the tests' generators (tests/hostile_media.py,
tests/video_media.py): a keyframe-less long H.264 video, an MP4 declaring 60,000 frames, a
container lying about its frame size, a 25 MP progressive JPEG with 40,000 scans and one
with as many scans as the limit lets through, TIFFs with repeated size tags and with one
oversize tile, a PNG pixel bomb; plus a normal face image and a normal video (a frame of and
the video ../shared/data/wild/004.mp4 where present, else synthetic).

(a) CLI: ``python -m ensemble_dfd.predict FILE --run RUN`` in a fresh process per file: wall
time and the process tree's peak RSS (psutil, sampled every 50 ms, and the sum of each
process's VmHWM, which sees spikes between samples).
(b) server: ``python -m ensemble_dfd.serve --run RUN`` on 127.0.0.1 (a free port), each file
POSTed once, right after a normal face: the answer's time and the server tree's peak RSS
during the request minus its peak during that normal face's request (RSS an earlier
request left behind is not charged again; the tree's RSS after all files is printed).

Usage: python benchmarks/hostile_inputs.py --run RUN [--frames 60000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from hostile_media import (  # noqa: E402
    write_frame_bomb,
    write_png_bomb,
    write_scan_bomb,
    write_tiff_huge_tile,
    write_tiff_repeated_size,
)
from video_media import write_h264, write_lying_size  # noqa: E402

from ensemble_dfd.data.synthetic import draw_face  # noqa: E402

WILD = ROOT.parent / "shared" / "data" / "wild" / "004.mp4"
SECONDS, MEGABYTES = 20.0, 300.0
NORMAL = ("normal face", "normal video")


def normal_files(folder: Path) -> dict[str, Path]:
    """A face photo and a video: a frame of the shared wild video and the video itself,
    else a drawn face and a synthetic H.264 video of drawn faces."""
    face = folder / "face.jpg"
    if WILD.is_file():
        cap = cv2.VideoCapture(str(WILD))
        ok, frame = cap.read()
        cap.release()
        assert ok, WILD
        cv2.imwrite(str(face), frame)
        return {"normal face": face, "normal video": WILD}
    img = cv2.resize(draw_face(np.random.default_rng(0), 540), (960, 540))
    cv2.imwrite(str(face), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return {"normal face": face, "normal video": write_h264(folder / "v.mp4", 250,
                                                            size=(320, 240))}


def hostile_files(folder: Path, frames: int) -> dict[str, Path]:
    """The issue's hostile files, built here (a few seconds to a minute)."""
    progressive = write_scan_bomb(folder / "probe.jpg", scans=0, size=64)
    base = progressive.read_bytes().count(b"\xff\xda")  # libjpeg's own scans
    return {
        f"keyframe-less H.264, {frames} frames": write_h264(
            folder / "one_key.mp4", frames, keyint=1_000_000, bframes=0),
        "MP4 declaring 60,000 frames": write_frame_bomb(folder / "bomb.mp4", 60_000),
        # frames 120 and 240 are big: the demo run's frame step (120) reaches them
        "container lying: 64x48 declared, 16000x16000 frames": write_lying_size(
            folder / "lie.avi", real=(16000, 16000), n_frames=241, big_every=120),
        "progressive JPEG 25 MP, 40,000 scans": write_scan_bomb(
            folder / "scans40k.jpg", scans=40_000, size=5000),
        "progressive JPEG 25 MP, 24 scans (at the limit)": write_scan_bomb(
            folder / "scans24.jpg", scans=24 - base, size=5000),
        "TIFF repeated size tags (16000^2 / 16^2)": write_tiff_repeated_size(
            folder / "rep.tif"),
        "TIFF 16x16 with one 16000^2 tile": write_tiff_huge_tile(folder / "tile.tif"),
        "PNG pixel bomb 20000x20000": write_png_bomb(folder / "bomb.png"),
    }


def vm_hwm(pid: int) -> int:
    """A process's own peak RSS in bytes (VmHWM: exact, unlike sampling; 0 if gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(status.split("VmHWM:")[1].split()[0]) * 1024 if "VmHWM:" in status else 0


class TreeRss:
    """Samples the RSS of a process and its descendants every 50 ms in a thread: ``peak``
    since the last ``reset``; ``hwm``: the sum of each process's own lifetime peak (VmHWM,
    catches spikes between samples; an upper bound when they peak at different times)."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.hwms: dict[int, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def now(self) -> int:
        total = 0
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
            self.hwms[p.pid] = max(self.hwms.get(p.pid, 0), vm_hwm(p.pid))
        return total

    @property
    def hwm(self) -> int:
        return sum(self.hwms.values())

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.05)

    def reset(self) -> None:
        self.peak = self.now()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(1)


def summary(record: dict) -> str:
    """The answer's gist: verdict or error kind and message (shortened)."""
    if "detail" in record:
        return str(record["detail"])[:70]
    keys = ("verdict", "status", "error", "reason")
    return " ".join(f"{k}={str(record[k])[:60]}" for k in keys if record.get(k) not in
                    (None, "")) or json.dumps(record)[:70]


def run_cli(path: Path, run: Path, limit: float = 180.0) -> tuple[float, float, str, float]:
    """Seconds, peak tree RSS (MB, sampled), answer and summed VmHWM (MB) of one fresh
    predict process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ensemble_dfd.predict", str(path),
                             "--run", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    rss = TreeRss(proc.pid)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    rss.close()
    try:
        answer = f"exit {proc.returncode}: " + summary(json.loads(out)[0] if out.strip()
                                                       .startswith("[") else json.loads(out))
    except (json.JSONDecodeError, IndexError):
        answer = f"exit {proc.returncode}: " + (err.strip().splitlines() or [""])[-1][:70]
    return (seconds, rss.peak / 2**20, answer.replace(f"{path.parent}/", ""),
            rss.hwm / 2**20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, log: Path) -> tuple[subprocess.Popen, int]:
    """The service on a loopback port, once /api/health says ok (at most 300 s)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ensemble_dfd.serve", "--run", str(run),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}: see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("serve not healthy after 300 s")


def post(port: int, path: Path, rss: TreeRss) -> tuple[float, float, str]:
    """Seconds, peak tree RSS (MB) during the request, and answer of one POST."""
    rss.reset()
    t0 = time.perf_counter()
    with path.open("rb") as fh:
        try:
            r = httpx.post(f"http://127.0.0.1:{port}/api/predict",
                           files={"file": (path.name, fh)}, timeout=180)
            answer = f"{r.status_code}: " + summary(r.json())
        except httpx.HTTPError as e:
            answer = f"no answer: {type(e).__name__}"
    seconds = time.perf_counter() - t0
    time.sleep(0.1)  # one more sample after the answer
    return seconds, rss.peak / 2**20, answer


def serve_all(files: dict[str, Path], run: Path, folder: Path) -> dict[str, tuple]:
    """Every file POSTed once to one server, each right after a normal face (whose peak is
    its baseline: memory kept from earlier requests is not charged to the next one)."""
    proc, port = start_server(run, folder / "serve.log")
    rss = TreeRss(proc.pid)
    face = files["normal face"]
    try:
        post(port, face, rss)  # warm-up: first request's one-off costs
        start = rss.now() / 2**20
        answers = {}
        for name, path in files.items():
            face_peak = post(port, face, rss)[1]
            answers[name] = (*post(port, path, rss), face_peak)
        time.sleep(1)
        print(f"server tree RSS after the warm-up face: {start:.0f} MB; after every file: "
              f"{rss.now() / 2**20:.0f} MB")
        return answers
    finally:
        rss.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def table(cli: dict[str, tuple], srv: dict[str, tuple]) -> None:
    """The markdown table; a case passes when CLI and server answered within SECONDS and
    each memory figure is within MEGABYTES of its normal face's."""
    face, face_hwm = cli["normal face"][1], cli["normal face"][3]
    print("| case | CLI s | CLI peak MB (sampled / VmHWM) | CLI - face MB (sampled / VmHWM) "
          "| CLI answer | server s | server peak - face MB | server answer | verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in cli:
        (cs, cm, ca, ch), (ss, sm, sa, sf) = cli[name], srv[name]
        dc, dh, ds = cm - face, ch - face_hwm, sm - sf
        ok = max(cs, ss) <= SECONDS and max(dc, dh, ds) <= MEGABYTES
        verdict = "(baseline)" if name in NORMAL else ("PASS" if ok else "FAIL")
        print(f"| {name} | {cs:.1f} | {cm:.0f} / {ch:.0f} | {dc:+.0f} / {dh:+.0f} | {ca} "
              f"| {ss:.1f} | {ds:+.0f} | {sa} | {verdict} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a trained run folder")
    ap.add_argument("--frames", type=int, default=60_000,
                    help="frames of the keyframe-less H.264 video")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        files = {**normal_files(folder), **hostile_files(folder, args.frames)}
        print(f"files built in {time.perf_counter() - t0:.0f} s:")
        for name, path in files.items():
            print(f"  {name}: {path.name}, {path.stat().st_size / 1e6:.2f} MB")
        cli = {}
        for name, path in files.items():
            cli[name] = run_cli(path, args.run)
            print(f"  cli {name}: {cli[name][0]:.1f} s", flush=True)
        srv = serve_all(files, args.run, folder)
        print(f"limits: {SECONDS:g} s, {MEGABYTES:g} MB over the normal face's peak; "
              f"{os.cpu_count()} CPUs")
        table(cli, srv)


if __name__ == "__main__":
    main()
