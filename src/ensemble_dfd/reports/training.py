"""Training outputs: curves with the fine-tuning start marked, and the study-style table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ensemble_dfd.runio import atomic_write


def plot_curves(history: pd.DataFrame, out: Path, title: str) -> Path:
    """Accuracy and loss per epoch, train vs validation, a line where phase 2 begins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        ax.plot(history["epoch"], history[metric], marker="o", label=f"train {metric}")
        ax.plot(history["epoch"], history[f"val_{metric}"], marker="o", label=f"val {metric}")
        phase2 = history.loc[history["phase"] == 2, "epoch"]
        if len(phase2) and (history["phase"] == 1).any():
            ax.axvline(phase2.min() - 0.5, color="grey", linestyle="--", label="start fine-tuning")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(out, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return out


def accuracy_table(histories: dict[str, pd.DataFrame],
                   test_acc: dict[str, float] | None = None) -> pd.DataFrame:
    """The study's table: train/val accuracy at the end of phase 1 and of phase 2, and test."""
    rows = []
    for ref, h in histories.items():
        p1 = h[h["phase"] == 1]
        last1 = p1.iloc[-1] if len(p1) else None
        last = h.iloc[-1]
        rows.append({
            "ref": ref,
            "epoch_phase1": int(last1["epoch"]) if last1 is not None else 0,
            "train_acc_phase1": float(last1["accuracy"]) if last1 is not None else float("nan"),
            "val_acc_phase1": float(last1["val_accuracy"]) if last1 is not None else float("nan"),
            "epoch_final": int(last["epoch"]),
            "train_acc_final": float(last["accuracy"]),
            "val_acc_final": float(last["val_accuracy"]),
            "best_val_acc": float(h["val_accuracy"].max()),
            "test_acc": (test_acc or {}).get(ref, float("nan")),
            "train_minutes": round(float(h["seconds"].sum()) / 60, 2),
            "train_images_per_s": round(float(h["images_per_second"].median()), 1),
        })
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A plain Markdown table (no optional dependency such as tabulate)."""
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return "" if pd.isna(v) else format(v, floatfmt)
        return str(v)
    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"
