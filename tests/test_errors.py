"""Errors vs bugs: a UserError is one line and exit code 2; anything else keeps its
traceback (a planted bug proves it), and every command exits the same way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ensemble_dfd.cli_common import run_main
from ensemble_dfd.config import ConfigError
from ensemble_dfd.errors import UsageError, UserError

SRC = Path(__file__).resolve().parents[1] / "src"


def test_user_error_is_one_line_and_exit_2(capsys):
    def body():
        raise ConfigError("experiments/x.toml: not valid TOML")

    assert run_main(body) == 2
    assert capsys.readouterr().err == "error: experiments/x.toml: not valid TOML\n"


@pytest.mark.parametrize("bug", [KeyError("oops"), ValueError("oops"), TypeError("oops")])
def test_a_bug_is_not_a_user_error(bug):
    def body():
        raise bug

    with pytest.raises(type(bug), match="oops"):
        run_main(body)


def test_package_errors_share_the_base():
    from ensemble_dfd.analysis.intervention import InterventionError
    from ensemble_dfd.artifacts import ArtifactError
    from ensemble_dfd.data.dataset import DatasetError
    from ensemble_dfd.data.frames import VideoReadError
    from ensemble_dfd.data.images import ImageReadError
    from ensemble_dfd.ensemble import MetaLearnerError
    from ensemble_dfd.ensemble.saved import MetaLearnerMismatch
    from ensemble_dfd.inference.verdict import InputError, LimitError, RunError
    from ensemble_dfd.pipeline import StepFailed
    from ensemble_dfd.prepare.common import NothingUsable
    from ensemble_dfd.report import ReportError
    from ensemble_dfd.runio import RunExistsError
    from ensemble_dfd.stack import StackError
    from ensemble_dfd.stacking.logits import StoreError
    from ensemble_dfd.training.backbones import WeightsUnavailableError
    from ensemble_dfd.training.tune import TunerDependencyError

    for cls in (ConfigError, InterventionError, MetaLearnerError, StoreError, StepFailed,
                NothingUsable, ReportError, RunExistsError, MetaLearnerMismatch, StackError,
                InputError, RunError, UsageError, ArtifactError, WeightsUnavailableError,
                DatasetError, VideoReadError, ImageReadError, TunerDependencyError, LimitError):
        assert issubclass(cls, UserError), cls
    assert issubclass(UserError, Exception)
    assert not issubclass(KeyError, UserError) and not issubclass(ValueError, UserError)


PLANTED = """
import sys
from ensemble_dfd import {module} as cmd
def planted(*a, **k):
    return {{}}["planted bug"]
cmd.{target} = planted
sys.exit(cmd.main({argv!r}))
"""


@pytest.mark.parametrize("module,target,argv", [
    ("stack", "read_store", ["--run", "RUN"]),
    ("report", "read_store", ["--run", "RUN", "--no-intervention"]),
])
def test_planted_bug_shows_its_traceback(tmp_path, module, target, argv):
    (tmp_path / "run").mkdir()
    argv = [a.replace("RUN", str(tmp_path / "run")) for a in argv]
    code = PLANTED.format(module=module, target=target, argv=argv)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "Traceback (most recent call last)" in out.stderr
    assert "KeyError: 'planted bug'" in out.stderr
    assert "in planted" in out.stderr


@pytest.mark.parametrize("command,argv,message", [
    ("stack", ["--run", "ABSENT"], "no logits store"),
    ("report", ["--run", "ABSENT"], "no such run folder"),
    ("collect", ["--run", "ABSENT", "--data", "ABSENT"], "ABSENT"),
    ("base_train", ["--data", "ABSENT", "--out", "OUT", "--models", "M99"], "M99"),
    ("predict", ["ABSENT", "--run", "OUT"], "no such file or folder"),
    ("pipeline", ["--config", "ABSENT", "--out", "OUT"], "config file not found"),
    ("prepare", ["stats", "ABSENT"], "ABSENT"),
])
def test_every_command_exits_the_same_way(tmp_path, capsys, command, argv, message):
    import importlib

    mod = importlib.import_module(f"ensemble_dfd.{command}")
    absent = str(tmp_path / "absent")
    argv = [a.replace("ABSENT", absent).replace("OUT", str(tmp_path / "out")) for a in argv]
    assert mod.main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1, err
    assert message.replace("ABSENT", absent) in err[0]
