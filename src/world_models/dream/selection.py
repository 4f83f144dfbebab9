"""Which controller a dream search keeps: real-env checks on selection seeds.

Every check plays the CMA mean on a fresh block of selection seeds, and the best mean
so far is kept. With ``dream.finalists`` = K > 0 the K best checks of a round stay in
the search state as finalists; at the end of the search each of them plays one more,
shared block of ``dream.final_check_episodes`` seeds, and the best there is kept. A
check of 8 episodes has an SE near 80 on CarRacing, so the best of a dozen checks is
mostly its luck; the shared block compares the finalists on the same tracks, and none
of them was chosen on it.

Every check plays at the run's ``dream.action_noise``. With ``dream.final_check_noise``
the winner of the final check also plays the same block at each of those levels, and
the agent acts at the best (``best_action_noise`` in the search): on CarRacing the
brake's share of the noise is a speed limit, which one controller needs and another
does not (docs/transfer.md, fifteenth pass). With
``dream.final_check_noise_all_finalists`` every finalist plays every level and the best
pair is kept: the finalist that needs the brake least is not always the best driver
with it (twenty-second pass).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from world_models.config import Config
from world_models.envs import get_spec, step_limit
from world_models.files import write_atomic_text
from world_models.logs import MetricsLogger
from world_models.seeds import final_check_seeds, fit_check_seeds, selection_seeds

FINALISTS_FILENAME = "finalists.json"


def real_check(
    run_dir: str | os.PathLike,
    config: Config,
    params: np.ndarray,
    workers: int,
    seeds: range,
    noise: float | None = None,
) -> list[dict]:
    """Real-env episodes of the controller ``params`` on selection ``seeds``, acting
    with action ``noise`` (default: the run's ``dream.action_noise``)."""
    from world_models.data.collection import play_episodes

    spec = get_spec(config.env_id)
    noise = config.dream.action_noise if noise is None else noise
    return play_episodes(
        config.env_id,
        "agent",
        list(seeds),
        workers,
        step_limit(spec, config.eval.max_steps),
        policy_kwargs=dict(
            run_dir=str(run_dir),
            params=tuple(np.asarray(params).tolist()),
            noise=float(noise),
        ),
        backend=config.collect.backend,
        ray_address=config.collect.ray_address,
    )


def check_start(
    run_dir: str | os.PathLike, config: Config, params: np.ndarray, episodes: int
) -> str:
    """A saved start (a fitted or PPO controller) played on ``episodes`` seeds of the
    fit-check block, as one line: mean ± std over the episodes and the seeds."""
    seeds = fit_check_seeds(episodes)
    return check_line(real_check(run_dir, config, params, config.eval.workers, seeds))


def check_line(episodes: list[dict]) -> str:
    """Real episodes of a check as one line: mean ± std over them and their seeds."""
    returns = _returns(episodes)
    return (f"real: {returns.mean():.1f} ± {returns.std():.1f} over {len(returns)} "
            f"episodes (seeds {episodes[0]['seed']}…{episodes[-1]['seed']})")


def _returns(episodes: list[dict]) -> np.ndarray:
    return np.array([episode["return"] for episode in episodes], np.float64)


def _steps(episodes: list[dict]) -> int:
    """Real env steps the episodes consumed (what a comparison of methods counts)."""
    return int(sum(episode["length"] for episode in episodes))


def empty_finalists(count: int, num_params: int) -> dict[str, Any]:
    """The search state's finalist slots (none when ``count`` is 0): a slot with score
    -inf is empty."""
    if count == 0:
        return {}
    return dict(
        finalist_params=jnp.zeros((count, num_params), jnp.float32),
        finalist_scores=jnp.full((count,), -jnp.inf, jnp.float32),
        finalist_generations=jnp.full((count,), -1, jnp.int32),
    )


def admit_finalist(
    search: dict[str, Any], params: Any, score: float, generation: int
) -> dict[str, Any]:
    """``search`` with the checked controller in place of its worst finalist, if it
    checked better (a tie keeps the earlier one)."""
    if "finalist_scores" not in search:
        return search
    scores = np.asarray(search["finalist_scores"])
    generations = np.asarray(search["finalist_generations"])
    worst = int(np.lexsort((-generations, scores))[0])  # of equal scores, the latest
    if not score > scores[worst]:
        return search
    return dict(
        search,
        finalist_params=search["finalist_params"].at[worst].set(params),
        finalist_scores=search["finalist_scores"].at[worst].set(score),
        finalist_generations=search["finalist_generations"].at[worst].set(generation),
    )


def check_in_reality(
    run_dir: Path,
    config: Config,
    search: dict,
    logger: MetricsLogger,
    workers: int,
    round_index: int,
    dream_estimate: tuple[float, float],
) -> dict:
    """Play the CMA mean on the check's own block; keep it if it beats the kept one."""
    generation = int(search["generation"])
    mean = search["es_state"].mean
    # Check i of a round (i >= 1) plays its own fresh block; block 0 is the re-score's.
    since = generation - int(search["round_start"])
    check_index = -(-since // config.dream.real_eval_every)
    seeds = selection_seeds(config, round_index, check_index)
    episodes = real_check(run_dir, config, np.asarray(mean), workers, seeds)
    returns = _returns(episodes)
    logger.log(
        generation,
        real_score=returns.mean(),
        real_std=returns.std(),
        dream_estimate=dream_estimate[0],
        dream_estimate_std=dream_estimate[1],
        real_steps=_steps(episodes),
    )
    search = admit_finalist(search, mean, returns.mean(), generation)
    if returns.mean() > float(search["best_real_score"]):
        search = dict(
            search,
            best_params=mean,
            best_real_score=jnp.asarray(returns.mean(), jnp.float32),
            best_generation=jnp.asarray(generation),
        )
        search = _at_noise(search, config.dream.action_noise)
    return search


def _at_noise(search: dict, noise: float) -> dict:
    """``search`` whose kept controller acts at ``noise`` (where the search records
    it: with ``dream.final_check_noise``)."""
    if "best_action_noise" not in search:
        return search
    return dict(search, best_action_noise=jnp.asarray(noise, jnp.float32))


def rescore_kept(
    run_dir: Path,
    config: Config,
    search: dict,
    logger: MetricsLogger,
    workers: int,
    round_index: int,
) -> dict:
    """The kept controller scored again (block 0 of the round), as the round's first
    finalist: earlier rounds' scores were measured under another M."""
    seeds = selection_seeds(config, round_index, check_index=0)
    episodes = real_check(
        run_dir, config, np.asarray(search["best_params"]), workers, seeds
    )
    returns = _returns(episodes)
    generation = int(search["generation"])
    logger.log(generation, best_rescored=returns.mean(), real_steps=_steps(episodes))
    if "finalist_scores" in search:
        count, size = search["finalist_params"].shape
        search = dict(search, **empty_finalists(count, size))
        search = admit_finalist(
            search, search["best_params"], returns.mean(), generation
        )
    search = _at_noise(search, config.dream.action_noise)
    return dict(search, best_real_score=jnp.asarray(returns.mean(), jnp.float32))


def final_check(
    run_dir: Path,
    config: Config,
    search: dict,
    workers: int,
    round_index: int,
    stalled: bool = False,
) -> dict:
    """Play every finalist on the round's final block and keep the best there; with
    ``dream.final_check_noise``, play the best at those noise levels too and keep the
    best level; with ``dream.final_check_noise_all_finalists``, play every finalist at
    every level and keep the best pair.

    The finalists, their scores, the levels and the seeds go to
    ``dream/finalists.json``, under the generation at which the check was made, with
    ``stalled`` when the round ended early (``dream.patience``).
    """
    scores = np.asarray(search["finalist_scores"])
    generations = np.asarray(search["finalist_generations"])
    filled = sorted(np.flatnonzero(np.isfinite(scores)), key=lambda i: generations[i])
    seeds = final_check_seeds(config, round_index)
    results = []
    for slot in filled:
        params = np.asarray(search["finalist_params"][slot])
        episodes = real_check(run_dir, config, params, workers, seeds)
        returns = _returns(episodes)
        results.append(dict(
            generation=int(generations[slot]),
            check_score=float(scores[slot]),
            final_score=float(returns.mean()),
            final_std=float(returns.std()),
            real_steps=_steps(episodes),
            slot=int(slot),
        ))
    if not results:
        return search
    winner = max(results, key=lambda row: row["final_score"])  # first of equals
    contenders = results if config.dream.final_check_noise_all_finalists else [winner]
    levels = {row["slot"]: _noise_levels(
        run_dir, config, search["finalist_params"][row["slot"]], row, workers, seeds
    ) for row in contenders}
    # The best (finalist, level) pair; of equals the earlier finalist, the run's noise
    pairs = [(row, level) for row in contenders for level in levels[row["slot"]]]
    finalist, kept = max(pairs, key=lambda pair: pair[1]["final_score"])
    kept_params = search["finalist_params"][finalist["slot"]]
    others = [dict(generation=row["generation"], **level) for row in contenders
              if row is not finalist for level in levels[row["slot"]][1:]]
    _record(run_dir, int(search["generation"]), seeds, results, finalist, stalled,
            levels[finalist["slot"]] if config.dream.final_check_noise else [],
            kept["noise"], others)
    search = dict(
        search,
        best_params=kept_params,
        best_real_score=jnp.asarray(kept["final_score"], jnp.float32),
        best_generation=jnp.asarray(finalist["generation"]),
    )
    return _at_noise(search, kept["noise"])


def _noise_levels(run_dir: Path, config: Config, params: Any, finalist: dict,
                  workers: int, seeds: range) -> list[dict]:
    """A finalist at the run's noise (as it played) and at each level of
    ``dream.final_check_noise``, on the same seeds."""
    levels = [dict(noise=config.dream.action_noise, final_score=finalist["final_score"],
                   final_std=finalist["final_std"], real_steps=0)]
    for noise in config.dream.final_check_noise:
        if noise == config.dream.action_noise:
            continue
        episodes = real_check(run_dir, config, np.asarray(params), workers, seeds,
                              noise)
        returns = _returns(episodes)
        levels.append(dict(noise=float(noise), final_score=float(returns.mean()),
                           final_std=float(returns.std()), real_steps=_steps(episodes)))
    return levels


def _record(run_dir: Path, generation: int, seeds: range, results: list[dict],
            kept: dict, stalled: bool, levels: list[dict],
            kept_noise: float, other_levels: list[dict]) -> None:
    """One final check in ``dream/finalists.json``; ``noise_levels`` (the kept
    finalist's) and ``kept_noise`` only where the check chose the noise, and
    ``other_levels`` (the other finalists' rows at each level, by generation) only
    where every finalist played the levels."""
    record = load_finalists(run_dir)
    record[str(generation)] = dict(
        seeds=[seeds.start, seeds.stop - 1],
        kept_generation=kept["generation"],
        stalled=stalled,
        finalists=[{k: v for k, v in row.items() if k != "slot"} for row in results],
    )
    if levels:
        record[str(generation)].update(noise_levels=levels, kept_noise=kept_noise)
    if other_levels:
        record[str(generation)].update(other_levels=other_levels)
    write_atomic_text(Path(run_dir) / "dream" / FINALISTS_FILENAME,
                      json.dumps(record, indent=2))


def load_finalists(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``dream/finalists.json``: each final check by generation ({} if none)."""
    path = Path(run_dir) / "dream" / FINALISTS_FILENAME
    return json.loads(path.read_text()) if path.exists() else {}

