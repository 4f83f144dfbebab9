"""The pipeline's stage markers: ``pipeline/roundK_STAGE.json`` records that a stage
of round K finished, with its wall time and summary. The pipeline writes them and skips
what they mark; the report reads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STAGES = ("collect", "vae", "encode", "rnn", "dream", "test")


def marker_path(run_dir: Path, round_index: int, stage: str) -> Path:
    return run_dir / "pipeline" / f"round{round_index}_{stage}.json"


def read_marker(run_dir: Path, round_index: int, stage: str) -> dict[str, Any] | None:
    path = marker_path(run_dir, round_index, stage)
    return json.loads(path.read_text()) if path.exists() else None


def read_markers(run_dir: Path) -> list[dict[str, Any]]:
    """Every marker of the run, by round and then in stage order (others last)."""
    folder = run_dir / "pipeline"
    if not folder.is_dir():
        return []
    records = [json.loads(p.read_text()) for p in folder.glob("round*_*.json")]
    order = {stage: i for i, stage in enumerate(STAGES)}
    return sorted(
        records, key=lambda r: (r["round"], order.get(r["stage"], len(order)))
    )
