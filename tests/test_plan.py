"""ModelPlan: each model's settings resolved once from the config, and used as resolved."""

from __future__ import annotations

import pickle

import pytest

from ensemble_dfd.config import ConfigError, load_config
from ensemble_dfd.training import backbones
from ensemble_dfd.training.modeldir import ModelDir
from ensemble_dfd.training.plan import plan_model, plan_models

OVERRIDES = {
    "data": {"image_size": 48, "image_size_per_model": {"M6": 64}},
    "train": {"models": ["M6", "M2"], "lr_frozen": 1e-3, "epochs_frozen": 2,
              "per_model": {"M6": {"lr_frozen": 1e-2, "epochs_frozen": 4, "dropout": 0.4,
                                   "optimizer_frozen": "sgd", "allocator": "system",
                                   "fine_tune_at": 5, "weights": "/nowhere"}}},
}


@pytest.fixture
def plans():
    return {p.ref: p for p in plan_models(load_config(None, OVERRIDES))}


def test_per_model_overrides_are_resolved_once(plans):
    m2, m6 = plans["M2"], plans["M6"]
    assert list(plans) == ["M2", "M6"]  # registry order
    assert (m6.image_size, m2.image_size) == (64, 48)
    assert (m6.train.lr_frozen, m2.train.lr_frozen) == (1e-2, 1e-3)
    assert (m6.epochs, m2.epochs) == ((4, 10), (2, 10))
    assert (m6.train.dropout, m2.train.dropout) == (0.4, 0.2)
    assert (m6.allocator, m2.allocator) == ("system", "auto")
    assert (m6.train.weights, m2.train.weights) == ("/nowhere", "imagenet")
    # -1 (the default) is the backbone's own; an override wins
    assert (m6.fine_tune_at, m2.fine_tune_at) == (5, backbones.get("M2").fine_tune_at)
    for p in plans.values():  # nothing left to resolve a second, different way
        assert p.train.per_model == {} and p.data.image_size_per_model == {}
        assert p.data.image_size == p.image_size and p.seed == 1234
        assert p.backbone is backbones.get(p.ref)


def test_plan_defaults_and_errors():
    (m6,) = plan_models(load_config(), ["M6"])
    assert m6.image_size == backbones.get("M6").input_size == 160
    assert plan_models(load_config(), "m8,M6")[0].ref == "M6"
    with pytest.raises(ConfigError, match="train.models: unknown model ref 'M99'"):
        plan_models(load_config(), ["M99"])
    with pytest.raises(ConfigError, match="data.image_size: M1 Xception needs inputs of at "
                                          "least 71 px, got 32"):
        plan_model(load_config(None, {"data": {"image_size": 32}}), "M1")


def test_tuned_plan_and_pickling(plans):
    m6 = plans["M6"]
    tuned = m6.tuned({"fine_tune_at": 7, "lr_finetune": 1e-3, "dropout": 0.1,
                      "default_fine_tune_at": 5})
    assert (tuned.fine_tune_at, tuned.train.lr_finetune, tuned.train.dropout) == (7, 1e-3, 0.1)
    assert tuned.train.lr_frozen == m6.train.lr_frozen and m6.fine_tune_at == 5
    assert m6.tuned(None) is m6
    assert pickle.loads(pickle.dumps(m6)) == m6  # sent to a child process or a worker


def test_the_trainer_builds_what_the_plan_says(plans, tmp_path, monkeypatch):
    """Fails if an override is ignored: the model is built and compiled with M6's own size,
    dropout, optimizer and rate (without TensorFlow: the builders are stand-ins)."""
    from ensemble_dfd.training import train

    built, compiled = [], []
    monkeypatch.setattr(backbones, "build_model",
                        lambda *a, **k: built.append((a, k)) or ("model", "base"))
    monkeypatch.setattr(backbones, "param_table", lambda m, b: {"trainable": 1})
    monkeypatch.setattr(train, "compile_model", lambda m, opt, lr: compiled.append((opt, lr)))
    for ref in ("M6", "M2"):
        model_dir = ModelDir(tmp_path / ref)
        model_dir.path.mkdir()
        assert train._start_or_resume(plans[ref], model_dir, print)[2:] == (0, 1)
    (a6, k6), (a2, k2) = built
    assert a6[1:4] == (64, "/nowhere", 0.4) and a2[1:4] == (48, "imagenet", 0.2)
    assert compiled == [("sgd", 1e-2), ("adam", 1e-3)]


def test_weights_are_checked_per_model(plans, monkeypatch):
    """base_train's early weights check asks each plan (M6's own folder, not the run's)."""
    from ensemble_dfd import base_train

    seen = []
    monkeypatch.setattr(backbones, "build_base", lambda bb, size, w: seen.append((bb.ref, size, w)))
    base_train.check_weights([plans["M2"], plans["M6"]])
    assert seen == [("M2", 48, "imagenet"), ("M6", 64, "/nowhere")]
    none = plan_models(load_config(None, {"train": {"weights": "none"}}), ["M6"])
    base_train.check_weights(none)
    assert len(seen) == 2  # "none": nothing to load
