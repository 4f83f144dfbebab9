"""CMA-ES evolution of the controller inside M's dream, selected by real-env checks.

One generation — ask, the population x rollouts dream, tell — is traced once; a block of
generations between two real checks is one ``lax.scan`` under one jit, so the generation
loop runs with no per-step Python. Generation g uses the key ``fold_in(seed, g)``, so a
resumed search replays exactly what an uninterrupted one would have done.

Every ``real_eval_every`` generations (and at the last) the CMA mean plays
``real_eval_episodes`` seeded episodes of the real env on the worker pool; the
controller kept as best is the one with the best REAL mean return, never the best dream
sample; with ``dream.finalists`` the best checks are played again on one shared block at
the end and the best there is kept (``dream/selection.py``). With ``dream.patience`` a
round also ends, final check included, once that many checks in a row fail to beat its
best. The search's state and its checkpoints are ``dream/search.py``'s.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from evosax.algorithms import CMA_ES
from jaxtyping import Array, Float, PRNGKeyArray
from tqdm import tqdm

from world_models.config import Config, DreamConfig
from world_models.dream.devices import (
    arguments_on_every_device,
    whole_on_every_device,
)
from world_models.dream.rollout import Dream, make_dream
from world_models.dream.search import (
    load_search,
    restart_from_kept,
    search_checkpointer,
    search_from_kept,
    search_template,
)
from world_models.dream.selection import check_in_reality, final_check, rescore_kept
from world_models.dream.starts import load_dream_starts
from world_models.envs import get_spec, step_limit
from world_models.logs import MetricsLogger, plot_curves
from world_models.models.controller import make_controller
from world_models.run_directory import load_run_config
from world_models.training.rnn import latest_rnn_step, load_rnn

DREAM_ESTIMATE_ROLLOUTS = 64  # dreams behind the dream's estimate at a real check


@arguments_on_every_device
@eqx.filter_jit
def run_generations(
    dream: Dream,
    es: CMA_ES,
    es_params: Any,
    es_state: Any,
    root_key: PRNGKeyArray,
    first_generation: Array,
    count: int,
    rollouts: int,
    chunk_size: int,
    worst_fraction: float = 1.0,
) -> tuple[Any, dict[str, Array]]:
    """``count`` generations from ``first_generation``; metrics stacked per one."""

    def generation(state, index):
        ask_key, dream_key, tell_key = jax.random.split(
            jax.random.fold_in(root_key, index), 3
        )
        population, state = es.ask(ask_key, state, es_params)
        population = whole_on_every_device(population)
        returns, lengths = dream.population_returns(
            population, dream_key, rollouts, chunk_size
        )
        fitness = whole_on_every_device(rollout_fitness(returns, worst_fraction))
        state, _ = es.tell(
            tell_key, population, -fitness, state, es_params
        )  # minimises
        return state, dict(
            dream_best=fitness.max(),
            dream_mean=fitness.mean(),
            dream_worst=fitness.min(),
            dream_length=lengths.mean(),
            sigma=state.std,
        )

    indices = first_generation + jnp.arange(count)
    return jax.lax.scan(generation, es_state, indices)


def rollout_fitness(
    returns: Float[Array, "population rollouts"], worst_fraction: float
) -> Float[Array, " population"]:
    """Each candidate's fitness: the mean of its worst ``worst_fraction`` of rollouts
    (1.0: the plain mean). Below 1, a controller is paid for the dreams where M's
    draws go against it, not for the lucky ones an exploit lives on."""
    keep = max(1, round(worst_fraction * returns.shape[1]))
    if keep == returns.shape[1]:
        return returns.mean(axis=1)
    return jnp.sort(returns, axis=1)[:, :keep].mean(axis=1)


def worst_fraction_at(settings: DreamConfig, generation: int) -> float:
    """The fitness's worst fraction for the generations from ``generation``: the
    plain mean (1.0) before ``settings.worst_from``."""
    return settings.worst_fraction if generation >= settings.worst_from else 1.0


def patience_ran_out(settings: DreamConfig, search: dict[str, Any]) -> bool:
    """Whether the round's last ``settings.patience`` checks all failed to beat its
    best (never with patience 0). A best from an earlier round (re-scored when the
    round began) counts from the round's start."""
    if not settings.patience:
        return False
    improved = max(int(search["best_generation"]), int(search["round_start"]))
    since = int(search["generation"]) - improved
    return since >= settings.patience * settings.real_eval_every


@arguments_on_every_device
@eqx.filter_jit
def dream_estimate(
    dream: Dream, params: Array, key: PRNGKeyArray, rollouts: int
) -> tuple[Array, Array]:
    """Mean and std of one controller's dream return over ``rollouts`` dreams."""
    returns, _ = dream.population_returns(params[None], key, rollouts)
    return returns.mean(), returns.std()


def load_dream(
    run_dir: str | os.PathLike, config: Config, temperature: float | None = None
) -> Dream:
    """The dream of ``run_dir`` as its config sets it (M, start pool, horizon, τ,
    dropout, ensemble, matmul dtype, action noise); ``temperature`` overrides τ."""
    settings, spec = config.dream, get_spec(config.env_id)
    rnn = load_rnn(run_dir)
    return make_dream(
        rnn,
        load_dream_starts(run_dir, rnn, settings.branch_every, spec),
        make_controller(config, key=jax.random.key(settings.seed)),
        spec,
        horizon=step_limit(spec, settings.max_steps),
        temperature=settings.temperature if temperature is None else temperature,
        dropout=settings.dropout,
        ensemble=settings.ensemble,
        matmul_dtype=settings.matmul_dtype,
        action_noise=settings.action_noise if settings.action_noise_in_dream else 0.0,
    )


def evolve(
    run_dir: str | os.PathLike,
    total_generations: int | None = None,
    workers: int | None = None,
    fresh: bool = False,
    progress: bool = True,
    round_index: int = 0,
    start_from: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run (or resume) the dream search of ``run_dir`` up to ``total_generations``
    (default dream.generations); outputs go to ``run_dir``/dream.

    A later pipeline round continues the saved search by asking for more generations;
    its M has been retrained, so the kept controller is scored again under the new M
    and CMA-ES restarts from it (σ0), never from a mean that reality rejected. A new
    search with ``start_from`` (an earlier search's folder) starts from that search's
    kept controller the same way. ``round_index`` picks the round's selection seeds.
    ``fresh`` discards the saved search and starts over.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    settings = config.dream
    workers = config.eval.workers if workers is None else workers
    out_dir = run_dir / "dream"

    es, es_params, search = search_template(config)
    dream = load_dream(run_dir, config)
    if fresh:
        shutil.rmtree(out_dir / "ckpt", ignore_errors=True)
    checkpointer = search_checkpointer(out_dir, config)
    logger = MetricsLogger(out_dir)
    if checkpointer.latest_step() is not None:
        search = checkpointer.restore(search)
    elif start_from is not None:
        kept = load_search(run_dir, config, start_from)["best_params"]
        search = search_from_kept(es, es_params, kept, config)
    logger.truncate_after(int(search["generation"]))
    rnn_step = latest_rnn_step(run_dir)
    if int(search["best_generation"]) >= 0 and int(search["rnn_step"]) != rnn_step:
        # The agent acts on M's h, so a score measured under an earlier M (a previous
        # curriculum round) no longer describes the kept controller: measure it again,
        # and search on from it rather than from a CMA mean that reality rejected.
        search = rescore_kept(run_dir, config, search, logger, workers, round_index)
        search = restart_from_kept(es, es_params, search, settings.seed)
    search = dict(search, rnn_step=jnp.asarray(rnn_step))
    root_key = jax.random.key(settings.seed)
    generation = int(search["generation"])
    total = settings.generations if total_generations is None else total_generations
    bar = tqdm(
        total=total, initial=generation, desc="dream generations", disable=not progress
    )
    try:
        while generation < total and not int(search.get("stalled", 0)):
            count = min(
                settings.real_eval_every - generation % settings.real_eval_every,
                total - generation,
            )
            es_state, metrics = run_generations(
                dream,
                es,
                es_params,
                search["es_state"],
                root_key,
                jnp.asarray(generation),
                count,
                settings.rollouts,
                settings.chunk_size,
                worst_fraction_at(settings, generation),
            )
            metrics = jax.device_get(metrics)
            for offset in range(count):
                logger.log(
                    generation + offset + 1,
                    **{name: values[offset] for name, values in metrics.items()},
                )
            generation += count
            search = dict(search, es_state=es_state, generation=jnp.asarray(generation))
            estimate = dream_estimate(
                dream,
                search["es_state"].mean,
                jax.random.fold_in(jax.random.key(settings.seed + 1), generation),
                DREAM_ESTIMATE_ROLLOUTS,
            )
            search = check_in_reality(
                run_dir, config, search, logger, workers, round_index,
                tuple(float(x) for x in estimate),
            )
            stalled = generation < total and patience_ran_out(settings, search)
            if (generation == total or stalled) and settings.finalists:
                search = final_check(
                    run_dir, config, search, workers, round_index, stalled
                )
            if stalled:
                search = dict(search, stalled=jnp.asarray(1))
            checkpointer.save(generation, search)
            plot_curves(
                logger.path,
                ["dream_best", "dream_mean", "dream_estimate", "real_score"],
                out_dir / "curves.png",
                title=f"{config.env_id}: dream vs real",
            )
            bar.update(count)
            bar.set_postfix(
                dream_best=float(metrics["dream_best"][-1]),
                best_real=float(search["best_real_score"]),
            )
    finally:
        bar.close()
        logger.close()
        checkpointer.close()
    return dict(
        generation=generation,
        best_real_score=float(search["best_real_score"]),
        best_generation=int(search["best_generation"]),
    )

