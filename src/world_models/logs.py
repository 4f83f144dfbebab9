"""Training metrics: one JSONL file (the record) mirrored to TensorBoard, and PNG
curves."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from world_models.files import write_atomic_text

METRICS_FILENAME = "metrics.jsonl"


class MetricsLogger:
    """Appends ``{"step": s, **scalars}`` lines to ``directory/metrics.jsonl``.

    On resume, lines past the step being resumed from are dropped first
    (``truncate_after``), so a killed-then-resumed run leaves the same log as an
    uninterrupted one.
    """

    def __init__(self, directory: str | os.PathLike, tensorboard: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / METRICS_FILENAME
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(self.directory / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        kept = [row for row in read_metrics(self.path) if row["step"] <= step]
        write_atomic_text(self.path, "".join(json.dumps(row) + "\n" for row in kept))

    def log(self, step: int, **scalars: Any) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a metrics JSONL file; a torn last line (killed writer) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_curves(
    metrics_path: str | os.PathLike,
    keys: list[str],
    out_png: str | os.PathLike,
    title: str = "",
) -> None:
    """One line per metric key against step; keys absent from the log are skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        points = [(row["step"], row[key]) for row in rows if key in row]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, label=key, marker="." if len(points) < 30 else None)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
