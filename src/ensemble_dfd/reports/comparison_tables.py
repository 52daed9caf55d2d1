"""The stack step's comparison (stack/comparison.csv) as display tables for the report: one
table per level, source and split, cells formatted like comparison.md (value [95% CI])."""

from __future__ import annotations

import pandas as pd

from ensemble_dfd.reports.tables import fmt_ci, fmt_value

# (header, column) for values shown alone; (header, column) for value [lo, hi]
_COUNTS = ("tp", "tn", "fp", "fn")
_PLAIN = (("TPR", "tpr"), ("TNR", "tnr"), ("PPV", "ppv"), ("NPV", "npv"), ("F1", "f1"))
_WITH_CI = (("ACC [95% CI]", "acc"), ("MCC [95% CI]", "mcc"), ("AUC [95% CI]", "auc"),
            ("AP [95% CI]", "ap"))
_AFTER = (("EER", "eer"), ("log-loss", "logloss"), ("Brier", "brier"), ("ECE", "ece"))
_DELTAS = (("ΔACC [95% CI]", "d_acc"), ("ΔAUC [95% CI]", "d_auc"))


def _ci(r: pd.Series, c: str, digits: int = 3) -> str:
    return fmt_ci(r[c], r.get(f"{c}_lo"), r.get(f"{c}_hi"), digits)


def display_table(part: pd.DataFrame) -> pd.DataFrame:
    """One split's rows as strings: predictor (best single starred), kind, counts, metrics
    with CIs, differences to the best single model, McNemar p and the detectable
    difference when the table has them. Columns absent from `part` are left out."""
    rows = []
    for _, r in part.iterrows():
        best = "vs" in r.index and r["predictor"] == r["vs"]
        out = {"predictor": f"{r['predictor']}{' (best single)' if best else ''}",
               "kind": r["kind"]}
        out |= {c.upper(): fmt_value(int(r[c])) for c in _COUNTS if c in r.index}
        head = _WITH_CI[:1] + tuple((h, c) for h, c in _PLAIN) + _WITH_CI[1:]
        for h, c in head + _AFTER:
            if c in r.index:
                out[h] = _ci(r, c) if (h, c) in _WITH_CI else fmt_value(r[c])
        for h, c in _DELTAS:
            if c in r.index:
                out[h] = _ci(r, c)
        if "mcnemar_p" in r.index:
            out["McNemar p"] = fmt_value(r["mcnemar_p"], 4)
        for c in ("mdd_acc", "mdd_auc"):
            if c in r.index:
                out[f"detectable {c[4:].upper()}"] = fmt_value(r[c])
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
