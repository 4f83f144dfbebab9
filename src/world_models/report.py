"""``report.md`` for a run directory, rebuilt from what the stages left on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from world_models.config import load_run_config, write_atomic_text
from world_models.logs import read_metrics
from world_models.pipeline import STAGES


def _markers(run_dir: Path) -> list[dict[str, Any]]:
    folder = run_dir / "pipeline"
    if not folder.is_dir():
        return []
    records = [json.loads(p.read_text()) for p in folder.glob("round*_*.json")]
    order = {stage: i for i, stage in enumerate(STAGES)}
    return sorted(records, key=lambda r: (r["round"], order.get(r["stage"], len(order))))


def _latest(rows: list[dict[str, Any]], prefix: str) -> dict[str, tuple[int, float]]:
    """Each metric starting with ``prefix``: (step, value) of its last logged value."""
    latest: dict[str, tuple[int, float]] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(prefix):
                latest[key] = (row["step"], value)
    return latest


def _score(result: dict[str, Any] | None) -> str:
    if not result:
        return "–"
    return f"{result['mean']:.1f} ± {result['std']:.1f} (n={result['episodes']})"


def _links(run_dir: Path, pattern: str) -> list[str]:
    return [f"![{p.stem}]({p.relative_to(run_dir)})" if p.suffix in (".png", ".gif")
            else f"[{p.name}]({p.relative_to(run_dir)})"
            for p in sorted(run_dir.glob(pattern))]


def render_report(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    markers = _markers(run_dir)
    lines = [f"# World Models run: {run_dir.name}", "",
             f"Environment **{config.env_id}**, preset **{config.preset}**, "
             f"{config.pipeline.rounds} round(s). Full settings: [config.json](config.json).",
             ""]

    lines += ["## Data", "", "| round | policy | episodes | frames | return (mean ± std) |",
              "|---|---|---|---|---|"]
    for record in markers:
        if record["stage"] == "collect":
            for policy, s in record["summary"].items():
                lines.append(f"| {record['round']} | {policy} | {s['episodes']} | "
                             f"{s['frames']} | {s['return_mean']:.1f} ± {s['return_std']:.1f} |")
    lines.append("")

    lines += ["## Real score per round", "",
              f"Mean ± std over the same {config.eval.episodes} seeded episodes "
              f"(seeds {config.eval.seed}..{config.eval.seed + config.eval.episodes - 1}).",
              "", "| round | agent (dream-trained C) | brownian | zero controller "
              "| kept C: generation (its selection score) |", "|---|---|---|---|---|"]
    baselines: dict[str, Any] = {}
    searches = {r["round"]: r["summary"] for r in markers if r["stage"] == "dream"}
    for record in markers:
        if record["stage"] == "test":
            baselines.update({k: v for k, v in record["summary"].items() if k != "agent"})
            search = searches.get(record["round"], {})
            kept = (f"{search['best_generation']} ({search['best_real_score']:.1f})"
                    if "best_generation" in search else "–")
            lines.append(f"| {record['round']} | {_score(record['summary'].get('agent'))} | "
                         f"{_score(baselines.get('brownian'))} | "
                         f"{_score(baselines.get('zero'))} | {kept} |")
    lines.append("")

    lines += ["## Training", ""]
    for name, title in (("vae", "V (ConvVAE)"), ("rnn", "M (MDN-RNN)"),
                        ("dream", "C (CMA-ES in the dream)")):
        rows = read_metrics(run_dir / name / "metrics.jsonl")
        if not rows:
            continue
        lines.append(f"### {title}")
        lines.append("")
        for prefix in ("train_", "val_", "dream_", "real_", "best_"):
            latest = _latest(rows, prefix)
            if latest:
                values = ", ".join(f"{k} {v:.4g} (step {step})"
                                   for k, (step, v) in sorted(latest.items()))
                lines.append(f"- {prefix.rstrip('_')}: {values}")
        lines.append("")
        lines += _links(run_dir, f"{name}/*.png")
        lines.append("")

    lines += ["## Wall time per stage", "", "| round | stage | seconds |", "|---|---|---|"]
    lines += [f"| {r['round']} | {r['stage']} | {r['seconds']:.1f} |" for r in markers]
    lines += [f"| all | total | {sum(r['seconds'] for r in markers):.1f} |", ""]

    error_tables = sorted(run_dir.glob("model_error/pixel_h*/summary.md"))
    if error_tables:
        lines += ["## World-model prediction error (pixel MSE, 84×84 grayscale)", ""]
        for table in error_tables:
            lines += [f"From `{table.relative_to(run_dir)}`:", "", table.read_text(), ""]
            lines += _links(run_dir, f"{table.parent.relative_to(run_dir)}/*.png")[:2]
            lines.append("")

    videos = _links(run_dir, "eval/*.mp4") + _links(run_dir, "eval/*.gif")
    if videos:
        lines += ["## Videos", ""] + videos + [""]
    return "\n".join(lines)


def write_report(run_dir: str | Path) -> Path:
    path = Path(run_dir) / "report.md"
    write_atomic_text(path, render_report(run_dir))
    return path
