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
    ("[train]\nexport = 'tflite'\n", "train.export must be onnx or none"),
    ("[pipeline]\ndask_workers = -1\n", "pipeline.dask_workers must be >= 0"),
    ("[train]\nallocator = 'mimalloc'\n", "train.allocator must be auto, system"),
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


# ---------------------------------------------------------------- [evaluate]


def test_evaluate_sets_parse_and_round_trip(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[evaluate]\n'
                 'dfdc20k = { data = "../shared/data/dfdc-20k", split = "test" }\n'
                 'wild = { videos = "vids", every = 30 }\n'
                 'wild32 = { videos = "vids", labels = "l.csv", frames_per_video = 32 }\n'
                 'mini = "../shared/data/dfd-mini"\n')
    cfg = load_config(f)
    ev = cfg.evaluate
    assert list(ev) == ["dfdc20k", "wild", "wild32", "mini"]
    assert (ev["dfdc20k"].data, ev["dfdc20k"].split) == ("../shared/data/dfdc-20k", "test")
    assert (ev["wild"].videos, ev["wild"].every, ev["wild"].frames_per_video) == ("vids", 30, 0)
    assert (ev["wild32"].labels, ev["wild32"].frames_per_video) == ("l.csv", 32)
    assert ev["mini"].data == "../shared/data/dfd-mini" and ev["mini"].split == ""
    text = dumps(cfg)
    assert 'wild = { videos = "vids", every = 30 }' in text  # only the keys that are set
    out = tmp_path / "round.toml"
    out.write_text(text)
    assert load_config(out) == cfg
    # --set reaches one entry, and adds one
    over = load_config(f, parse_overrides(["evaluate.dfdc20k.split=validation",
                                           'evaluate.more={data="x"}']))
    assert over.evaluate["dfdc20k"].split == "validation" and over.evaluate["more"].data == "x"


@pytest.mark.parametrize("entry, match", [
    ('x = { data = "d", videos = "v" }', "evaluate.x: give exactly one of data"),
    ("x = { split = \"test\" }", "evaluate.x: give exactly one of data"),
    ('x = { data = "d", every = 30 }', "evaluate.x: labels, every and frames_per_video"),
    ('x = { videos = "v", split = "test" }', "evaluate.x: split is for data"),
    ('x = { videos = "v", every = 30, frames_per_video = 32 }', "two ways to pick frames"),
    ('x = { videos = "v", every = -1 }', "evaluate.x: every and frames_per_video must be"),
    ('x = { videos = "v", evry = 30 }', "unknown key 'evaluate.x.evry'"),
    ('x = { videos = "v", every = "often" }', "every"),
    ("x = 3", "evaluate.x' must be a dataset path or a table"),
    ('test = { data = "d" }', "evaluate.test: 'test' is one of the run's own splits"),
    ('validation = { data = "d" }', "one of the run's own splits"),
    ('"a/b" = { data = "d" }', "a split name is letters"),
])
def test_bad_evaluate_entries_name_file_and_key(tmp_path, entry, match):
    f = tmp_path / "bad.toml"
    f.write_text(f"[evaluate]\n{entry}\n")
    with pytest.raises(ConfigError, match=match) as exc:
        load_config(f)
    assert str(exc.value).startswith(f"{f}: ")


def test_prepare_frames_per_video_and_margin_are_checked(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[prepare]\nframes_per_video = 32\nmargin = 0.15\n")
    cfg = load_config(f)
    assert (cfg.prepare.frames_per_video, cfg.prepare.margin) == (32, 0.15)
    f.write_text("[prepare]\nframes_per_video = 32\nevery_seconds = 0.5\n")
    with pytest.raises(ConfigError, match="frames_per_video and prepare.every_seconds"):
        load_config(f)
    f.write_text("[prepare]\nmargin = -0.1\n")
    with pytest.raises(ConfigError, match="prepare.margin"):
        load_config(f)


def test_deprecated_pipeline_extra_keys_read_as_evaluate(tmp_path):
    f = tmp_path / "old.toml"
    f.write_text('[pipeline]\ndata = "d"\nextra_videos = { wild = "w" }\nextra_every = 30\n'
                 'extra_data = { more = "m" }\n')
    with pytest.warns(FutureWarning, match=r'\[evaluate\] more = \{ data = "m" \}; '
                                           r'wild = \{ videos = "w", every = 30 \}'):
        cfg = load_config(f)
    assert cfg.evaluate["wild"].videos == "w" and cfg.evaluate["wild"].every == 30
    assert cfg.evaluate["more"].data == "m" and cfg.pipeline.data == "d"
    f.write_text('[pipeline]\nextra_data = { wild = "m" }\n[evaluate]\nwild = "n"\n')
    with pytest.raises(ConfigError, match="wild named both in"):
        load_config(f)


def test_a_run_recorded_before_evaluate_accepts_the_new_experiment_file(tmp_path, recwarn):
    """The run's config.toml written with [pipeline] extra_* (as the CPU profile's is) and the
    new cpu.toml differ only in what is done after training: not a different run. A change
    to the training is still refused, naming the section."""
    from ensemble_dfd.cli_common import record_config
    from ensemble_dfd.runio import RunExistsError

    cpu = load_config(ROOT / "experiments" / "cpu.toml")
    assert set(cpu.evaluate) == {"dfdc20k", "wild"}
    old = dumps(cpu).split("\n[evaluate]")[0].replace(
        "[pipeline]\n", '[pipeline]\nextra_videos = { wild = "../shared/data/wild" }\n'
                        "extra_data = {  }\nextra_every = 30\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(old)
    record_config(run, cpu, overwrite=False)
    assert (run / "config.toml").read_text() == old  # the record is left as it was
    assert not [w for w in recwarn if "deprecated" in str(w.message)]  # not the user's file
    import dataclasses

    other = dataclasses.replace(cpu, data=dataclasses.replace(cpu.data, image_size=64))
    with pytest.raises(RunExistsError, match="differs in data"):
        record_config(run, other, overwrite=False)


def test_a_run_recorded_before_a_key_existed_is_still_the_same_run(tmp_path):
    """A run recorded before ``prepare.detect_size`` existed (its data searched the study's
    way) is resumed by today's config, whose default is 960: not a different run, and the
    run keeps reading its own value (found in review: base_train refused it)."""
    from ensemble_dfd.cli_common import record_config
    from ensemble_dfd.config import load_recorded
    from ensemble_dfd.runio import RunExistsError

    cfg = load_config(None)
    assert cfg.prepare.detect_size == 960
    old = "\n".join(line for line in dumps(cfg).splitlines()
                    if not line.startswith("detect_size")) + "\n"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(old)
    record_config(run, cfg, overwrite=False)
    assert (run / "config.toml").read_text() == old
    assert load_recorded(run / "config.toml").prepare.detect_size == 0
    import dataclasses

    other = dataclasses.replace(cfg, prepare=dataclasses.replace(cfg.prepare, margin=0.2))
    with pytest.raises(RunExistsError, match="differs in prepare"):
        record_config(run, other, overwrite=False)


@pytest.mark.parametrize("spec, match", [
    ('{ dataset = "dfdc" }', "needs root = DIR"),
    ('{ root = "x", data = "y" }', "go with dataset = NAME"),
    ('{ dataset = "dfdc", root = "x", videos = "y" }', "exactly one of"),
])
def test_public_dataset_evaluate_sets_are_validated(tmp_path, spec, match):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[evaluate]\nx = {spec}\n")
    with pytest.raises(ConfigError, match=match):
        load_config(cfg)


def test_other_trackers_are_the_same_run(tmp_path):
    """Adding MLflow (or turning TensorBoard off) on a finished run changes where progress
    is logged, not what is trained: accepted; another training value is still refused."""
    import dataclasses

    from ensemble_dfd.cli_common import record_config
    from ensemble_dfd.runio import RunExistsError

    cfg = load_config(None)
    run = tmp_path / "run"
    run.mkdir()
    record_config(run, cfg, overwrite=False)
    tracked = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, tracking=("tensorboard", "mlflow")))
    record_config(run, tracked, overwrite=False)
    record_config(run, dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, tracking=())), overwrite=False)
    with pytest.raises(RunExistsError, match="differs in train"):
        record_config(run, dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, epochs_frozen=cfg.train.epochs_frozen + 1)), overwrite=False)
