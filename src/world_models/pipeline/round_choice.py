"""A later round keeps its agent only where reality prefers it to the last round's.

With a fresh M and search each round (``pipeline.retrain_rnn``, ``warm_start_es``
false) round K's agent is a new M with a new controller, and nothing in its search
compared it with round K-1's: on CarRacing such a round lifted the agent by 204 at
action noise 0 and left it 53 under round 0 at the noise each round's final check
chose (docs/transfer.md, twentieth pass). Here both agents, each at its own kept
action noise, play the round's choice block of ``pipeline.round_choice_episodes``
selection seeds (``seeds.round_choice_seeds``: no search, final check or test plays
them), and round K keeps its own agent only if it scores higher there. Otherwise
round K-1's M and search are copied back to ``RUN/rnn`` and ``RUN/dream``, round K's
are kept aside as ``rnn_roundK_declined`` and ``dream_roundK_declined``, and the test
and the next round read the run as if round K had kept the previous agent.

Round K-1's agent is played from ``RUN/round_choice/roundK-1``: links to the run's
config and V and to the M and search kept aside. The choice is written to
``RUN/round_choice/roundK.json`` before any folder moves, so a run killed while
restoring finishes the same choice when resumed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from world_models.config import Config
from world_models.files import copy_tree_atomic, write_json

CHOICE_FOLDER = "round_choice"
AGENT_FOLDERS = ("rnn", "dream")  # what makes a round's agent besides V


def previous_agent_available(run_dir: str | os.PathLike, config: Config,
                             k: int) -> bool:
    """Whether round ``k - 1``'s agent is still whole beside round ``k``'s: its M and
    search kept aside, and the V both read."""
    return (
        k > 0
        and not config.pipeline.retrain_vae
        and all((Path(run_dir) / f"{name}_round{k - 1}").is_dir()
                for name in AGENT_FOLDERS)
    )


def previous_agent_view(run_dir: str | os.PathLike, k: int) -> Path:
    """A run directory of links that holds round ``k - 1``'s agent (relative links, so
    the run directory can be moved)."""
    view = Path(run_dir) / CHOICE_FOLDER / f"round{k - 1}"
    view.mkdir(parents=True, exist_ok=True)
    targets = {"config.json": "config.json", "vae": "vae",
               **{name: f"{name}_round{k - 1}" for name in AGENT_FOLDERS}}
    for name, target in targets.items():
        link = view / name
        if not link.is_symlink():
            link.symlink_to(Path("..") / ".." / target)
    return view


def choose_round(run_dir: str | os.PathLike, config: Config, k: int,
                 workers: int | None = None) -> dict[str, Any]:
    """Play round ``k``'s and round ``k - 1``'s agents on the round's choice block and
    keep the better in ``RUN``; returns the record of ``round_choice/roundK.json``."""
    run_dir = Path(run_dir)
    record_path = run_dir / CHOICE_FOLDER / f"round{k}.json"
    if record_path.exists():  # chosen before a kill: finish that choice
        record = json.loads(record_path.read_text())
    else:
        record = _play_both(run_dir, config, k, workers)
        write_json(record_path, record)
    if record["kept_round"] != k:
        _restore_previous(run_dir, k)
    return record


def _play_both(run_dir: Path, config: Config, k: int,
               workers: int | None) -> dict[str, Any]:
    from world_models.agent import kept_action_noise
    from world_models.dream.search import load_search
    from world_models.dream.selection import real_check
    from world_models.seeds import round_choice_seeds

    seeds = round_choice_seeds(config, k)
    workers = config.eval.workers if workers is None else workers
    agents = []
    for round_index, folder in ((k, run_dir),
                                (k - 1, previous_agent_view(run_dir, k))):
        noise = kept_action_noise(folder)
        params = np.asarray(load_search(folder, config)["best_params"])
        episodes = real_check(folder, config, params, workers, seeds, noise)
        returns = [float(e["return"]) for e in episodes]
        agents.append(dict(round=round_index, noise=noise, mean=float(np.mean(returns)),
                           std=float(np.std(returns)), returns=returns))
    new, previous = agents
    return dict(seeds=[seeds.start, seeds.stop - 1], agents=agents,
                kept_round=k if new["mean"] > previous["mean"] else k - 1)


def _restore_previous(run_dir: Path, k: int) -> None:
    for name in AGENT_FOLDERS:
        current, declined = run_dir / name, run_dir / f"{name}_round{k}_declined"
        if current.exists() and not declined.exists():
            current.rename(declined)
        copy_tree_atomic(run_dir / f"{name}_round{k - 1}", current)


def load_round_choices(run_dir: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """Every round's choice of the run, by round ({} where none was made)."""
    folder = Path(run_dir) / CHOICE_FOLDER
    return {int(path.stem.removeprefix("round")): json.loads(path.read_text())
            for path in sorted(folder.glob("round*.json"))} if folder.is_dir() else {}


def round_choice_section(run_dir: str | os.PathLike) -> list[str]:
    """The report's table of every round's choice ([] where none was made)."""
    choices = load_round_choices(run_dir)
    if not choices:
        return []
    lines = [
        "## Which round's agent each later round kept",
        "",
        (
            "Round K's agent (a fresh M and search) and round K−1's, each at its kept "
            "action noise, played the same block of selection seeds; round K keeps its "
            "own only if it scores higher there. A round that kept the previous agent "
            "tests it again, and its own M and search are in `rnn_roundK_declined`, "
            "`dream_roundK_declined`."
        ),
        "",
        "| round | its agent | round K−1's agent | kept | seeds |",
        "|---|---|---|---|---|",
    ]
    for k, choice in choices.items():
        new, previous = (
            f"{a['mean']:.1f} ± {a['std']:.1f} (noise {a['noise']:g})"
            for a in choice["agents"]
        )
        lines.append(f"| {k} | {new} | {previous} | round {choice['kept_round']} | "
                     f"{choice['seeds'][0]}..{choice['seeds'][1]} |")
    return lines + [""]
