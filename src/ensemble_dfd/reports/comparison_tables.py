"""The stack step's comparison (stack/comparison.csv) as display tables for the report: one
table per level, source and split, cells formatted like comparison.md (value [95% CI])."""

from __future__ import annotations

import pandas as pd

from ensemble_dfd.reports.tables import fmt_ci, fmt_value

# (header, column, with its CI) in display order: the differences next to the metrics
_COLUMNS = (("ACC [95% CI]", "acc", True), ("AUC [95% CI]", "auc", True),
            ("ΔACC [95% CI]", "d_acc", True), ("ΔAUC [95% CI]", "d_auc", True),
            ("detectable ΔACC", "mdd_acc", False), ("detectable ΔAUC", "mdd_auc", False),
            ("McNemar p", "mcnemar_p", False), ("AP [95% CI]", "ap", True),
            ("EER", "eer", False), ("MCC [95% CI]", "mcc", True), ("TP", "tp", False),
            ("TN", "tn", False), ("FP", "fp", False), ("FN", "fn", False),
            ("TPR", "tpr", False), ("TNR", "tnr", False), ("PPV", "ppv", False),
            ("NPV", "npv", False), ("F1", "f1", False), ("log-loss", "logloss", False),
            ("Brier", "brier", False), ("ECE", "ece", False))


def _cell(r: pd.Series, c: str, ci: bool) -> str:
    if ci:
        return fmt_ci(r[c], r.get(f"{c}_lo"), r.get(f"{c}_hi"), 3)
    if c in ("tp", "tn", "fp", "fn"):
        return fmt_value(int(r[c]))
    return fmt_value(r[c], 4 if c == "mcnemar_p" else 3)


def display_table(part: pd.DataFrame) -> pd.DataFrame:
    """One split's rows as strings: predictor (best single marked), kind, the metrics with
    CIs, the differences to the best single model beside them, the split's detectable
    difference and McNemar p, then the rest. Columns absent from `part` are left out."""
    rows = []
    for _, r in part.iterrows():
        best = "vs" in r.index and r["predictor"] == r["vs"]
        out = {"predictor": f"{r['predictor']}{' (best single)' if best else ''}",
               "kind": r["kind"]}
        out |= {h: _cell(r, c, ci) for h, c, ci in _COLUMNS if c in r.index}
        rows.append(out)
    return pd.DataFrame(rows)


def table_groups(comparison: pd.DataFrame) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(level, source, split, rows) for every group of the table, frame level and all
    sources first; tables written before `level`/`source` existed are frame/all."""
    df = comparison.copy()
    df["level"] = df["level"].fillna("frame") if "level" in df.columns else "frame"
    df["source"] = df["source"].fillna("all") if "source" in df.columns else "all"
    levels = sorted(df["level"].astype(str).unique(), key=lambda v: (v != "frame", v))
    out = []
    for level in levels:
        at = df[df["level"].astype(str) == level]
        sources = sorted(at["source"].astype(str).unique(), key=lambda v: (v != "all", v))
        for source in sources:
            part = at[at["source"].astype(str) == source]
            for split, rows in part.groupby("split", sort=False):
                out.append((level, source, str(split), rows))
    return out


def group_caption(level: str, source: str, split: str, rows: pd.DataFrame) -> str:
    """`test, frame level, all sources: 201 images in 61 groups (…)`."""
    r = rows.iloc[0]
    unit = "videos" if level == "video" else "images"
    counts = f"{int(r['n'])} {unit}"
    if "n_groups" in r.index:
        counts += f" in {int(r['n_groups'])} groups"
    if "n_real" in r.index and "n_fake" in r.index:
        counts += f" ({int(r['n_real'])} real, {int(r['n_fake'])} fake)"
    who = "all sources" if source == "all" else f"source {source}"
    vs = f"; Δ vs {r['vs']}" if "vs" in r.index else ""
    return f"{split}, {level} level, {who}: {counts}{vs}"
