"""``report.md`` for a run directory, rebuilt from what the stages left on disk."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from world_models.evaluation.calibration import (
    PLOT_NAME,
    calibration_section,
    write_calibration_plot,
)
from world_models.files import write_atomic_text
from world_models.logs import read_metrics
from world_models.pipeline.candidates import chosen_folder, load_candidates
from world_models.pipeline.finalists_section import finalists_section
from world_models.pipeline.markers import read_markers
from world_models.pipeline.round_choice import round_choice_section
from world_models.run_directory import ENVIRONMENT_FILENAME, load_run_config
from world_models.stats import paired_difference, summarize


def _latest(rows: list[dict[str, Any]], prefix: str) -> dict[str, tuple[int, float]]:
    """Each metric starting with ``prefix``: (step, value) of its last logged value."""
    latest: dict[str, tuple[int, float]] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(prefix):
                latest[key] = (row["step"], value)
    return latest


def eval_results(run_dir: Path, name: str) -> list[dict[str, Any]] | None:
    """Per-seed results of eval/NAME.json (evaluate_agent.py), None if not there."""
    path = run_dir / "eval" / f"{name}.json"
    return json.loads(path.read_text())["results"] if path.exists() else None


def _score(
    result: dict[str, Any] | None, episodes: list[dict[str, Any]] | None = None
) -> str:
    if episodes:
        s = summarize(e["return"] for e in episodes)
        mean, std, sem, n = s.mean, s.std, s.sem, s.n
    elif result:
        mean, std, n = result["mean"], result["std"], result["episodes"]
        # The marker keeps the ddof=0 std; the standard error follows from it exactly.
        sem = std / math.sqrt(n - 1) if n > 1 else math.nan
    else:
        return "–"
    return f"{mean:.1f} ± {std:.1f} (SE {sem:.1f}, n={n})"


def _paired_rows(run_dir: Path, rounds: list[int]) -> list[str]:
    """Round k's agent minus round k-1's, episode by episode on the same seeds."""
    rows = []
    for k in rounds:
        if k - 1 not in rounds:
            continue
        now = eval_results(run_dir, f"round{k}_agent")
        before = eval_results(run_dir, f"round{k - 1}_agent")
        if now is None or before is None:
            continue
        try:
            d = paired_difference(now, before)
        except ValueError as error:
            rows.append(f"| {k} − {k - 1} | not paired: {error} | | | |")
            continue
        rows.append(
            f"| {k} − {k - 1} | {d.mean:+.1f} | {d.sem:.1f} | {d.t:+.2f} | {d.n} |"
        )
    return rows


def _links(run_dir: Path, pattern: str) -> list[str]:
    return [
        f"![{p.stem}]({p.relative_to(run_dir)})"
        if p.suffix in (".png", ".gif")
        else f"[{p.name}]({p.relative_to(run_dir)})"
        for p in sorted(run_dir.glob(pattern))
    ]


def render_report(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    markers = read_markers(run_dir)
    lines = [
        f"# World Models run: {run_dir.name}",
        "",
        f"Environment **{config.env_id}**, preset **{config.preset or 'none'}**, "
        f"{config.pipeline.rounds} round(s). "
        "Full settings: [config.json](config.json).",
        "",
    ] + _protocol_lines(run_dir)

    lines += [
        "## Data",
        "",
        "| round | policy | episodes | frames | return (mean ± std) |",
        "|---|---|---|---|---|",
    ]
    for record in markers:
        if record["stage"] == "collect":
            for policy, s in record["summary"].items():
                lines.append(
                    f"| {record['round']} | {policy} | {s['episodes']} | "
                    f"{s['frames']} | {s['return_mean']:.1f} ± {s['return_std']:.1f} |"
                )
    lines.append("")

    last_seed = config.eval.seed + config.eval.episodes - 1
    lines += [
        "## Real score per round",
        "",
        (
            f"Mean ± std (population std, ddof 0) over the same "
            f"{config.eval.episodes} seeded episodes (seeds {config.eval.seed}.."
            f"{last_seed}; baselines on the first "
            f"{config.eval.baseline_episodes or config.eval.episodes} of them); SE is "
            "the standard error of the mean (ddof 1 std / √n)."
        ),
        "",
    ]
    if config.dream.speed_limit:
        lines += [
            f"The agent and the zero controller drive with a speed governor: no gas "
            f"while the dashboard shows more than {config.dream.speed_limit:g} "
            "(dream.speed_limit, a fixed rule on the pixels, not learnt in the dream).",
            "",
        ]
    lines += [
        "| round | agent (dream-trained C) | brownian | zero controller "
        "| kept C: generation (its selection score) |",
        "|---|---|---|---|---|",
    ]
    baselines: dict[str, Any] = {}
    brownian, zero = eval_results(run_dir, "brownian"), eval_results(run_dir, "zero")
    searches = {r["round"]: r["summary"] for r in markers if r["stage"] == "dream"}
    for record in markers:
        if record["stage"] == "test":
            baselines.update(
                {k: v for k, v in record["summary"].items() if k != "agent"}
            )
            search = searches.get(record["round"], {})
            kept = (
                f"{search['best_generation']} ({search['best_real_score']:.1f})"
                if "best_generation" in search
                else "–"
            )
            agent = _score(
                record["summary"].get("agent"),
                eval_results(run_dir, f"round{record['round']}_agent"),
            )
            lines.append(
                f"| {record['round']} | {agent} | "
                f"{_score(baselines.get('brownian'), brownian)} | "
                f"{_score(baselines.get('zero'), zero)} | {kept} |"
            )
    lines.append("")
    tested = [r["round"] for r in markers if r["stage"] == "test"]
    paired = _paired_rows(run_dir, tested)
    if paired:
        lines += [
            (
                "Agent of round k minus agent of round k − 1, paired by seed (t has "
                "n − 1 degrees of freedom):"
            ),
            "",
            "| rounds | mean difference | SE | t | n |",
            "|---|---|---|---|---|",
        ]
        lines += paired + [""]

    lines += _candidates_section(run_dir)
    lines += round_choice_section(run_dir)
    lines += finalists_section(run_dir, config.dream.patience)
    lines += calibration_section(run_dir)

    lines += ["## Training", ""]
    for name, title in (
        ("vae", "V (ConvVAE)"),
        ("rnn", "M (MDN-RNN)"),
        ("dream", "C (CMA-ES in the dream)"),
    ):
        rows = read_metrics(run_dir / name / "metrics.jsonl")
        if not rows:
            continue
        lines.append(f"### {title}")
        lines.append("")
        for prefix in ("train_", "val_", "dream_", "real_", "best_"):
            latest = _latest(rows, prefix)
            if latest:
                values = ", ".join(
                    f"{k} {v:.4g} (step {step})"
                    for k, (step, v) in sorted(latest.items())
                )
                lines.append(f"- {prefix.rstrip('_')}: {values}")
        lines.append("")
        # the calibration plot is shown in its own section
        lines += [
            link
            for link in _links(run_dir, f"{name}/*.png")
            if not link.endswith(f"/{PLOT_NAME})")
        ]
        lines.append("")

    lines += [
        "## Wall time per stage",
        "",
        "| round | stage | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {r['round']} | {r['stage']} | {r['seconds']:.1f} |" for r in markers]
    lines += [f"| all | total | {sum(r['seconds'] for r in markers):.1f} |", ""]

    error_tables = sorted(run_dir.glob("model_error/pixel_h*/summary.md"))
    if error_tables:
        lines += ["## World-model prediction error (pixel MSE, 84×84 grayscale)", ""]
        for table in error_tables:
            lines += [
                f"From `{table.relative_to(run_dir)}`:",
                "",
                table.read_text(),
                "",
            ]
            lines += _links(run_dir, f"{table.parent.relative_to(run_dir)}/*.png")[:2]
            lines.append("")

    videos = _links(run_dir, "eval/*.mp4") + _links(run_dir, "eval/*.gif")
    if videos:
        lines += ["## Videos", ""] + videos + [""]
    return "\n".join(lines)


def _protocol_lines(run_dir: Path) -> list[str]:
    path = run_dir / ENVIRONMENT_FILENAME
    if not path.exists():
        return []
    protocol = json.loads(path.read_text())
    registered = ", ".join(
        f"{key} {value}" for key, value in protocol["registered_kwargs"].items()
    ) or "its defaults"
    serve = protocol.get("serve_action")
    served = f"; the env presses action {serve} to serve" if serve is not None else ""
    return [f"The env as registered: {registered}{served} "
            f"([{ENVIRONMENT_FILENAME}]({ENVIRONMENT_FILENAME})).", ""]


def write_report(run_dir: str | Path) -> Path:
    write_calibration_plot(run_dir)
    path = Path(run_dir) / "report.md"
    write_atomic_text(path, render_report(run_dir))
    return path


def _candidates_section(run_dir: Path) -> list[str]:
    record = load_candidates(run_dir)
    if not record:
        return []
    lines = [
        "## M candidates",
        "",
        (
            "Round 0 trained one M per seed and searched a controller in each dream "
            "(one search per CMA-ES seed); the M and search whose kept controller "
            "scored best on the shared final block are the run's. Each candidate's "
            "search is in `candidates/<candidate>`."
        ),
        "",
        "| candidate | M seed | CMA-ES seed | kept generation | final check | seeds |",
        "|---|---|---|---|---|---|",
    ]
    kept = chosen_folder(record)
    for row in record["candidates"]:
        folder = row.get("folder", f"m{row['index']}")  # older records: one search
        chosen = " (chosen)" if folder == kept else ""
        dream_seed = row.get("dream_seed", "–")
        lines.append(
            f"| {folder}{chosen} | {row['rnn_seed']} | {dream_seed} | "
            f"{row['kept_generation']} | "
            f"{row['final_score']:.1f} ± {row['final_std']:.1f} | "
            f"{row['seeds'][0]}..{row['seeds'][1]} |"
        )
    return lines + [""]
