"""Comparing world models by their pixel MSE per horizon (result pickles of any
tool)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from world_models.evaluation.safe_pickle import load_mse_curve

# ------------------------------------------------------------ comparison


def comparison_rows(
    labels: Sequence[str], curves: Sequence[np.ndarray]
) -> list[dict[str, Any]]:
    """Per-horizon rows over the common range: each model's MSE, the difference and
    ratio of every other model to the first, and the best (lowest-MSE) label."""
    if len(labels) != len(curves) or len(curves) < 2:
        raise ValueError("need at least two curves, one label each")
    common = min(len(curve) for curve in curves)
    rows = []
    for horizon in range(common):
        values = [float(curve[horizon]) for curve in curves]
        reference = values[0]
        row: dict[str, Any] = {"horizon": horizon, "mse": dict(zip(labels, values))}
        row["difference"] = {
            label: value - reference for label, value in zip(labels[1:], values[1:])
        }
        row["ratio"] = {
            label: value / reference if reference > 0 else math.nan
            for label, value in zip(labels[1:], values[1:])
        }
        best = min(values)
        winners = [label for label, value in zip(labels, values) if value == best]
        row["better"] = winners[0] if len(winners) == 1 else "tie"
        rows.append(row)
    return rows


def comparison_markdown(
    labels: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> str:
    """Markdown table of ``comparison_rows``."""
    reference = labels[0]
    head = ["horizon", *labels]
    for label in labels[1:]:
        head += [f"{label} − {reference}", f"{label} / {reference}"]
    head.append("better")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row["horizon"])] + [f"{row['mse'][label]:.2f}" for label in labels]
        for label in labels[1:]:
            ratio = row["ratio"][label]
            cells += [
                f"{row['difference'][label]:+.2f}",
                "—" if math.isnan(ratio) else f"{ratio:.3f}",
            ]
        cells.append(row["better"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_mse_curves(
    labels: Sequence[str],
    curves: Sequence[np.ndarray],
    out_png: Path,
    title: str = "MSE per horizon (84x84 grayscale, 0-255)",
    zoom: int = 20,
) -> None:
    """Two panels: every curve over its full range, and zoomed on horizons 0..zoom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, limit in zip(axes, (None, zoom)):
        for label, curve in zip(labels, curves):
            shown = curve if limit is None else curve[: limit + 1]
            axis.plot(np.arange(len(shown)), shown, marker=".", label=label)
        axis.set_xlabel("horizon (steps after the start frame)")
        axis.set_ylabel("pixel MSE")
        axis.set_title("full range" if limit is None else f"first {zoom} steps")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=110)
    plt.close(figure)


def plot_ratios(
    labels: Sequence[str], rows: Sequence[Mapping[str, Any]], out_png: Path
) -> None:
    """Ratio of every other model's MSE to the first model's, per horizon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    horizons = [row["horizon"] for row in rows]
    for label in labels[1:]:
        axis.plot(
            horizons,
            [row["ratio"][label] for row in rows],
            marker=".",
            label=f"{label} / {labels[0]}",
        )
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xlabel("horizon")
    axis.set_ylabel("MSE ratio (< 1: better than " + labels[0] + ")")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=110)
    plt.close(figure)


def compare_result_files(
    paths: Sequence[str | os.PathLike],
    labels: Sequence[str] | None,
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Compare result pickles: plots, Markdown table and JSON in ``out_dir``."""
    paths = [Path(path) for path in paths]
    labels = list(labels) if labels else [path.stem for path in paths]
    if len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} files")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {labels}")
    curves = [load_mse_curve(path) for path in paths]
    rows = comparison_rows(labels, curves)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_mse_curves(labels, curves, out_dir / "model_comparison_plot.png")
    plot_ratios(labels, rows, out_dir / "model_comparison_ratio.png")
    markdown = comparison_markdown(labels, rows)
    lengths = {label: len(curve) for label, curve in zip(labels, curves)}
    note = (
        f"Compared over horizons 0..{len(rows) - 1} (common range; lengths "
        f"{lengths}). Index 0 is the start frame.\n\n"
    )
    (out_dir / "model_comparison.md").write_text(note + markdown)
    summary = {
        "files": [str(p) for p in paths],
        "labels": labels,
        "lengths": lengths,
        "rows": rows,
    }
    (out_dir / "model_comparison.json").write_text(
        json.dumps(summary, indent=2, allow_nan=True)
    )
    summary["markdown"] = note + markdown
    return summary
