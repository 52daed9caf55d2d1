"""`python -m ensemble_dfd.report` end to end on the tiny trained run (two models, stack
done) and the synthetic faces, plus the pure helpers of the intervention study."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import link_copy

from ensemble_dfd import report
from ensemble_dfd.analysis import intervention as IV

FAST = ["--intervention-limit", "4", "--degradations", "blur", "--levels", "blur=2",
        "--no-progress"]


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.srcs: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        a = dict(attrs)
        if "src" in a:
            self.srcs.append(a["src"])
        if "href" in a:
            self.hrefs.append(a["href"])


def _parse(path: Path) -> _Parser:
    p = _Parser()
    p.feed(path.read_text())
    p.close()
    return p


@pytest.fixture(scope="module")
def reported(tiny_run, synthetic_dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("report") / "run"
    link_copy(tiny_run, run)
    assert report.main(["--run", str(run), "--data", str(synthetic_dataset), *FAST]) == 0
    return run


def test_files_and_columns(reported):
    out = reported / "report"
    for f in ("index.html", "per_image_test.csv", "hard_test.csv", "diversity_test.csv",
              "wrong_counts_test.csv", "attribution_test.csv", "attribution_rank_test.csv",
              "attribution_logit_test.csv", "intervention.csv", "summary.json", "env.json",
              "diversity_test.png", "wrong_counts_test.png", "error_by_bin_test.png",
              "intervention.png"):
        assert (out / f).is_file(), f
    info = json.loads((out / "summary.json").read_text())
    assert info["splits"] == ["test"] and info["models"] == ["M2", "M6"]
    per = pd.read_csv(out / "per_image_test.csv")
    assert list(per.columns[:2]) == ["path", "label"]
    assert {"M2", "M6", "pct_wrong", "pct_right", "ref"} <= set(per.columns)
    for learner in info["learners"]:
        assert set(per[learner]) <= {"TP", "TN", "FP", "FN"}
    assert set(per["M2"]) | set(per["M6"]) <= {"TP", "TN", "FP", "FN"}
    store = pd.read_parquet(reported / "logits.parquet")
    assert set(per["path"]) == set(store.loc[store.split == "test", "path"])
    hard = pd.read_csv(out / "hard_test.csv")
    assert {"ref", "file", "pct_wrong", "best_wrong", "right_models", "width", "height",
            "blur"} <= set(hard.columns)
    inter = pd.read_csv(out / "intervention.csv")
    assert set(inter["level"]) == {0, 1} and set(inter["degradation"]) == {"blur"}
    assert (inter["n"] == 4).all()
    assert {"M2", "M6", *info["learners"]} == set(inter["predictor"])
    assert inter["acc"].between(0, 1).all()
    assert not list(reported.glob(".report*"))  # no temp folders left


def test_html_opens_offline(reported):
    page = reported / "report" / "index.html"
    p = _parse(page)
    assert p.tags.get("table", 0) >= 3 and p.tags.get("img", 0) >= 4
    assert all(s.startswith("data:image/png;base64,") for s in p.srcs)  # no thumbnails
    assert not p.hrefs  # links to nothing
    text = page.read_text()
    assert "never be committed" in text and "http://" not in text and "https://" not in text


def test_refuses_to_overwrite(reported, synthetic_dataset, capsys):
    before = (reported / "report" / "index.html").stat().st_mtime_ns
    assert report.main(["--run", str(reported), "--no-intervention"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (reported / "report" / "index.html").stat().st_mtime_ns == before


def test_overwrite_and_thumbnails(reported, synthetic_dataset, tmp_path):
    run = tmp_path / "run"
    link_copy(reported, run)
    assert report.main(["--run", str(run), "--no-intervention", "--overwrite",
                        "--thumbnails", "--data", str(synthetic_dataset.parent),
                        "--hard-real", "0", "--hard-fake", "0"]) == 0
    out = run / "report"
    assert not (out / "intervention.csv").exists()
    p = _parse(out / "index.html")
    jpegs = [s for s in p.srcs if s.startswith("data:image/jpeg;base64,")]
    assert len(jpegs) == len(pd.read_csv(out / "hard_test.csv")) > 0
    assert "Do not commit this run folder" in (out / "index.html").read_text()


@pytest.mark.parametrize("extra,match", [
    (["--splits", "nosuch", "--no-intervention"], "no logits for split"),
    ([], "needs the images: pass --data"),
    (["--data", "{tmp}"], "not found under --data"),
    (["--data", "{tmp}/absent"], "no such folder"),
    (["--data", "{syn}", "--levels", "blur=x"], "levels must be numbers"),
    (["--data", "{syn}", "--levels", "fog=1"], "bad --levels"),
    (["--data", "{syn}", "--degradations", "jpeg", "--levels", "blur=1"], "not among"),
    (["--data", "{syn}", "--intervention-splits", "validation"], "not among the reported"),
    (["--no-intervention", "--hard-real", "1.5"], "share in"),
    (["--no-intervention", "--bins", "0"], "--bins"),
])
def test_bad_inputs_exit_2_and_write_nothing(tiny_run, synthetic_dataset, tmp_path, capsys,
                                             extra, match):
    run = tmp_path / "run"
    link_copy(tiny_run, run)
    args = [a.replace("{tmp}", str(tmp_path)).replace("{syn}", str(synthetic_dataset))
            for a in extra]
    assert report.main(["--run", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert match in err, err
    assert not (run / "report").exists()


def test_missing_run_and_missing_logits(tmp_path, capsys):
    assert report.main(["--run", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report.main(["--run", str(tmp_path / "empty"), "--no-intervention"]) == 2
    assert "no logits store" in capsys.readouterr().err


def test_intervention_without_trained_models(tiny_run, synthetic_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    link_copy(tiny_run, run)
    shutil.rmtree(run / "models" / "M2")
    assert report.main(["--run", str(run), "--data", str(synthetic_dataset), *FAST]) == 2
    assert "M2" in capsys.readouterr().err


def test_importing_the_report_does_not_load_tensorflow():
    code = ("import sys, ensemble_dfd.report, ensemble_dfd.analysis.intervention; "
            "print('tensorflow' in sys.modules or 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------
# pure helpers of the intervention study


def test_steps_and_levels():
    steps = IV.make_steps(["blur", "jpeg"], IV.parse_levels(["blur=2,4", "jpeg=30"]))
    assert [(s.degradation, s.level, s.value) for s in steps] == [
        ("blur", 0, 0.0), ("blur", 1, 2.0), ("blur", 2, 4.0), ("jpeg", 0, 0.0),
        ("jpeg", 1, 30.0)]
    assert len(IV.make_steps()) == 12  # defaults: 3 degradations x (original + 3)
    with pytest.raises(IV.InterventionError, match="at most 100"):
        IV.parse_levels(["jpeg=120"])
    with pytest.raises(IV.InterventionError, match="unknown degradation"):
        IV.make_steps(["fog"])


def test_resolve_files_by_folder_name(tmp_path):
    for name in ("dfd-mini", "faces"):
        (tmp_path / "data" / name / "test" / "Real").mkdir(parents=True)
        (tmp_path / "data" / name / "test" / "Real" / "a.jpg").write_bytes(b"x")
    paths = ["dfd-mini/test/Real/a.jpg", "faces/test/Real/a.jpg", "other/test/Real/a.jpg"]
    files, missing = IV.resolve_files(paths, [tmp_path / "data"])
    assert files[0].endswith("data/dfd-mini/test/Real/a.jpg")
    assert files[1].endswith("data/faces/test/Real/a.jpg")
    assert missing == ["other/test/Real/a.jpg"]
    files, missing = IV.resolve_files(paths[:2], [tmp_path / "data" / "dfd-mini",
                                                  tmp_path / "data" / "faces"])
    assert not missing


def test_subsample_is_balanced_and_deterministic():
    y = np.r_[np.ones(30, int), np.zeros(10, int)]
    idx = IV.subsample(y, 8, seed=1)
    assert idx.size == 8 and y[idx].sum() == 4
    assert np.array_equal(idx, IV.subsample(y, 8, seed=1))
    idx = IV.subsample(y, 30)
    assert y[idx].sum() == 20 and (y[idx] == 0).sum() == 10
    assert IV.subsample(y, None).size == 40


def test_degraded_batch_shares_the_original():
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (20, 24, 3), dtype=np.uint8) for _ in range(3)]
    steps = IV.make_steps(["blur", "downscale"], {"blur": [2], "downscale": [2]})
    b = IV.degraded_batch(imgs, steps, 16)
    assert b.shape == (4 * 3, 16, 16, 3) and b.dtype == np.uint8
    assert np.array_equal(b[0:3], b[6:9])  # both level-0 blocks are the originals
    assert not np.array_equal(b[0:3], b[3:6])
