"""Meta-learners on disk: one `<name>.json` per fitted learner, written by `stack` and read by
`predict`, `serve` and `report`. It holds data only: the learner's class (one of this
package's own, by name), its parameters and its fitted state (arrays as lists of numbers),
plus the models in column order, the threshold and the versions that fit it.

Nothing in a run folder is executed when it is loaded: the class comes from an allow-list
(`LEARNER_CLASSES`), every parameter and state value must be a number, a string, a list or
null, and the rebuilt learner must give finite scores on a probe before it is used. A
`.joblib` pickle left by an older version is refused (unpickling runs code), with the
command that rewrites it.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ensemble_dfd.ensemble.base import MetaLearnerError
from ensemble_dfd.ensemble.learners import (
    CaruanaSelection,
    HardVoting,
    SoftVoting,
    StackedLogisticRegression,
    WeightedSoftVoting,
)
from ensemble_dfd.runio import package_versions, write_json
from ensemble_dfd.stacking.metrics import sigmoid

SIDECAR_FORMAT = 2  # 1: a .joblib pickle beside a .json sidecar (refused)
SUFFIX = ".json"
LEARNER_CLASSES = {c.__name__: c for c in (SoftVoting, HardVoting, WeightedSoftVoting,
                                           StackedLogisticRegression, CaruanaSelection)}
_DTYPES = ("float64", "int64")


class MetaLearnerMismatch(MetaLearnerError):
    """A saved meta-learner does not fit the models at hand, or its file is not one."""


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


def learner_file(path: str | Path) -> Path:
    """The `.json` file of a learner named by any of its paths (`x`, `x.json`, `x.joblib`)."""
    path = Path(path)
    return path.with_suffix(SUFFIX) if path.suffix in (SUFFIX, ".joblib") else \
        path.with_name(path.name + SUFFIX)


# ---------------------------------------------------------------- state <-> JSON


def _encode(v: Any) -> Any:
    """A fitted value as JSON: arrays as {"ndarray": nested lists, "dtype": ...}."""
    if isinstance(v, np.ndarray):
        kind = "int64" if v.dtype.kind in "iub" else "float64"
        return {"ndarray": v.astype(kind).tolist(), "dtype": kind}
    if isinstance(v, dict):
        return {str(k): _encode(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_encode(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, bool | int | float | str):
        return v
    raise MetaLearnerError(f"cannot save a value of type {type(v).__name__} as data")


def _decode(v: Any, where: str) -> Any:
    """The inverse of `_encode`; anything else than numbers, strings, lists and null (and
    the ndarray form) is refused."""
    if isinstance(v, dict):
        if set(v) != {"ndarray", "dtype"} or v["dtype"] not in _DTYPES:
            raise MetaLearnerMismatch(f"{where}: not a saved array")
        try:
            arr = np.asarray(v["ndarray"], dtype=v["dtype"])
        except (TypeError, ValueError):
            raise MetaLearnerMismatch(f"{where}: array holds non-numbers") from None
        return arr
    if isinstance(v, list):
        return [_decode(x, where) for x in v]
    if v is None or isinstance(v, bool | int | float | str):
        return v
    raise MetaLearnerMismatch(f"{where}: unexpected value")


def _fitted_state(est: Any) -> dict[str, Any]:
    return {k: _encode(v) for k, v in vars(est).items()
            if k.endswith("_") and not k.startswith("_")}


def _rebuild(doc: dict[str, Any], n_models: int, where: str) -> Any:
    """The learner from its class name, parameters and state; checked on a probe."""
    cls = LEARNER_CLASSES.get(doc.get("class"))  # type: ignore[arg-type]
    if cls is None:
        raise MetaLearnerMismatch(f"{where}: unknown learner class {doc.get('class')!r} "
                                  f"(known: {', '.join(LEARNER_CLASSES)})")
    params, state = doc.get("params"), doc.get("state")
    if not isinstance(params, dict) or not isinstance(state, dict):
        raise MetaLearnerMismatch(f"{where}: no params/state")
    try:
        est = cls(**{k: _decode(v, f"{where}: param {k}") for k, v in params.items()})
    except TypeError as exc:
        raise MetaLearnerMismatch(f"{where}: parameters do not fit {cls.__name__}: {exc}") \
            from None
    for k, v in state.items():
        if not k.endswith("_") or k.startswith("_"):
            raise MetaLearnerMismatch(f"{where}: {k!r} is not a fitted attribute")
        setattr(est, k, _decode(v, f"{where}: {k}"))
    if getattr(est, "n_features_in_", None) != n_models:
        raise MetaLearnerMismatch(f"{where}: learner expects "
                                  f"{getattr(est, 'n_features_in_', None)} columns but the file "
                                  f"lists {n_models} models")
    try:
        probe = np.asarray(est.decision_function(np.zeros((2, n_models))), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - any failure means the state is not usable
        raise MetaLearnerMismatch(f"{where}: fitted state is incomplete or inconsistent "
                                  f"({type(exc).__name__})") from None
    if probe.shape != (2,) or not np.isfinite(probe).all():
        raise MetaLearnerMismatch(f"{where}: fitted state gives no finite scores")
    return est


# ---------------------------------------------------------------- load / save


def _read_doc(path: Path) -> dict[str, Any]:
    if not path.is_file():
        old = path.with_suffix(".joblib")
        if old.is_file():
            raise MetaLearnerMismatch(_pickle_message(old))
        raise MetaLearnerMismatch(f"{path}: missing")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetaLearnerMismatch(f"{path}: not a readable learner file ({exc})") from None
    if not isinstance(doc, dict):
        raise MetaLearnerMismatch(f"{path}: not a learner file")
    if doc.get("format") == 1:
        raise MetaLearnerMismatch(_pickle_message(path.with_suffix(".joblib")))
    if doc.get("format") != SIDECAR_FORMAT:
        raise MetaLearnerMismatch(f"{path}: unknown learner file format {doc.get('format')!r}")
    return doc


def _pickle_message(path: Path) -> str:
    return (f"{path}: a pickled meta-learner from an older version, not loaded (loading a "
            "pickle can run code); rewrite it as data with `python -m ensemble_dfd.stack "
            "--run RUN --overwrite`")


def load_meta_learner(path: str | Path, available_models: list[str] | None = None
                      ) -> LoadedMetaLearner:
    """Load `<name>.json` and check that every model the learner was fit on is among
    `available_models`. Build X with `.models` order."""
    path = learner_file(path)
    doc = _read_doc(path)
    try:
        models = [str(m) for m in doc["models"]]
        threshold = float(doc["threshold"])
    except (KeyError, TypeError, ValueError):
        raise MetaLearnerMismatch(f"{path}: no models/threshold") from None
    if not math.isfinite(threshold):
        raise MetaLearnerMismatch(f"{path}: threshold is not a finite number")
    if available_models is not None:
        have = set(available_models)
        missing = [m for m in models if m not in have]
        if missing:
            raise MetaLearnerMismatch(
                f"{path.name} was fit on models {', '.join(models)}; missing here: "
                f"{', '.join(missing)} (have: {', '.join(available_models) or 'none'})")
    est = _rebuild(doc.get("estimator") or {}, len(models), str(path))
    return LoadedMetaLearner(est, models, threshold, doc)


def saved_names(folder: Path) -> list[str]:
    """Names of the learners saved in `folder` (old pickles included: loading refuses them)."""
    if not folder.is_dir():
        return []
    return sorted({p.stem for p in folder.glob("*.json")} | {p.stem for p in
                                                              folder.glob("*.joblib")})


def load_learners(folder: Path, models: Sequence[str], names: Sequence[str] | None = None,
                  warn: Callable[[str], None] | None = None) -> dict[str, LoadedMetaLearner]:
    """Saved meta-learners in `folder` whose base models are all in `models`, by name;
    the others are skipped (with `warn`)."""
    out: dict[str, LoadedMetaLearner] = {}
    for name in saved_names(folder):
        if names is not None and name not in names:
            continue
        try:
            out[name] = load_meta_learner(folder / f"{name}{SUFFIX}", list(models))
        except MetaLearnerMismatch as e:
            if warn:
                warn(f"skipping meta-learner {name}: {e}")
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
    """`<name>.json`: the learner as data (class, params, fitted state), the models in column
    order, the threshold and the versions."""
    import sklearn

    cls = type(est).__name__
    if LEARNER_CLASSES.get(cls) is not type(est):
        raise MetaLearnerError(f"{name}: {cls} is not a learner that can be saved as data "
                               f"(known: {', '.join(LEARNER_CLASSES)})")
    doc = {
        "format": SIDECAR_FORMAT, "name": name, "class": cls,
        "models": list(models), "n_models": len(models),
        "threshold": float(threshold), "threshold_prob": float(sigmoid(np.array(threshold))),
        "decision_rule": "Real (1) iff decision_function(X) > threshold; X = logits of "
                         "`models` in this order",
        "params": _json_safe(est.get_params()),
        "versions": {**package_versions(), "scikit-learn": sklearn.__version__,
                     "python": sys.version.split()[0]},
    }
    doc.update(_json_safe(info))
    doc["estimator"] = {"class": cls, "params": _encode(est.get_params()),
                        "state": _fitted_state(est)}
    path = folder / f"{name}{SUFFIX}"
    write_json(path, doc)
    return path
