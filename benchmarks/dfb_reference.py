"""DeepfakeBench's aligned face crop, transcribed, as the reference our ``--align dfb`` is
measured against (benchmarks/align_fidelity.py, tests/integration/test_align_integration.py).
Not part of the package.

Transcribed from SCLBD/DeepfakeBench, ``preprocessing/preprocess.py`` at commit
2c6abe3c1b19bb33ee405c22a14c3ff8384639aa: ``get_keypts``, ``extract_aligned_face_dlib`` and
its inner ``img_align_crop`` (``mask`` handling left out: we have no masks). Their
``skimage.transform.SimilarityTransform().estimate(src, dst)`` is scikit-image's
``_umeyama(src, dst, estimate_scale=True)``, used from scikit-image when it is installed,
else transcribed below from ``skimage/transform/_geometric.py`` (scikit-image 0.19-0.24).

Differences that remain by necessity: DeepfakeBench loads
``shape_predictor_81_face_landmarks.dat`` (not distributed with any package here); both
sides here use dlib's 68-point model, whose points 0-67 follow the same layout.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray, estimate_scale: bool) -> np.ndarray:
    """scikit-image's ``_umeyama`` (Umeyama 1991), line for line."""
    num = src.shape[0]
    dim = src.shape[1]
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_demean = src - src_mean
    dst_demean = dst - dst_mean
    A = dst_demean.T @ src_demean / num  # noqa: N806 (their names)
    d = np.ones((dim,), dtype=np.float64)
    if np.linalg.det(A) < 0:
        d[dim - 1] = -1
    T = np.eye(dim + 1, dtype=np.float64)  # noqa: N806
    U, S, V = np.linalg.svd(A)  # noqa: N806
    rank = np.linalg.matrix_rank(A)
    if rank == 0:
        return np.nan * T
    elif rank == dim - 1:
        if np.linalg.det(U) * np.linalg.det(V) > 0:
            T[:dim, :dim] = U @ V
        else:
            s = d[dim - 1]
            d[dim - 1] = -1
            T[:dim, :dim] = U @ np.diag(d) @ V
            d[dim - 1] = s
    else:
        T[:dim, :dim] = U @ np.diag(d) @ V
    scale = 1.0 / src_demean.var(axis=0).sum() * (S @ d) if estimate_scale else 1.0
    T[:dim, dim] = dst_mean - scale * (T[:dim, :dim] @ src_mean.T)
    T[:dim, :dim] *= scale
    return T


def similarity_params(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``SimilarityTransform(); tform.estimate(src, dst); tform.params``."""
    try:
        from skimage import transform as trans
    except ImportError:
        return umeyama(src, dst, True)
    tform = trans.SimilarityTransform()
    tform.estimate(src, dst)
    return tform.params


def get_keypts(image: np.ndarray, face: Any, predictor: Any) -> np.ndarray:
    shape = predictor(image, face)
    leye = np.array([shape.part(37).x, shape.part(37).y]).reshape(-1, 2)
    reye = np.array([shape.part(44).x, shape.part(44).y]).reshape(-1, 2)
    nose = np.array([shape.part(30).x, shape.part(30).y]).reshape(-1, 2)
    lmouth = np.array([shape.part(49).x, shape.part(49).y]).reshape(-1, 2)
    rmouth = np.array([shape.part(55).x, shape.part(55).y]).reshape(-1, 2)
    return np.concatenate([leye, reye, nose, lmouth, rmouth], axis=0)


def template(outsize: tuple[int, int], scale: float = 1.3) -> np.ndarray:
    """``img_align_crop``'s ``dst``, computed as it does (float32)."""
    target_size = [112, 112]
    dst = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                    [33.5493, 92.3655], [62.7299, 92.2041]], dtype=np.float32)
    if target_size[1] == 112:
        dst[:, 0] += 8.0
    dst[:, 0] = dst[:, 0] * outsize[0] / target_size[0]
    dst[:, 1] = dst[:, 1] * outsize[1] / target_size[1]
    target_size = list(outsize)
    margin_rate = scale - 1
    x_margin = target_size[0] * margin_rate / 2.
    y_margin = target_size[1] * margin_rate / 2.
    dst[:, 0] += x_margin
    dst[:, 1] += y_margin
    dst[:, 0] *= target_size[0] / (target_size[0] + 2 * x_margin)
    dst[:, 1] *= target_size[1] / (target_size[1] + 2 * y_margin)
    return dst


def img_align_crop(img: np.ndarray, landmark: np.ndarray, outsize: tuple[int, int],
                   scale: float = 1.3) -> tuple[np.ndarray, np.ndarray]:
    """The aligned crop, and (added here) the 2 x 3 matrix M it used."""
    dst = template(outsize, scale)
    src = landmark.astype(np.float32)
    M = similarity_params(src, dst)[0:2, :]  # noqa: N806
    img = cv2.warpAffine(img, M, (outsize[1], outsize[0]))
    img = cv2.resize(img, (outsize[1], outsize[0]))
    return img, M


def extract_aligned_face_dlib(face_detector: Any, predictor: Any, image: np.ndarray,
                              res: int = 256) -> dict[str, Any] | None:
    """``extract_aligned_face_dlib`` on a BGR frame; None where it finds no face. Returns
    what it returns (the BGR crop, the 68 landmarks found again on that crop: None where
    their ``face_align[0]`` would raise) plus what it computed on the way (the detector's
    box, the five points, M)."""
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    faces = face_detector(rgb, 1)
    if not len(faces):
        return None
    face = max(faces, key=lambda rect: rect.width() * rect.height())  # the biggest face
    landmarks = get_keypts(rgb, face, predictor)
    cropped_face, M = img_align_crop(rgb, landmarks, outsize=(res, res))  # noqa: N806
    cropped_face = cv2.cvtColor(cropped_face, cv2.COLOR_RGB2BGR)
    face_align = face_detector(cropped_face, 1)  # (on the BGR crop, as they do)
    landmark = None
    if len(face_align):
        shape = predictor(cropped_face, face_align[0])
        landmark = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)])
    box = (face.top(), face.right(), face.bottom(), face.left())
    return {"crop_bgr": cropped_face, "landmarks": landmark, "box": box,
            "points": landmarks, "M": M}
