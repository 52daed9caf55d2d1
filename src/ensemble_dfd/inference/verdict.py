"""Verdicts on new media: the core shared by ``predict`` (CLI) and ``serve`` (web service).

Pipeline: input file -> kept frames (videos) -> faces, found with the run's own ``[prepare]``
settings (frame step and rule, width cap, detector, upsample, margin, one-face rule, crop
recipe: the box, or DeepfakeBench's aligned crop when the run was prepared with
``--align dfb``) -> each face through every base model -> the chosen meta-learner -> a
verdict per face and an aggregate per input.

Faces are re-encoded as JPEG at the run's ``prepare.jpeg_quality`` before the models see them,
because the training crops were stored that way (``prepare`` writes JPEG, training reads it).

Face modes (``--faces``):
- ``detect``: always run the detector (images and video frames);
- ``as-is``: the whole image (or each kept video frame) is the face crop, no detection;
- ``auto`` (default): detect; an *image* in which no face is kept is taken whole as a face
  crop only when it is plausibly one (``looks_like_face_crop``): sides of 32-1024 px (the
  dataset's crops are 70-830 px, DFDC's 224), at most 2:1, and the detector finds a face in it
  once it is given back a border (10% a side for dlib's detectors, 50% for BlazeFace) and
  enlarged to at least 100 px (detectors miss tight crops: they need some context around
  the face; on 60 of dfd-mini's test crops HOG finds 54 as they are and 57 with 10%,
  BlazeFace 31, 49 with 10%, 59 with 50%). The record says ``whole_image: true``.
  Noise, a 1x1 pixel or a landscape give ``no_face``. Video frames are never taken whole.
  To reproduce the training input of a dataset crop exactly, use ``as-is``.

Every input is read within ``limits.Limits`` (frames per video, pixels per image checked in
the header before decoding, seconds per input); an image is decoded in a worker process with
a memory limit, killed at the input's deadline (``data/decode_worker.py``).

Pure parts (file sniffing, aggregation, choosing the learner) are plain functions; model
loading and inference live in ``Predictor``. TensorFlow is imported only when a Predictor
loads its models.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ensemble_dfd.config import PrepareConfig
from ensemble_dfd.data import faces as facelib
from ensemble_dfd.data import frames as framelib
from ensemble_dfd.data.decode_worker import decode_rgb
from ensemble_dfd.data.image_checks import ImageStructureError, check_image_structure
from ensemble_dfd.data.images import ImageReadError, resize
from ensemble_dfd.data.jpeg import jpeg_roundtrip
from ensemble_dfd.data.keyframes import iter_keyframes
from ensemble_dfd.ensemble.base import prob_to_logit
from ensemble_dfd.ensemble.saved import load_meta_learner
from ensemble_dfd.errors import UsageError, UserError
from ensemble_dfd.inference.limits import (
    Deadline,
    LimitExceeded,
    Limits,
    check_pixels,
    image_file_dimensions,
)
from ensemble_dfd.rundir import DEFAULT_LEARNER, Run, RunError, StackInfo
from ensemble_dfd.stacking.logits import StoreError
from ensemble_dfd.stacking.metrics import sigmoid

log = logging.getLogger(__name__)
AGGREGATES = ("mean", "fake_fraction", "max_fake")
FACE_MODES = ("auto", "detect", "as-is")
CROP_MIN_SIDE, CROP_MAX_SIDE, CROP_MAX_ASPECT = 32, 1024, 2.0
CROP_PAD = {"hog": 0.10, "cnn": 0.10, "blazeface": 0.50}  # border a side, by detector
CROP_DETECT_MIN_SIDE = 100


class InputError(UserError, ValueError):
    """An input that is not a readable image or video (the message names the file)."""


class LimitError(InputError):
    """An input that would cost more than the configured limits; ``reason`` is 'size'
    (pixels), 'time' or 'cancelled'."""

    def __init__(self, message: str, reason: str = "size"):
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------- file types by content


def sniff(head: bytes) -> str | None:
    """'image', 'video' or None from a file's first bytes (magic numbers, never the name).

    Images: the formats OpenCV decodes (JPEG, PNG, BMP, WebP, TIFF). Videos: ISO-BMFF
    (MP4/MOV/M4V/3GP), Matroska/WebM, AVI, MPEG-PS/TS, FLV, ASF/WMV.
    """
    if head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image"
    if head.startswith(b"BM") and len(head) >= 14:
        return "image"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "video"
    if head.startswith((b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3",
                        b"FLV\x01", b"\x30\x26\xb2\x75\x8e\x66\xcf\x11")):
        return "video"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:  # MPEG transport stream
        return "video"
    return None


SNIFF_BYTES = 512


def sniff_file(path: str | Path) -> str | None:
    with Path(path).open("rb") as fh:
        return sniff(fh.read(SNIFF_BYTES))


def expand_inputs(paths: Sequence[str | Path]) -> tuple[list[tuple[Path, str]], list[str]]:
    """Files to score as (path, kind), and notes on skipped files inside folders.

    A named file that is missing or neither image nor video raises InputError; files in a
    folder that are not media (labels.csv, notes) are skipped with a note.
    """
    out: list[tuple[Path, str]] = []
    notes: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = 0
            for f in sorted(x for x in p.rglob("*") if x.is_file()
                            and not x.name.startswith(".")):
                kind = sniff_file(f)
                if kind is None:
                    notes.append(f"{f}: not an image or video (skipped)")
                    continue
                out.append((f, kind))
                found += 1
            if not found:
                raise InputError(f"{p}: folder holds no image or video")
        elif p.is_file():
            kind = sniff_file(p)
            if kind is None:
                raise InputError(f"{p}: not an image or video (by its content)")
            out.append((p, kind))
        elif p.exists():  # stat only: opening a named pipe would block
            raise InputError(f"{p}: {special_file_kind(p)}, not a regular file (only image "
                             "and video files are read)")
        else:
            raise InputError(f"{p}: no such file or folder")
    return out, notes


def special_file_kind(p: Path) -> str:
    if p.is_fifo():
        return "a named pipe"
    if p.is_socket():
        return "a socket"
    if p.is_char_device() or p.is_block_device():
        return "a device"
    return "a special file"


# ---------------------------------------------------------------- faces


@dataclass
class Face:
    """One face crop ready for the models, and where it came from."""

    frame: int  # frame index in a video; 0 for an image
    box: tuple[int, int, int, int] | None  # (top, right, bottom, left); None = whole image
    rgb: np.ndarray  # uint8 crop as the models see it (before the per-model resize)
    jpeg: bytes  # the same crop as JPEG (what prepare stored; shown by the web page)


@dataclass
class InputFaces:
    """The faces of one input plus what reading it gave."""

    input: str
    kind: str  # "image" or "video"
    faces: list[Face] = field(default_factory=list)
    frames_kept: int = 0
    dropped_no_face: int = 0
    dropped_multi_face: int = 0
    whole_image: bool = False  # auto mode used the image whole
    decoder: str = ""  # an image's decode: "worker" (stoppable) or "in-process"
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def encode_crop(rgb: np.ndarray, quality: int) -> tuple[np.ndarray, bytes]:
    """JPEG round trip at prepare's quality: training crops went through it too."""
    try:
        return jpeg_roundtrip(rgb, quality)
    except ValueError as exc:
        raise InputError(f"could not encode a face crop as JPEG: {exc}") from None


def _add_detected(res: InputFaces, index: int, rgb: np.ndarray, p: PrepareConfig) -> None:
    dropped: dict[str, int] = {}
    for box, face in facelib.iter_kept_faces(rgb, p.upsample, p.detector, p.one_face_only,
                                             p.margin, dropped, detect_size=p.detect_size,
                                             align=p.align):
        crop, data = encode_crop(face, p.jpeg_quality)
        res.faces.append(Face(index, box, crop, data))
    for why, n in dropped.items():
        setattr(res, f"dropped_{why}", getattr(res, f"dropped_{why}") + n)


def _add_whole(res: InputFaces, index: int, rgb: np.ndarray, quality: int,
               reencode: bool) -> None:
    back, data = encode_crop(rgb, quality)
    res.faces.append(Face(index, None, back if reencode else rgb, data))


def looks_like_face_crop(rgb: np.ndarray, p: PrepareConfig) -> bool:
    """Whether an image with no detected face is plausibly a tight face crop (see the module
    docstring): crop-like shape, and a face found once a border is added back."""
    h, w = rgb.shape[:2]
    if min(h, w) < CROP_MIN_SIDE or max(h, w) > CROP_MAX_SIDE:
        return False
    if max(h, w) / min(h, w) > CROP_MAX_ASPECT:
        return False
    img = with_border(rgb, CROP_PAD[p.detector])
    return bool(facelib.face_locations(img, max(1, p.upsample), p.detector))


def with_border(rgb: np.ndarray, pad: float) -> np.ndarray:
    """A crop given back a border of ``pad`` x its size a side (edge replicated), enlarged
    to at least CROP_DETECT_MIN_SIDE px: what the whole-image check searches."""
    h, w = rgb.shape[:2]
    py, px = int(round(h * pad)), int(round(w * pad))
    img = cv2.copyMakeBorder(rgb, py, py, px, px, cv2.BORDER_REPLICATE)
    short = min(img.shape[:2])
    if short < CROP_DETECT_MIN_SIDE:
        f = CROP_DETECT_MIN_SIDE / short
        img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
    return img


def _read_image(path: Path, res: InputFaces, name: str | None, limits: Limits,
                deadline: Deadline) -> np.ndarray:
    """Decode an image after checking its declared size and structure against the limits,
    in a worker process stopped at the deadline or past its memory limit
    (``data/decode_worker.py``); in-process where no worker can run (a warning says so)."""
    try:
        dims = image_file_dimensions(path)
    except OSError as exc:
        raise InputError(f"{res.input}: cannot read file ({exc.strerror})") from None
    if dims is None:
        raise InputError(f"{res.input}: not a decodable image (its header gives no size)")
    try:
        check_pixels(*dims, limits.max_pixels)
        check_image_structure(path, limits.max_pixels)
    except LimitExceeded as exc:
        raise LimitError(f"{res.input}: image {exc}") from None
    except ImageStructureError as exc:
        raise InputError(f"{res.input}: not a decodable image ({exc})") from None
    try:
        rgb, res.decoder = decode_rgb(path, deadline, limits.max_pixels)
    except LimitExceeded as exc:
        raise LimitError(f"{res.input}: image {exc}", exc.reason) from None
    except ImageReadError as exc:
        raise InputError(str(exc) if name is None else
                         str(exc).replace(str(path), name)) from None
    h, w = rgb.shape[:2]
    if (w, h) not in (tuple(dims), tuple(dims)[::-1]):  # EXIF may turn it: else a lie
        raise InputError(f"{res.input}: decodes to {w}x{h} px but its header declares "
                         f"{dims[0]}x{dims[1]} px")
    if res.decoder == "in-process":
        res.warnings.append("the image was decoded in-process: no decoder process could "
                            "run here, so the decode could not be stopped at the deadline")
    return rgb


def _extract_image(path: Path, res: InputFaces, p: PrepareConfig, mode: str,
                   name: str | None, limits: Limits, deadline: Deadline) -> None:
    deadline.check()
    rgb = _read_image(path, res, name, limits, deadline)
    deadline.check()
    res.frames_kept = 1
    if mode == "as-is":
        # a crop given as-is is used as the dataset's crops were: the file decoded
        _add_whole(res, 0, rgb, p.jpeg_quality, reencode=False)
        return
    _add_detected(res, 0, framelib.cap_width(rgb, p.max_width), p)
    if not res.faces and mode == "auto" and looks_like_face_crop(rgb, p):
        res.whole_image = True
        _add_whole(res, 0, rgb, p.jpeg_quality, reencode=False)


def _extract_video(path: Path, res: InputFaces, p: PrepareConfig, mode: str,
                   name: str | None, limits: Limits, deadline: Deadline) -> None:
    report = framelib.FrameReport(str(path))
    every, every_seconds = p.every, p.every_seconds
    if p.frames_per_video:  # the run's faces were N per video: the same, within the limits
        every, every_seconds = 1, 0.0
        limits = replace(limits, max_frames=min(limits.max_frames, p.frames_per_video))
    if limits.keyframes:
        frames = iter_keyframes(path, p.max_width, report, limits, deadline)
    else:
        frames = framelib.iter_frames_bounded(path, every, every_seconds, p.max_width, report,
                                              limits, deadline, p.frame_rule)
    try:
        for index, bgr in frames:  # closed in `finally`: the file goes when the request ends
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            res.frames_kept += 1
            if mode == "as-is":
                _add_whole(res, index, rgb, p.jpeg_quality, reencode=True)
            else:
                _add_detected(res, index, rgb, p)
            deadline.check()
    except framelib.VideoReadError as exc:
        msg = str(exc) if name is None else str(exc).replace(str(path), name)
        raise InputError(msg) from None
    finally:
        frames.close()
    plan = report.plan
    if plan is not None and not plan.exact:
        res.warnings.append(f"reaching the run's frames would decode {plan.needed} frames, "
                            f"over the budget of {limits.max_decoded_frames}: frames nearer "
                            "the keyframes were scored instead")
    if report.error:
        raise InputError(f"{res.input}: {report.error}")


def extract_faces(path: str | Path, kind: str, p: PrepareConfig, mode: str = "auto",
                  name: str | None = None, limits: Limits | None = None,
                  deadline: Deadline | None = None) -> InputFaces:
    """Faces of one image or video with the run's prepare settings, within ``limits``.

    Raises InputError (naming the file) for unreadable input, including a video that ends
    before its declared length (``predict`` and ``serve`` both refuse those), and LimitError
    for input over the limits (pixels, seconds; checked before the cost is paid).
    """
    if mode not in FACE_MODES:
        raise UsageError(f"faces mode must be one of {FACE_MODES}, got {mode!r}")
    path = Path(path)
    limits = limits or Limits()
    deadline = deadline or Deadline(limits.seconds)
    res = InputFaces(name or str(path), kind)
    t0 = time.perf_counter()
    try:
        if kind == "image":
            _extract_image(path, res, p, mode, name, limits, deadline)
        elif kind == "video":
            _extract_video(path, res, p, mode, name, limits, deadline)
        else:
            raise InputError(f"{res.input}: not an image or video")
    except LimitExceeded as exc:
        raise LimitError(f"{res.input}: {exc}", exc.reason) from None
    except (cv2.error, RuntimeError) as exc:  # dlib raises RuntimeError on odd input
        # the library's own text (source paths, assertion internals) is not for the user
        log.info("%s: %s: %s", res.input, type(exc).__name__, exc)
        raise InputError(f"{res.input}: could not be decoded or searched for faces "
                         "(corrupt or unusual file)") from None
    res.seconds = time.perf_counter() - t0
    return res


def no_face_message(res: InputFaces) -> str:
    what = ("the image" if res.kind == "image" else f"{res.frames_kept} kept frame(s)")
    extra = (f" ({res.dropped_multi_face} frame(s) with several faces dropped: the run keeps "
             "only frames with exactly one face)" if res.dropped_multi_face else "")
    return f"{res.input}: no face found in {what}{extra}"


# ---------------------------------------------------------------- pure scoring logic


def aggregate(p_real: np.ndarray, threshold_prob: float, how: str = "mean"
              ) -> tuple[float, str]:
    """One input's score and verdict from its faces' P(real).

    mean: mean P(real), real iff > threshold; fake_fraction: score = share of faces called
    real, real iff > 0.5 (a tie is fake); max_fake: the most fake-looking face decides
    (score = min P(real)). Ties go to 'fake' everywhere, like the per-face rule (real iff >).
    """
    p = np.asarray(p_real, dtype=np.float64)
    if p.size == 0:
        raise ValueError("no faces to aggregate")
    if how == "mean":
        score = float(p.mean())
        return score, "real" if score > threshold_prob else "fake"
    if how == "fake_fraction":
        score = float((p > threshold_prob).mean())
        return score, "real" if score > 0.5 else "fake"
    if how == "max_fake":
        score = float(p.min())
        return score, "real" if score > threshold_prob else "fake"
    raise UsageError(f"aggregate must be one of {AGGREGATES}, got {how!r}")


def threshold_to_prob(threshold_logit: float) -> float:
    return float(sigmoid(threshold_logit))


def choose_learner(requested: str | None, stack: StackInfo | None, models: list[str],
                   saved_learners: list[str]) -> tuple[str, str]:
    """(kind, name): kind 'model' (one base model), 'learner' (a saved meta-learner) or
    'mean' (built-in soft vote: mean P(real) of all models, threshold 0.5).

    Default: the run's primary ensemble (`StackInfo.primary`: the one the stack step
    recommends), else the saved ``soft_vote``, else the built-in soft vote. ``best_single``
    names the stack's best single model.
    """
    if requested in (None, "", "auto"):
        primary = stack.primary if stack is not None else None
        if primary:
            return choose_learner(primary, stack, models, saved_learners)
        if DEFAULT_LEARNER in saved_learners:
            return "learner", DEFAULT_LEARNER
        return "mean", "soft_vote_builtin"
    if requested == "best_single":
        if stack is None or not stack.best_single:
            raise RunError("--learner best_single: the run has no stack/stack.json naming it")
        requested = stack.best_single
    if requested in models:
        return "model", requested
    if requested in saved_learners:
        return "learner", requested
    if requested == "soft_vote_builtin":
        return "mean", requested
    raise RunError(f"--learner {requested}: neither a trained model ({', '.join(models)}) nor "
                   f"a fitted meta-learner in stack/learners "
                   f"({', '.join(saved_learners) or 'none'})")


# ---------------------------------------------------------------- combiners: X -> z


@dataclass(frozen=True)
class ModelColumn:
    """One base model's logit as the verdict."""

    index: int
    threshold: float

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return X[:, self.index]


@dataclass(frozen=True)
class SavedLearner:
    """A fitted meta-learner from the run's stack/learners, fed its columns in its order."""

    learner: Any  # ensemble.saved.LoadedMetaLearner
    columns: list[int]

    @property
    def threshold(self) -> float:
        return self.learner.threshold

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.learner.decision(X[:, self.columns]), dtype=np.float64)


@dataclass(frozen=True)
class MeanProbability:
    """Built-in soft vote: the logit of the models' mean P(real); threshold 0.5."""

    threshold: float = 0.0

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return prob_to_logit(sigmoid(X).mean(axis=1))


def make_combiner(kind: str, name: str, run: Run, models: list[str],
                  thresholds: dict[str, float]) -> ModelColumn | SavedLearner | MeanProbability:
    """The callable X (faces x models, logits) -> z (ensemble logit) for a chosen learner."""
    if kind == "learner":
        # only ever from this run's own folder: no path from a user reaches joblib
        lm = load_meta_learner(run.learner_path(name), models)
        return SavedLearner(lm, [models.index(m) for m in lm.models])
    if kind == "model":
        return ModelColumn(models.index(name), thresholds[name])
    return MeanProbability()


# ---------------------------------------------------------------- the predictor


@dataclass
class Timing:
    detect_s: float = 0.0
    models_s: float = 0.0
    combine_s: float = 0.0


class Predictor:
    """A run loaded once: prepare settings, all finished base models, one combiner.

    ``backend``: 'onnx' (default) runs each model's fresh ONNX artifact under ONNX Runtime
    where there is one (``inference.loader``), else Keras; 'keras' always Keras.

    Thread-safe: face extraction may run in parallel, model inference is serialised by a
    lock (Keras models are not guaranteed safe under concurrent ``predict``).
    """

    def __init__(self, run_dir: str | Path, learner: str | None = None,
                 aggregate: str = "mean", faces: str = "auto", batch_size: int = 64,
                 limits: Limits | None = None, backend: str = "onnx"):
        self.run = Run(run_dir)
        self.run_dir = self.run.path
        self.config = self.run.config()
        self.prepare: PrepareConfig = self.config.prepare
        if aggregate not in AGGREGATES:
            raise UsageError(f"--aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if faces not in FACE_MODES:
            raise UsageError(f"--faces must be one of {FACE_MODES}, got {faces!r}")
        self.aggregate, self.face_mode, self.batch_size = aggregate, faces, batch_size
        self.limits = limits or Limits()
        if faces != "as-is":  # warm path: the detector is built once, here
            facelib.check_detector(self.prepare.detector)
        try:
            self.model_dirs = self.run.trained_models()
        except StoreError as exc:
            raise RunError(str(exc)) from None
        self.model_refs = list(self.model_dirs)
        self.stack_info = self.run.stack
        self.learner_kind, self.learner_name = choose_learner(
            learner, self.stack_info, self.model_refs, self.run.saved_learners())
        # per-model thresholds from the stack (logit scale; 0 = the study's sigmoid 0.5)
        self.model_thresholds = {m: self.stack_info.threshold(m) if self.stack_info else 0.0
                                 for m in self.model_refs}
        self.combiner = make_combiner(self.learner_kind, self.learner_name, self.run,
                                      self.model_refs, self.model_thresholds)
        self.threshold = self.combiner.threshold
        self.threshold_prob = threshold_to_prob(self.threshold)
        from ensemble_dfd.inference.loader import load_for_inference

        # the ONNX artifact under ONNX Runtime where one is fresh, else Keras (imports TF);
        # one thread each, the models run side by side (model_logits)
        loaded = {ref: load_for_inference(m, backend, threads=1)
                  for ref, m in self.model_dirs.items()}
        self.models = {ref: m for ref, (m, _) in loaded.items()}
        self.backends = {ref: b for ref, (_, b) in loaded.items()}
        self.sizes = {ref: int(m.input_shape[1]) for ref, m in self.models.items()}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.timing = Timing()

    # -- describing ------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {"run": self.run_dir.name, "models": self.model_refs,
                "input_sizes": self.sizes, "backends": self.backends, "learner": self.learner_name,
                "learner_kind": self.learner_kind, "threshold": self.threshold_prob,
                "aggregate": self.aggregate, "faces_mode": self.face_mode,
                "prepare": {k: getattr(self.prepare, k) for k in (
                    "every", "every_seconds", "frames_per_video", "max_width", "detector",
                    "upsample", "detect_size", "margin", "one_face_only", "jpeg_quality",
                    "align", "frame_rule")}}

    # -- the steps -------------------------------------------------------------------
    def extract(self, path: str | Path, kind: str, name: str | None = None,
                deadline: Deadline | None = None) -> InputFaces:
        res = extract_faces(path, kind, self.prepare, self.face_mode, name, self.limits,
                            deadline)
        self.timing.detect_s += res.seconds
        return res

    def model_logits(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(n_faces, n_models) logits; faces of all inputs in one batch per input size."""
        from ensemble_dfd.training.train import predict_logits

        out = np.zeros((len(crops), len(self.model_refs)))
        if not crops:
            return out
        t0 = time.perf_counter()
        with self._lock:
            # models sharing an input size share the batch
            resized = {size: np.stack([resize(c, size) for c in crops])
                       for size in sorted(set(self.sizes.values()))}

            def run(k: int) -> np.ndarray:
                ref = self.model_refs[k]
                return predict_logits(self.models[ref], resized[self.sizes[ref]],
                                      self.batch_size)

            onnx = [k for k, r in enumerate(self.model_refs) if self.backends[r] == "onnx"]
            keras = [k for k in range(len(self.model_refs)) if k not in onnx]
            # ONNX Runtime sessions run concurrently (one thread each: on ten small models
            # 2 such threads took 132 ms for 3 faces where one after the other with
            # ONNX Runtime's own threads took 517 ms; results/benchmarks); Keras one at a time
            for k, z in zip(onnx, self._onnx_pool().map(run, onnx), strict=True):
                out[:, k] = z
            for k in keras:
                out[:, k] = run(k)
        self.timing.models_s += time.perf_counter() - t0
        return out

    def _onnx_pool(self) -> ThreadPoolExecutor:
        """The threads that run the ONNX sessions: one per core (made once)."""
        if self._pool is None:
            cores = os.cpu_count() or 1
            self._pool = ThreadPoolExecutor(max(1, min(cores, len(self.model_refs))),
                                            thread_name_prefix="onnx")
        return self._pool

    def warm_up(self) -> float:
        """Run every model once on each batch shape a call can use (powers of two up to
        the batch size: ``predict_batches`` pads to those), so no request pays tracing.
        Returns the seconds spent; a second call costs nothing."""
        if getattr(self, "warmed", False):
            return 0.0
        t0 = time.perf_counter()
        blank = np.zeros((8, 8, 3), np.uint8)
        n = 1
        while True:
            self.model_logits([blank] * min(n, self.batch_size))
            if n >= self.batch_size:
                break
            n *= 2
        self.timing = Timing()  # warm-up is not part of any request's time
        self.warmed = True
        return time.perf_counter() - t0

    def combine(self, X: np.ndarray) -> np.ndarray:
        """Ensemble logit of P(real) per face."""
        t0 = time.perf_counter()
        z = self.combiner(X)
        self.timing.combine_s += time.perf_counter() - t0
        return z

    def score(self, inputs: Sequence[InputFaces]) -> list[dict[str, Any]]:
        """Per-input results (see ``result_record``) for already extracted inputs."""
        crops = [f.rgb for r in inputs for f in r.faces]
        X = self.model_logits(crops)
        z = self.combine(X) if len(crops) else np.zeros(0)
        out, start = [], 0
        for r in inputs:
            n = len(r.faces)
            out.append(self.result_record(r, X[start:start + n], z[start:start + n]))
            start += n
        return out

    def result_record(self, r: InputFaces, X: np.ndarray, z: np.ndarray) -> dict[str, Any]:
        """The JSON result of one input: aggregate, per-model summary, per-face rows."""
        rec: dict[str, Any] = {"input": r.input, "kind": r.kind, "faces": len(r.faces),
                               "p_real": None, "verdict": None, "status": "ok",
                               "aggregate": self.aggregate, "learner": self.learner_name,
                               "threshold": round(self.threshold_prob, 6),
                               "frames": r.frames_kept, "dropped_no_face": r.dropped_no_face,
                               "dropped_multi_face": r.dropped_multi_face,
                               "whole_image": r.whole_image, "models": {},
                               "face_results": [], "warnings": list(r.warnings)}
        if r.decoder:  # an image: whether its decode ran in the stoppable worker
            rec["decoder"] = r.decoder
        if not r.faces:
            rec["status"] = "no_face"
            rec["error"] = no_face_message(r)
            return rec
        P = sigmoid(X)
        p_ens = sigmoid(z)
        score, verdict = aggregate(p_ens, self.threshold_prob, self.aggregate)
        rec["p_real"], rec["verdict"] = _r(score), verdict
        rec["fake_fraction"] = _r(float((p_ens <= self.threshold_prob).mean()))
        for k, ref in enumerate(self.model_refs):
            thr = threshold_to_prob(self.model_thresholds[ref])
            s, v = aggregate(P[:, k], thr, self.aggregate)
            rec["models"][ref] = {"p_real": _r(s), "verdict": v}
        for i, f in enumerate(r.faces):
            rec["face_results"].append({
                "frame": f.frame, "box": list(f.box) if f.box else None,
                "p_real": _r(float(p_ens[i])),
                "verdict": "real" if z[i] > self.threshold else "fake",
                "models": {ref: _r(float(P[i, k])) for k, ref in enumerate(self.model_refs)}})
        return rec

    def predict_paths(self, items: Iterable[tuple[Path, str]]
                      ) -> tuple[list[dict[str, Any]], list[InputFaces]]:
        """Extract every input, then score all faces together. Unreadable inputs give a
        record with status 'bad_input' (and no faces) instead of stopping the others."""
        extracted: list[InputFaces] = []
        errors: dict[int, str] = {}
        for path, kind in items:
            try:
                extracted.append(self.extract(path, kind))
            except InputError as exc:
                errors[len(extracted)] = str(exc)
                extracted.append(InputFaces(str(path), kind))
            except (OSError, MemoryError, ValueError) as exc:  # one odd file stops no other
                log.warning("%s: %s: %s", path, type(exc).__name__, exc)
                errors[len(extracted)] = (f"{path}: could not be processed "
                                          f"({type(exc).__name__})")
                extracted.append(InputFaces(str(path), kind))
        records = self.score(extracted)
        for i, msg in errors.items():
            records[i].update(status="bad_input", error=msg)
        return records, extracted


def _r(x: float) -> float:
    return float(round(x, 6)) if math.isfinite(x) else x


# ---------------------------------------------------------------- CSV rows


CSV_COLUMNS = ("input", "kind", "faces", "p_real", "verdict", "status", "aggregate", "learner",
               "threshold", "fake_fraction", "frames", "error")


def csv_row(rec: dict[str, Any], models: Sequence[str]) -> dict[str, Any]:
    """One flat CSV row per input: the fields above plus p_real_<model> per model."""
    row = {c: rec.get(c, "") for c in CSV_COLUMNS}
    for m in models:
        row[f"p_real_{m}"] = rec.get("models", {}).get(m, {}).get("p_real", "")
    return {k: ("" if v is None else v) for k, v in row.items()}
