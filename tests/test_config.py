"""Config loading: defaults, files, overrides, validation, round trip."""

from pathlib import Path

import pytest

from ensemble_dfd.config import ConfigError, RunConfig, dumps, load_config, parse_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_study():
    cfg = RunConfig()
    assert cfg.train.epochs_frozen == 10 and cfg.train.epochs_finetune == 10
    assert cfg.train.lr_frozen == 1e-4 and cfg.train.lr_finetune == 1e-5
    assert cfg.data.batch_size == 40 and cfg.prepare.every == 120


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "experiments").glob("*.toml")))
def test_every_experiment_file_loads_and_round_trips(name, tmp_path):
    cfg = load_config(ROOT / "experiments" / name)
    out = tmp_path / "c.toml"
    out.write_text(dumps(cfg))
    assert load_config(out) == cfg


def test_seed_toml_matches_reference():
    cfg = load_config(ROOT / "experiments" / "seed.toml")
    assert cfg.train.weights == "imagenet"
    assert cfg.train.freeze_base and not cfg.train.base_bn_training
    assert (cfg.train.optimizer_frozen, cfg.train.optimizer_finetune) == ("adam", "rmsprop")
    assert cfg.data.image_size == 0 and len(cfg.train.models) == 10


def test_overrides_beat_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nepochs_frozen = 3\nmodels = ["M6"]\n')
    cfg = load_config(f, parse_overrides(["train.epochs_frozen=5", "train.weights=none",
                                          "data.image_size_per_model={M1 = 75}"]))
    assert cfg.train.epochs_frozen == 5 and cfg.train.weights == "none"
    assert cfg.train.models == ("M6",) and cfg.data.image_size_per_model == {"M1": 75}


@pytest.mark.parametrize("text, match", [
    ("[train]\nepochs = 3\n", "unknown key 'train.epochs'"),
    ("[prepare]\nratios = [0.5, 0.6, 0.1]\n", "sum"),
    ("[train]\noptimizer_frozen = 'adagrad'\n", "optimizer_frozen"),
    ("[train]\nepochs_frozen = 2.5\n", "integer"),
    ("[train\n", "not valid TOML"),
])
def test_bad_config_is_named(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(f)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.toml")


def test_per_model_overrides(tmp_path):
    from ensemble_dfd.config import for_model

    f = tmp_path / "c.toml"
    f.write_text("[train]\nlr_frozen = 1e-3\nper_model = { M2 = { lr_frozen = 1e-4, "
                 "epochs_frozen = 4 } }\n")
    cfg = load_config(f)
    assert for_model(cfg.train, "M2").lr_frozen == 1e-4
    assert for_model(cfg.train, "M2").epochs_frozen == 4
    assert for_model(cfg.train, "M6").lr_frozen == 1e-3
    f.write_text("[train]\nper_model = { M2 = { learning_rate = 1 } }\n")
    with pytest.raises(ConfigError, match="train.per_model.M2.learning_rate"):
        load_config(f)
    f.write_text("[train]\nper_model = { M2 = { optimizer_frozen = 'adagrad' } }\n")
    with pytest.raises(ConfigError, match="optimizer_frozen"):
        load_config(f)


def _base_train_config(*argv: str) -> RunConfig:
    from ensemble_dfd import base_train
    from ensemble_dfd.cli_common import resolve_config

    args = base_train._parser().parse_args(["--data", "d", "--out", "o", *argv])
    return resolve_config(args, base_train.config_flags(args))


def test_typed_flag_beats_the_files_per_model():
    """`--epochs-frozen 2` trains M6 for 2 frozen epochs although cpu.toml's per_model says
    9; --set keeps per_model (it sets the run-wide value), and --set per_model={} clears it."""
    from ensemble_dfd.config import for_model

    cpu = str(ROOT / "experiments" / "cpu.toml")
    cfg = _base_train_config("--config", cpu, "--models", "M6", "--epochs-frozen", "2")
    assert cfg.train.models == ("M6",)
    assert for_model(cfg.train, "M6").epochs_frozen == 2
    assert for_model(cfg.train, "M8").epochs_frozen == 2
    assert for_model(cfg.train, "M2").lr_frozen == 1e-4  # other per-model keys stay
    assert load_config(cpu).train.per_model["M6"]["epochs_frozen"] == 9
    cfg = _base_train_config("--config", cpu, "--set", "train.epochs_frozen=2")
    assert for_model(cfg.train, "M6").epochs_frozen == 9
    cfg = _base_train_config("--config", cpu, "--set", "train.per_model={}")
    assert cfg.train.per_model == {}
    assert for_model(cfg.train, "M6").epochs_frozen == cfg.train.epochs_frozen
    cfg = _base_train_config("--config", cpu, "--image-size", "48")
    assert cfg.data.image_size == 48 and cfg.data.image_size_per_model == {}
    assert load_config(cpu).data.image_size_per_model["M6"] == 64
