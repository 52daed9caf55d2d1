"""Meta-learners on disk: `<name>.joblib` with a `<name>.json` sidecar (the models in column
order, the threshold, versions, the file's checksum), saved by `stack` and loaded by
`predict`, `serve` and `report`; a mismatched pair is refused."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ensemble_dfd.ensemble.base import MetaLearnerError
from ensemble_dfd.metrics import sigmoid
from ensemble_dfd.runio import atomic_write, package_versions, sha256_file, write_json

SIDECAR_FORMAT = 1


class MetaLearnerMismatch(MetaLearnerError):
    """A saved meta-learner does not fit the models (or file) at hand."""


@dataclass(frozen=True)
class LoadedMetaLearner:
    estimator: Any
    models: list[str]  # column order the estimator expects
    threshold: float  # on the logit scale: Real iff decision_function(X) > threshold
    sidecar: dict[str, Any]

    def decision(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.decision_function(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.decision(X) > self.threshold).astype(np.int64)


def load_meta_learner(path: str | Path, available_models: list[str] | None = None
                      ) -> LoadedMetaLearner:
    """Load `<name>.joblib` (or its `<name>.json` sidecar) and check the pair, and that every
    model the learner was fit on is among `available_models`. Build X with `.models` order."""
    import joblib

    path = Path(path)
    jpath = path.with_suffix(".joblib")
    spath = path.with_suffix(".json")
    for p in (jpath, spath):
        if not p.is_file():
            raise MetaLearnerMismatch(f"{p}: missing (a meta-learner is a .joblib file with a "
                                      ".json sidecar beside it)")
    side = json.loads(spath.read_text())
    if side.get("format") != SIDECAR_FORMAT:
        raise MetaLearnerMismatch(f"{spath}: unknown sidecar format {side.get('format')!r}")
    if side.get("sha256") != sha256_file(jpath):
        raise MetaLearnerMismatch(f"{jpath}: does not match its sidecar {spath.name} "
                                  "(checksum differs); the pair was mixed up or modified")
    models = list(side["models"])
    if available_models is not None:
        have = set(available_models)
        missing = [m for m in models if m not in have]
        if missing:
            raise MetaLearnerMismatch(
                f"{jpath.name} was fit on models {', '.join(models)}; missing here: "
                f"{', '.join(missing)} (have: {', '.join(available_models) or 'none'})")
    est = joblib.load(jpath)
    if getattr(est, "n_features_in_", len(models)) != len(models):
        raise MetaLearnerMismatch(f"{jpath.name}: estimator expects {est.n_features_in_} "
                                  f"columns but its sidecar lists {len(models)} models")
    mine = side.get("versions", {}).get("scikit-learn")
    import sklearn

    if mine and mine != sklearn.__version__:
        warnings.warn(f"{jpath.name} was saved with scikit-learn {mine}, loading with "
                      f"{sklearn.__version__}", stacklevel=2)
    return LoadedMetaLearner(est, models, float(side["threshold"]), side)


def load_learners(folder: Path, models: Sequence[str], names: Sequence[str] | None = None,
                  warn: Callable[[str], None] | None = None) -> dict[str, LoadedMetaLearner]:
    """Saved meta-learners in `folder` whose base models are all in `models`, by name;
    the others are skipped (with `warn`)."""
    out: dict[str, LoadedMetaLearner] = {}
    if not folder.is_dir():
        return out
    for j in sorted(folder.glob("*.joblib")):
        if names is not None and j.stem not in names:
            continue
        try:
            out[j.stem] = load_meta_learner(j, list(models))
        except MetaLearnerMismatch as e:
            if warn:
                warn(f"skipping meta-learner {j.stem}: {e}")
    return out


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return repr(v)


def save_meta_learner(folder: Path, name: str, est: Any, models: list[str], threshold: float,
                      info: dict[str, Any]) -> Path:
    """`<name>.joblib` plus `<name>.json` (models in column order, threshold, versions)."""
    import joblib
    import sklearn

    jpath = folder / f"{name}.joblib"
    atomic_write(jpath, lambda p: joblib.dump(est, p))
    side = {
        "format": SIDECAR_FORMAT, "name": name, "class": type(est).__name__,
        "module": type(est).__module__, "models": list(models), "n_models": len(models),
        "threshold": float(threshold), "threshold_prob": float(sigmoid(np.array(threshold))),
        "decision_rule": "Real (1) iff decision_function(X) > threshold; X = logits of "
                         "`models` in this order",
        "params": _json_safe(est.get_params()),
        "versions": {**package_versions(), "scikit-learn": sklearn.__version__,
                     "joblib": joblib.__version__, "python": sys.version.split()[0]},
        "sha256": sha256_file(jpath),
    }
    side.update(_json_safe(info))
    write_json(folder / f"{name}.json", side)
    return jpath
