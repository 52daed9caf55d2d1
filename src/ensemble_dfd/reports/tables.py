"""Table writers: CSV and dependency-free Markdown, written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ensemble_dfd.runio import atomic_write, write_text


def fmt_value(v, digits: int = 3) -> str:
    """Numbers with `digits` decimals, ints as ints, NaN/None as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu"):
        return str(int(v))
    if isinstance(v, float) or hasattr(v, "dtype"):
        f = float(v)
        if math.isnan(f):
            return "—"
        return f"{f:.{digits}f}"
    return str(v).replace("|", "\\|")


def fmt_ci(v, lo, hi, digits: int = 3) -> str:
    """`0.812 [0.780, 0.840]`; the bracket is left out when the interval is undefined."""
    s = fmt_value(v, digits)
    if lo is None or hi is None or any(math.isnan(float(x)) for x in (lo, hi)):
        return s
    return f"{s} [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"


def write_csv(path: str | Path, df: pd.DataFrame, float_format: str | None = None) -> Path:
    return atomic_write(path, lambda p: df.to_csv(p, index=False, float_format=float_format))


def write_markdown(path: str | Path, text: str) -> Path:
    return write_text(path, text)
