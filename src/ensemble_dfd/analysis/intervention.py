"""The intervention study: degrade a split's images in controlled steps (blur, downscale then
upscale, JPEG re-compression), rescore every base model and every meta-learner, and report
accuracy and AUC per (degradation, level, predictor).

If errors rise as images are blurred (at fixed content), blur causes errors; the
observational attribution alone cannot say that. Each base model is loaded once and scores
all degraded copies in one batched call; meta-learners are applied to the degraded base
models' logits, as they would be in deployment. Each model is loaded as collect loads it
(``inference.loader``: its fresh ONNX artifact, else Keras), so the study scores what the
logits store scored; TensorFlow is imported only inside `run_intervention`, and only for
Keras models.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble_dfd.analysis.attribution import DEGRADATIONS
from ensemble_dfd.data.images import read_rgb, resize
from ensemble_dfd.errors import UserError
from ensemble_dfd.rundir import trained_models
from ensemble_dfd.stacking import metrics as M

RESULT_COLUMNS = ["split", "degradation", "unit", "level", "value", "predictor", "kind", "n",
                  "acc", "auc", "tpr", "tnr"]


class InterventionError(UserError, ValueError):
    """Input the intervention study cannot use (missing images, models, bad levels)."""


# ---------------------------------------------------------------------------------------
# pure helpers: levels, steps, image lookup, subsampling


def parse_levels(specs: Sequence[str] | None) -> dict[str, list[float]]:
    """`["blur=0,1,2", "jpeg=50,20"]` -> {"blur": [0, 1, 2], "jpeg": [50, 20]}."""
    out: dict[str, list[float]] = {}
    for spec in specs or []:
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or name not in DEGRADATIONS:
            raise InterventionError(f"bad --levels {spec!r}: use NAME=v1,v2,... with NAME one "
                                    f"of {', '.join(DEGRADATIONS)}")
        try:
            vals = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise InterventionError(f"bad --levels {spec!r}: levels must be numbers") from None
        if not vals or any(not math.isfinite(v) or v < 0 for v in vals):
            raise InterventionError(f"bad --levels {spec!r}: give one or more numbers >= 0")
        if name == "jpeg" and any(v > 100 for v in vals):
            raise InterventionError(f"bad --levels {spec!r}: JPEG quality is at most 100")
        out[name] = vals
    return out


@dataclass(frozen=True)
class Step:
    """One degraded copy of the images: `level` 0 is the original for every degradation."""

    degradation: str
    level: int
    value: float


def make_steps(degradations: Sequence[str] | None = None,
               levels: Mapping[str, Sequence[float]] | None = None) -> list[Step]:
    """Every (degradation, level) to score, the original (level 0) first for each."""
    names = list(degradations) if degradations is not None else list(DEGRADATIONS)
    unknown = [n for n in names if n not in DEGRADATIONS]
    if unknown:
        raise InterventionError(f"unknown degradation(s) {', '.join(unknown)} (have: "
                                f"{', '.join(DEGRADATIONS)})")
    levels = levels or {}
    extra = [n for n in levels if n not in names]
    if extra:
        raise InterventionError(f"--levels given for {', '.join(extra)}, which is not among "
                                f"the degradations run ({', '.join(names)})")
    steps = []
    for n in names:
        d = DEGRADATIONS[n]
        steps += [Step(n, i, v) for i, v in enumerate(d.levels_with_original(levels.get(n)))]
    return steps


def _roots(data: Sequence[str | Path]) -> list[Path]:
    roots = []
    for d in data:
        d = Path(d)
        if d.is_file():  # a manifest CSV: its paths are relative to its folder
            d = d.parent
        if not d.is_dir():
            raise InterventionError(f"--data {d}: no such folder")
        roots.append(d.resolve())
    return roots


def resolve_files(paths: Sequence[str], data: Sequence[str | Path]) -> tuple[list[str | None],
                                                                             list[str]]:
    """Image file of each store path `<dataset folder name>/<relative path>`.

    A --data folder matches when its own name is the dataset's name (dfd-mini/) or when it
    holds a folder of that name (../shared/data/ holds dfd-mini/ and wild faces), so several
    datasets resolve at once. Returns (file or None per path, the unresolved paths)."""
    roots = _roots(data)
    files: list[str | None] = []
    missing: list[str] = []
    for p in paths:
        name, _, rel = str(p).partition("/")
        found = None
        for r in roots:
            for base in ((r,) if r.name == name else ()) + ((r / name,) if rel else ()):
                f = base / rel
                if rel and f.is_file():
                    found = str(f)
                    break
            if found:
                break
        files.append(found)
        if found is None:
            missing.append(str(p))
    return files, missing


def subsample(y: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """Row indices (sorted) of at most `limit` images, split between the classes as evenly
    as they allow, so accuracy and AUC stay defined on a small subset."""
    y = np.asarray(y)
    n = y.size
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise InterventionError(f"--intervention-limit must be >= 1, got {limit}")
    rng = np.random.default_rng(seed)
    real, fake = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    k_real = min(real.size, max(limit // 2, limit - fake.size))
    k_fake = min(fake.size, limit - k_real)
    pick = np.r_[rng.choice(real, k_real, replace=False), rng.choice(fake, k_fake, replace=False)]
    return np.sort(pick.astype(np.int64))


def degraded_batch(images: Sequence[np.ndarray], steps: Sequence[Step], size: int
                   ) -> np.ndarray:
    """(len(steps) * N, size, size, 3) uint8: every image degraded at its native resolution
    (as the world degrades it), then resized to the model input like every other input."""
    n = len(images)
    out = np.empty((len(steps) * n, size, size, 3), dtype=np.uint8)
    cache: dict[tuple[str, float], slice] = {}
    for s, step in enumerate(steps):
        d = DEGRADATIONS[step.degradation]
        key = ("original", 0.0) if step.value == d.original else (step.degradation, step.value)
        rows = slice(s * n, (s + 1) * n)
        if key in cache:  # level 0 is the same images for every degradation
            out[rows] = out[cache[key]]
            continue
        for i, img in enumerate(images):
            out[s * n + i] = resize(d.apply(img, step.value), size)
        cache[key] = rows
    return out


def step_metrics(y: np.ndarray, z: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy (at the predictor's threshold), AUC, TPR and TNR of one scored step."""
    s = M.seven_metrics(y, z, threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.OneClassWarning)
        auc = M.roc_auc(y, z)
    return {"n": int(y.size), "acc": s["acc"], "auc": auc, "tpr": s["tpr"], "tnr": s["tnr"]}


def results_table(split: str, steps: Sequence[Step], y: np.ndarray,
                  scores: Mapping[str, np.ndarray], kinds: Mapping[str, str],
                  thresholds: Mapping[str, float]) -> pd.DataFrame:
    """Long table from each predictor's scores on the stacked steps (len(steps) * N)."""
    n = y.size
    rows = []
    for s, step in enumerate(steps):
        for name, z in scores.items():
            rows.append({"split": split, "degradation": step.degradation,
                         "unit": DEGRADATIONS[step.degradation].unit, "level": step.level,
                         "value": step.value, "predictor": name,
                         "kind": kinds.get(name, "single"),
                         **step_metrics(y, z[s * n:(s + 1) * n],
                                        float(thresholds.get(name, 0.0)))})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


# ---------------------------------------------------------------------------------------
# I/O: models, learners, the run


def run_intervention(run_dir: Path, split: str, files: Sequence[str], y: np.ndarray,
                     models: Sequence[str], steps: Sequence[Step],
                     thresholds: Mapping[str, float] | None = None,
                     learners: Mapping[str, Any] | None = None, batch_size: int = 64,
                     progress: bool = True, backend: str = "onnx"
                     ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Score every base model and meta-learner on every step; returns the results table and
    the raw scores ((len(steps) * N) per predictor, steps stacked in order). `backend`: as
    collect's (each model's fresh ONNX artifact, else Keras; "keras": always Keras)."""
    y = np.asarray(y).astype(np.int64)
    if len(files) != y.size or y.size == 0:
        raise InterventionError(f"{len(files)} files for {y.size} labels")
    model_dirs = trained_models(Path(run_dir), list(models))
    images = [read_rgb(f) for f in files]  # native resolution, decoded once
    scores = _score_models(model_dirs, images, steps, split, batch_size, progress, backend)
    kinds = {m: "single" for m in scores}
    thresholds = dict(thresholds or {})
    for name, lm in (learners or {}).items():
        X = np.column_stack([scores[m] for m in lm.models])
        scores[name] = lm.decision(X)
        kinds[name] = "ensemble"
        thresholds[name] = lm.threshold
    ordered = {m: scores[m] for m in models if m in scores}
    ordered |= {k: v for k, v in scores.items() if k not in ordered}
    return results_table(split, steps, y, ordered, kinds, thresholds), ordered


def _score_models(model_dirs: Mapping[str, Any], images: list[np.ndarray],
                  steps: Sequence[Step], split: str, batch_size: int, progress: bool,
                  backend: str) -> dict[str, np.ndarray]:
    """Each model's logits on every degraded copy, models grouped by input size (from
    their records, before loading) so each size's degraded batch is built once, then freed."""
    from tqdm.auto import tqdm

    from ensemble_dfd.inference.loader import load_for_inference
    from ensemble_dfd.training.train import predict_logits

    sizes = {m: d.image_size() for m, d in model_dirs.items()}
    order = sorted(model_dirs, key=lambda m: (sizes[m] is None, sizes[m] or 0))
    scores: dict[str, np.ndarray] = {}
    batch: tuple[int, np.ndarray] | None = None
    bar = tqdm(total=len(order), desc=f"intervention {split}", unit="model",
               disable=not progress, file=sys.stderr)
    try:
        for ref in order:
            bar.set_postfix_str(f"{ref}: loading")
            model, _ = load_for_inference(model_dirs[ref], backend)
            size = int(model.input_shape[1])
            if batch is None or batch[0] != size:
                batch = None  # free the previous size's copies first
                bar.set_postfix_str(f"{ref}: degrading {len(images)} images x "
                                    f"{len(steps)} steps at {size} px")
                batch = (size, degraded_batch(images, steps, size))
            bar.set_postfix_str(f"{ref}: scoring {len(batch[1])} images")
            scores[ref] = predict_logits(model, batch[1], batch_size)
            del model
            bar.update(1)
    finally:
        bar.close()
    return scores
