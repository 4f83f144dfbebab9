"""Every controller of a run and the baselines on the same test seeds, in one table.

Each contender (``contenders.py``) plays the same seeded episodes through the worker
pool; its per-seed returns are kept in ``RUN/eval/compare/NAME.json`` with a
fingerprint of the policy, its files and the seeds, so a second comparison replays
only what changed. The table gives mean ± std, the standard error, the paired
difference to the first contender (same seeds), and the real and dream steps each
one consumed; it goes to ``RUN/eval/compare.md`` and ``compare.json``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from world_models.data.collection import play_episodes
from world_models.envs import get_spec, step_limit
from world_models.evaluation.contenders import Contender
from world_models.files import write_atomic_text, write_json
from world_models.run_directory import load_run_config
from world_models.seeds import BAND
from world_models.stats import paired_difference, summarize

COMPARE_FOLDER = "compare"


def _file_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") + ".json"


def score_contender(
    run_dir: str | os.PathLike,
    contender: Contender,
    seeds: range,
    workers: int,
    max_steps: int,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """``contender``'s episodes on ``seeds`` ({seed, return, length, terminated}),
    from the cache when its fingerprint matches, else played and cached."""
    if seeds.start < 0 or seeds.stop > BAND:
        raise ValueError(f"test seeds must lie in [0, {BAND}) (see seeds.py)")
    config = load_run_config(run_dir)
    limit = step_limit(get_spec(config.env_id), max_steps)
    fingerprint = contender.fingerprint(seeds, limit)
    path = Path(run_dir) / "eval" / COMPARE_FOLDER / _file_name(contender.name)
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("fingerprint") == fingerprint:
            return cached["results"]
    results = play_episodes(
        config.env_id, contender.policy, list(seeds), workers, limit,
        policy_kwargs=contender.kwargs, progress=progress,
        backend=config.collect.backend, ray_address=config.collect.ray_address)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, dict(name=contender.name, policy=contender.policy,
                          fingerprint=fingerprint, max_steps=limit, results=results))
    return results


def comparison_rows(
    contenders: list[Contender], results: list[list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One row per contender: its score, its paired difference to the first one and
    the steps it consumed."""
    rows = []
    for contender, episodes in zip(contenders, results):
        summary = summarize(episode["return"] for episode in episodes)
        paired = paired_difference(episodes, results[0])
        rows.append(dict(
            name=contender.name, mean=summary.mean, std=summary.std,
            sem=summary.sem, episodes=summary.n,
            paired_mean=paired.mean, paired_sem=paired.sem, paired_t=paired.t,
            real_steps=(None if contender.real_steps is None
                        else contender.real_steps.steps),
            real_steps_exact=(None if contender.real_steps is None
                              else contender.real_steps.exact),
            real_steps_text=("—" if contender.real_steps is None
                             else str(contender.real_steps)),
            dream_steps=contender.dream_steps,
        ))
    return rows


def _signed(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:+.1f}"


def format_table(rows: list[dict[str, Any]], seeds: range) -> str:
    """The rows as a markdown table with what it was measured on."""
    first = rows[0]["name"]
    lines = [
        f"Test seeds {seeds.start}–{seeds.stop - 1} ({len(seeds)} episodes); "
        f"paired: minus {first}, same seeds.",
        "",
        "| controller | return (mean ± std) | SE | paired (± SE, t) "
        "| real env steps | dream steps |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        paired = ("—" if row["name"] == first else
                  f"{_signed(row['paired_mean'])} ± {row['paired_sem']:.1f} "
                  f"(t {row['paired_t']:.1f})")
        dream = "—" if row["dream_steps"] is None else f"{row['dream_steps']:,}"
        lines.append(
            f"| {row['name']} | {row['mean']:.1f} ± {row['std']:.1f} "
            f"| {row['sem']:.1f} | {paired} | {row['real_steps_text']} | {dream} |")
    return "\n".join(lines) + "\n"


def compare_controllers(
    run_dir: str | os.PathLike,
    contenders: list[Contender],
    seeds: range,
    workers: int,
    max_steps: int,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], str]:
    """Play every contender on ``seeds`` (cached where unchanged); write
    ``eval/compare.json`` and ``eval/compare.md``; return (rows, table)."""
    if not contenders:
        raise ValueError("nothing to compare: no contenders")
    names = [contender.name for contender in contenders]
    if len(set(names)) != len(names):
        raise ValueError(f"contender names must differ: {names}")
    results = [score_contender(run_dir, contender, seeds, workers, max_steps,
                               progress) for contender in contenders]
    rows = comparison_rows(contenders, results)
    table = format_table(rows, seeds)
    out = Path(run_dir) / "eval"
    write_json(out / "compare.json",
               dict(seeds=[seeds.start, seeds.stop - 1], rows=rows))
    write_atomic_text(out / "compare.md", table)
    return rows, table
