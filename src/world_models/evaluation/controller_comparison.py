"""Every controller of a run and the baselines on the same test seeds, in one table.

Each contender (``contenders.py``) plays the same seeded episodes through the worker
pool; its per-seed returns are kept in ``RUN/eval/compare/NAME.json`` with a
fingerprint of the policy, its files and the seeds, so a second comparison replays
only what changed. An earlier evaluation of the same controller on the same seeds is
adopted once a few of its seeds replay identically. The table gives mean ± std, the
standard error, the paired difference to the first contender (same seeds), and the
real and dream steps each one consumed; it goes to ``RUN/eval/compare.md`` and
``compare.json``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

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


def _play(run_dir, contender: Contender, seeds: list[int], workers: int, limit: int,
          progress: bool) -> list[dict[str, Any]]:
    config = load_run_config(run_dir)
    return play_episodes(
        config.env_id, contender.policy, seeds, workers, limit,
        policy_kwargs=contender.kwargs, progress=progress,
        backend=config.collect.backend, ray_address=config.collect.ray_address)


def adopt_evaluation(
    run_dir: str | os.PathLike,
    contender: Contender,
    evaluation: str | os.PathLike,
    seeds: range,
    workers: int,
    limit: int,
    verify: int,
) -> list[dict[str, Any]]:
    """The episodes of an earlier evaluation of ``contender`` on ``seeds`` (an eval
    JSON such as ``evaluate_agent.py`` writes), taken as its scores once ``verify`` of
    its seeds, spread over the range, replay to the same return and length: a test
    of 100 CarRacing episodes costs minutes a second time, a spot check seconds."""
    report = json.loads(Path(evaluation).read_text())
    results = report["results"]
    if [int(r["seed"]) for r in results] != list(seeds):
        raise ValueError(f"{evaluation} was not played on seeds {seeds.start}–"
                         f"{seeds.stop - 1} in order")
    if report.get("max_steps", limit) != limit:
        raise ValueError(f"{evaluation} capped episodes at {report['max_steps']} "
                         f"steps, not {limit}")
    if verify <= 0:
        raise ValueError(f"verify must be > 0 seeds, got {verify}")
    picked = sorted({int(i) for i in np.linspace(0, len(results) - 1, verify)})
    replay = _play(run_dir, contender, [seeds[i] for i in picked], workers, limit,
                   progress=False)
    for index, episode in zip(picked, replay):
        saved = results[index]
        if (episode["return"], episode["length"]) != (saved["return"],
                                                      saved["length"]):
            raise ValueError(
                f"{contender.name} does not replay {evaluation} on seed "
                f"{saved['seed']}: {episode['return']} over {episode['length']} steps "
                f"against {saved['return']} over {saved['length']}")
    return results


def score_contender(
    run_dir: str | os.PathLike,
    contender: Contender,
    seeds: range,
    workers: int,
    max_steps: int,
    progress: bool = True,
    evaluation: str | os.PathLike | None = None,
    verify: int = 3,
) -> list[dict[str, Any]]:
    """``contender``'s episodes on ``seeds`` ({seed, return, length, terminated}),
    from the cache when its fingerprint matches, else played (or adopted from the
    earlier ``evaluation`` after a spot check, ``adopt_evaluation``) and cached."""
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
    record = dict(name=contender.name, policy=contender.policy,
                  fingerprint=fingerprint, max_steps=limit)
    if evaluation is None:
        results = _play(run_dir, contender, list(seeds), workers, limit, progress)
    else:
        results = adopt_evaluation(run_dir, contender, evaluation, seeds, workers,
                                   limit, verify)
        record.update(adopted_from=str(evaluation), verified_seeds=verify)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, dict(record, results=results))
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
    evaluations: dict[str, str | os.PathLike] | None = None,
    verify: int = 3,
) -> tuple[list[dict[str, Any]], str]:
    """Play every contender on ``seeds`` (cached where unchanged; adopted from
    ``evaluations[name]`` after a spot check of ``verify`` seeds where given); write
    ``eval/compare.json`` and ``eval/compare.md``; return (rows, table)."""
    evaluations = evaluations or {}
    if not contenders:
        raise ValueError("nothing to compare: no contenders")
    names = [contender.name for contender in contenders]
    if len(set(names)) != len(names):
        raise ValueError(f"contender names must differ: {names}")
    unknown = sorted(set(evaluations) - set(names))
    if unknown:
        raise ValueError(f"evaluations for no contender: {unknown}; known: {names}")
    results = [score_contender(run_dir, contender, seeds, workers, max_steps,
                               progress, evaluations.get(contender.name), verify)
               for contender in contenders]
    rows = comparison_rows(contenders, results)
    table = format_table(rows, seeds)
    out = Path(run_dir) / "eval"
    write_json(out / "compare.json",
               dict(seeds=[seeds.start, seeds.stop - 1], rows=rows))
    write_atomic_text(out / "compare.md", table)
    return rows, table
