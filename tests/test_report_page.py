"""The report page answers first: `answers()` on planted comparison tables (with and without
claims.json, level/source rows), the degradation answer, the comparison tables and the
forest plot, and the page of a small synthetic run opened in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import chrome_driver, link_copy

from ensemble_dfd import report, stack
from ensemble_dfd.analysis.answers import answers, degradation_answer, evaluation_splits
from ensemble_dfd.reports.comparison_tables import display_table, table_groups
from ensemble_dfd.stacking import power
from ensemble_dfd.stacking.logits import write_store
from ensemble_dfd.stacking.synthetic_logits import make_store

# ---------------------------------------------------------------------------------------
# planted comparison tables


def _row(split: str, predictor: str, kind: str, d_acc: tuple[float, float, float],
         n: int = 3000, n_groups: int = 1500, **extra) -> dict:
    v, lo, hi = d_acc
    return {"split": split, "predictor": predictor, "kind": kind, "n": n,
            "n_groups": n_groups, "n_real": n // 2, "n_fake": n - n // 2, "vs": "M1",
            "acc": 0.8 + v, "acc_lo": 0.78 + v, "acc_hi": 0.82 + v,
            "d_acc": v, "d_acc_lo": lo, "d_acc_hi": hi,
            "d_auc": v / 2, "d_auc_lo": lo / 2, "d_auc_hi": hi / 2} | extra


def _split(split: str, e1: tuple, e2: tuple, **kw) -> list[dict]:
    """M1 (best single), M2 and two ensembles E1, E2 on one split."""
    return [_row(split, "M1", "single", (0.0, 0.0, 0.0), **kw),
            _row(split, "M2", "single", (-0.05, -0.08, -0.02), **kw),
            _row(split, "E1", "ensemble", e1, **kw),
            _row(split, "E2", "ensemble", e2, **kw)]


BEATS = (0.04, 0.02, 0.06)
HOLDS_ZERO = (0.01, -0.01, 0.03)


def _planted(mdd_small: float = 0.11) -> pd.DataFrame:
    """E1 beats M1 on both large splits; E2 only on one; the small split (mdd 0.11) has E1
    below 0 and must not count; validation_oof (E2 far ahead) must not count either."""
    rows = (_split("validation_oof", BEATS, (0.2, 0.1, 0.3), mdd_acc=0.02)
            + _split("test", BEATS, BEATS, mdd_acc=0.02)
            + _split("dfdc20k", BEATS, HOLDS_ZERO, mdd_acc=0.025)
            + _split("small", (-0.05, -0.12, 0.02), BEATS, n=201, n_groups=61,
                     mdd_acc=mdd_small))
    return pd.DataFrame(rows)


def test_an_ensemble_that_beats_and_one_that_does_not():
    [a] = answers(_planted())
    assert a.key == "ensembles" and a.verdict == "yes"
    # power.py's headline: the claim rule has one owner
    assert "E1 beats the best single model (M1)" in a.headline
    assert "E2" not in a.headline
    assert "(test, dfdc20k)" in a.headline
    assert "too small: small (201 faces, 61 groups; can detect ΔACC >= 0.110)" in a.headline
    assert any(d.startswith("E2: CI above 0 on test but not on dfdc20k") for d in a.details)
    t = a.table.set_index("split")
    assert list(t.index) == ["test", "dfdc20k", "small"]  # validation_oof is not evaluation
    assert t.loc["small", "large enough (≤ 3 pts)"] == "no"
    assert t.loc["test", "large enough (≤ 3 pts)"] == "yes"
    assert t.loc["test", "ΔACC pts [95% CI]"] == "+4.0 [+2.0, +6.0]"
    assert t.loc["test", "ΔAUC [95% CI]"] == "+0.020 [+0.010, +0.030]"
    assert t.loc["dfdc20k", "CI above 0 (ACC)"] == "E1"
    assert t.loc["test", "CI above 0 (ACC)"] == "E1, E2"
    assert "video ΔACC pts" not in t.columns  # no video rows: no video columns


def test_no_ensemble_beats_when_one_large_split_holds_zero():
    df = _planted()
    df.loc[(df.split == "dfdc20k") & (df.predictor == "E1"), ["d_acc_lo"]] = -0.001
    [a] = answers(df)
    assert a.verdict == "no"
    assert a.headline.startswith("No ensemble beats the best single model (M1) on every "
                                 "evaluation split large enough to tell (test, dfdc20k)")


def test_every_split_too_small_is_undecided():
    df = _planted()
    df["mdd_acc"] = 0.2
    [a] = answers(df)
    assert a.verdict == "undecided"
    assert a.headline.startswith("No evaluation split is large enough to tell whether an "
                                 "ensemble beats the best single model (M1); too small: "
                                 "test (3000 faces, 1500 groups; can detect ΔACC >= 0.200)")
    # a larger minimum effect of interest makes them large enough
    [b] = answers(df, min_effect=0.25)
    assert b.verdict == "no"  # E1 is below 0 on `small`, E2 holds 0 on dfdc20k


def test_without_mdd_column_the_power_is_unknown_not_estimated():
    df = _planted().drop(columns="mdd_acc")
    _, _, infos = evaluation_splits(df)
    assert [i.split for i in infos] == ["test", "dfdc20k", "small"]
    assert all(np.isnan(i.mdd_acc) and i.large_enough is None for i in infos)
    [a] = answers(df)
    assert a.verdict == "undecided"
    assert a.headline.startswith("The split power is unknown")
    assert "re-run `python -m ensemble_dfd.stack --overwrite`" in a.headline
    t = a.table.set_index("split")
    assert t.loc["test", "detectable ΔACC (pts)"] == "—"
    assert t.loc["test", "large enough (≤ 3 pts)"] == "unknown"
    assert t.loc["test", "ΔACC pts [95% CI]"] == "+4.0 [+2.0, +6.0]"  # the CIs still shown


def test_answer_is_power_claims():
    """Without claims.json the answer is exactly power.claims on the table."""
    df = _planted().assign(mdd_auc=0.02)
    c = power.claims(df, "M1", exclude=("validation", "validation_oof"))
    [a] = answers(df)
    assert a.headline == c["headline"]
    assert [a2.headline for a2 in answers(df, c)] == [c["headline"]]


def test_claims_json_wins_over_the_derivation():
    df = _planted()
    claims = {"best_single": "M1", "min_effect": 0.03,
              "splits": {"test": {"level": "frame", "n": 3000, "n_groups": 1500,
                                  "mdd_acc": 0.02, "large_enough": True},
                         "dfdc20k": {"level": "frame", "n": 3000, "n_groups": 1500,
                                     "mdd_acc": 0.05, "large_enough": False},
                         "small": {"level": "frame", "n": 201, "n_groups": 61,
                                   "mdd_acc": 0.11, "large_enough": False}},
              "predictors": {"E1": {"beats_best": False, "supported_on": ["test"],
                                    "not_supported_on": [], "too_small": ["dfdc20k"]},
                             "E2": {"beats_best": True, "supported_on": ["test"],
                                    "not_supported_on": [],
                                    "too_small": ["dfdc20k", "small"]}},
              "headline": "E2 beats the best single model (M1) on test; too small: dfdc20k "
                          "(3000 faces, 1500 groups), small (201 faces, 61 groups)."}
    [a] = answers(df, claims)
    assert a.headline == claims["headline"]
    assert a.verdict == "yes"
    t = a.table.set_index("split")
    assert t.loc["dfdc20k", "large enough (≤ 3 pts)"] == "no"  # claims' power, not the csv's
    assert t.loc["dfdc20k", "detectable ΔACC (pts)"] == "5.0"
    # an empty claims object is the same as none
    assert answers(df, {})[0].headline == answers(df)[0].headline


def test_level_and_source_rows_headline_is_frame_all_video_shown_beside():
    frame = _planted()
    frame["level"], frame["source"] = "frame", "all"
    video = _planted().assign(level="video", source="all", n=600, n_groups=300)
    video[["d_acc", "d_acc_lo", "d_acc_hi"]] = [0.09, 0.07, 0.11]
    per_source = _planted().assign(level="frame", source="FaceSwap")
    per_source[["d_acc_lo"]] = -0.5  # would turn the answer to "no" if it were used
    df = pd.concat([video, per_source, frame], ignore_index=True)
    [a] = answers(df)
    assert a.verdict == "yes" and "E1 beats" in a.headline
    t = a.table.set_index("split")
    assert t.loc["test", "faces"] == 3000  # frame rows
    assert t.loc["test", "video ΔACC pts"] == "+9.0 [+7.0, +11.0]"
    assert any("video level ΔACC +9.0 [+7.0, +11.0] pts" in d for d in a.details)
    groups = [(lv, src, sp) for lv, src, sp, _ in table_groups(df)]
    assert groups[0] == ("frame", "all", "validation_oof")
    assert groups.index(("frame", "FaceSwap", "test")) < groups.index(("video", "all", "test"))
    assert groups.index(("frame", "all", "small")) < groups.index(("frame", "FaceSwap", "test"))


def test_bad_tables_and_no_evaluation_split():
    with pytest.raises(ValueError, match="lacks column.*d_acc_lo"):
        answers(_planted().drop(columns="d_acc_lo"))
    only_fit = _planted()
    [a] = answers(only_fit[only_fit.split == "validation_oof"])
    assert a.verdict == "undecided" and "No evaluation split" in a.headline


def test_display_table_formats_like_comparison_md():
    part = _planted()
    part = part[part.split == "test"]
    d = display_table(part)
    assert d.loc[0, "predictor"] == "M1 (best single)"
    assert d.loc[2, "ΔACC [95% CI]"] == "0.040 [0.020, 0.060]"
    assert d.loc[2, "ACC [95% CI]"] == "0.840 [0.820, 0.860]"
    assert "AP [95% CI]" not in d.columns and d.loc[0, "detectable ΔACC"] == "0.020"
    assert list(d.columns[:6]) == ["predictor", "kind", "ACC [95% CI]", "ΔACC [95% CI]",
                                   "ΔAUC [95% CI]", "detectable ΔACC"]  # planted: no AUC


def _inter(levels=(0, 1, 2)) -> pd.DataFrame:
    rows = []
    for deg, unit, values in (("blur", "sigma px", (0.0, 2.0, 4.0)),
                              ("jpeg", "quality", (0.0, 50.0, 10.0))):
        for lvl in levels:
            for name, kind, drop in (("M1", "single", 0.1), ("M2", "single", 0.3),
                                     ("M3", "single", -0.02), ("stack_lr", "ensemble", 0.05)):
                rows.append({"split": "test", "degradation": deg, "unit": unit, "level": lvl,
                             "value": values[lvl], "predictor": name, "kind": kind, "n": 40,
                             "acc": 0.9 - drop * lvl / 2, "auc": 0.95 - drop * lvl / 4,
                             "tpr": 0.9, "tnr": 0.9})
    return pd.DataFrame(rows)


def test_degradation_answer():
    a = degradation_answer(_inter(), "M1", "stack_lr")
    assert a.verdict == "measured"
    assert a.headline == ("At the strongest level tested on test (40 images), median "
                          "accuracy change of the base models: blur -10.0 pts, jpeg "
                          "compression -10.0 pts.")
    assert a.details[0] == ("test, Blur (sigma px = 4), n=40: M1 accuracy 0.900 → 0.800 (AUC "
                            "0.950 → 0.900); stack_lr accuracy 0.900 → 0.850 (AUC 0.950 → "
                            "0.925); base models' accuracy change median -10.0 pts (2 of 3 "
                            "lose).")
    none = degradation_answer(None, "M1", "stack_lr")
    assert none.verdict == "not measured" and "study was not run" in none.headline


def test_forest_figure_one_panel_per_split(tmp_path):
    from ensemble_dfd.reports.figures import forest_figure, save_figure

    df = _planted()
    df = df[df.split != "validation_oof"]
    fig = forest_figure(df, df.assign(d_acc=0.1), "M1", {"small": "too small"}, "t",
                        {"test": 0.02})
    axes = [ax for sf in fig.subfigs if sf.get_visible() for ax in sf.axes]
    assert len(axes) == 2 * 3
    titles = [sf._suptitle.get_text() for sf in fig.subfigs if sf.get_visible()]
    assert titles == ["test", "dfdc20k", "small (too small)"]
    ytick = [t.get_text() for t in axes[0].get_yticklabels()]
    assert ytick == ["M1", "M2", "E1", "E2"]
    out = save_figure(fig, tmp_path / "f.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_claims_json_names_the_file(tmp_path):
    run = tmp_path / "run"
    (run / "stack").mkdir(parents=True)
    _planted().to_csv(run / "stack" / "comparison.csv", index=False)
    (run / "stack" / "claims.json").write_text("{not json")
    from ensemble_dfd.rundir import Run

    with pytest.raises(report.ReportError, match=r"claims\.json: not readable JSON"):
        report.read_stack_tables(Run(run))
    (run / "stack" / "claims.json").write_text("[1, 2]")
    with pytest.raises(report.ReportError, match="expected a JSON object"):
        report.read_stack_tables(Run(run))
    _planted().drop(columns="d_auc_hi").to_csv(run / "stack" / "comparison.csv", index=False)
    with pytest.raises(report.ReportError, match=r"comparison\.csv: lacks column\(s\) d_auc_hi"):
        report.read_stack_tables(Run(run))


# ---------------------------------------------------------------------------------------
# the page of a small run (synthetic logits, stack, report without images or models)



@pytest.fixture(scope="module")
def small_report(tmp_path_factory) -> Path:
    """A logits store (4 synthetic models, 2 evaluation splits), stacked, then reported
    with --no-intervention: no images, no trained models."""
    run = tmp_path_factory.mktemp("report_page") / "run"
    logits, images = make_store(n_models=4, sizes={"validation": 240, "test": 240,
                                                   "wild": 40},
                                strength=[0.9, 0.6, 0.6, 0.0], seed=3)
    write_store(run, logits, images)
    assert stack.main(["--run", str(run), "--bootstrap", "200",
                       "--learners", "soft_vote,stack_lr"]) == 0
    assert report.main(["--run", str(run), "--no-intervention"]) == 0
    return run


def test_page_order_and_summary(small_report):
    page = (small_report / "report" / "index.html").read_text()
    ans, forest = page.index('id="headline-ensembles"'), page.index('id="figure-ensembles"')
    comp, details = page.index('id="comparison"'), page.index('id="details"')
    assert ans < forest < comp < details < page.index("Oracle accuracy")
    comp = pd.read_csv(small_report / "stack" / "comparison.csv")
    groups = table_groups(comp)
    assert page.count("<details>") == len({(lv, src) for lv, src, _, _ in groups})
    assert page.count('<p class="caption">') == len(groups) >= 3  # a table per split
    assert "http://" not in page and "https://" not in page
    info = json.loads((small_report / "report" / "summary.json").read_text())
    assert [a["key"] for a in info["answers"]] == ["ensembles", "degradation"]
    assert info["answers"][1]["verdict"] == "not measured"
    assert (small_report / "report" / "forest.png").is_file()


def test_page_uses_claims_json_and_level_source_rows(small_report, tmp_path):
    """claims.json's headline on the page; comparison.csv with level/source columns gives
    video-level numbers beside the headline's and one table per level, source and split."""
    run = link_copy(small_report, tmp_path / "run")
    claims = json.loads((run / "stack" / "claims.json").read_text())  # the stack's
    assert claims["splits"]  # the page's splits and their power come from here
    claims["headline"] = "Planted headline from claims.json."
    (run / "stack" / "claims.json").unlink()  # a hard link: replace, never write through
    (run / "stack" / "claims.json").write_text(json.dumps(claims))
    comp = pd.read_csv(run / "stack" / "comparison.csv")
    for col, keep in (("level", "frame"), ("source", "all")):  # stack may write them
        comp = comp[comp[col] == keep] if col in comp.columns else comp
    video = comp.assign(level="video", source="all", d_acc=0.1234, d_acc_lo=0.1, d_acc_hi=0.15)
    per_source = comp.assign(level="frame", source="synthetic")
    comp = pd.concat([comp.assign(level="frame", source="all"), video, per_source])
    (run / "stack" / "comparison.csv").unlink()  # a hard link: replace, never write through
    comp.to_csv(run / "stack" / "comparison.csv", index=False)
    assert report.main(["--run", str(run), "--no-intervention", "--overwrite",
                        "--splits", "test"]) == 0
    page = (run / "report" / "index.html").read_text()
    assert "Planted headline from claims.json." in page
    assert "video ΔACC pts" in page and "+12.3 [+10.0, +15.0]" in page
    assert page.count("<details>") == 3  # frame all, frame per source, video all
    assert page.count('<p class="caption">') == 3 * 3  # each with its 3 splits
    assert "Video level, all sources: validation_oof, test, wild" in page
    assert "test, frame level, source synthetic" in page


def test_answers_on_the_first_screen_in_chromium(small_report, tmp_path):
    """Headless Chromium at 1280x900: the headline answer and the forest plot (decoded,
    non-empty) are on the first screen; the raw statistics come after it."""
    with chrome_driver(tmp_path / "profile", "--window-size=1280,900") as driver:
        from selenium.webdriver.common.by import By

        driver.get((small_report / "report" / "index.html").resolve().as_uri())
        screen = driver.execute_script("return window.innerHeight")
        head = driver.find_element(By.ID, "headline-ensembles")
        badge, _, text = head.text.partition(" ")
        assert badge in ("YES", "NO", "UNDECIDED") and "best single model (M1)" in text
        img = driver.find_element(By.ID, "figure-ensembles")
        assert driver.execute_script("return arguments[0].complete && "
                                     "arguments[0].naturalWidth", img) > 100
        top = lambda el: driver.execute_script(  # noqa: E731
            "return arguments[0].getBoundingClientRect().top", el)
        bottom = driver.execute_script("return arguments[0].getBoundingClientRect().bottom",
                                       head)
        assert top(head) >= 0 and bottom <= screen
        assert top(img) < screen and img.size["height"] > 150
        stats = driver.find_element(By.ID, "details")
        assert top(stats) > top(img)
        assert np.isfinite(top(stats))
        assert driver.find_element(By.ID, "headline-degradation").text.startswith(
            "NOT MEASURED The controlled degradation study was not run")
