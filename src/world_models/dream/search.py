"""The state of a CMA-ES search over controllers, and where it is kept.

A search is a dict of arrays: evosax's state, the generation reached, the controller
kept by reality (``best_params``, its score, generation and the M it was measured
under) and the finalist slots (``dream/selection.py``). It is saved with orbax under
``FOLDER/ckpt`` beside the dream settings it was made with, so a search is resumed
only under the same settings.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from evosax.algorithms import CMA_ES
from jaxtyping import Array

from world_models.checkpoint import Checkpointer
from world_models.config import Config
from world_models.dream.selection import empty_finalists
from world_models.models.controller import (
    controller_to_flat,
    make_controller,
    num_parameters,
)
from world_models.run_directory import load_run_config


def make_strategy(config: Config, num_params: int) -> tuple[CMA_ES, Any]:
    """evosax CMA-ES over flat controller vectors, with σ0 from the config."""
    es = CMA_ES(
        population_size=config.dream.population,
        solution=jnp.zeros(num_params, jnp.float32),
    )
    es_params = es.default_params.replace(std_init=jnp.asarray(config.dream.sigma0))
    return es, es_params


def _arrays(tree: Any) -> Any:
    """Python scalars of evosax's fresh state as arrays, so checkpoints keep them."""
    return jax.tree.map(jnp.asarray, tree)


def initial_search(
    es: CMA_ES,
    es_params: Any,
    mean: Array,
    seed: int,
    finalists: int = 0,
    patience: int = 0,
    action_noise: float | None = None,
) -> dict[str, Any]:
    """A search at generation 0 centred on ``mean``. With ``patience`` it carries
    ``stalled``: set when the round ended early (``dream/evolve.py``); with
    ``action_noise`` (given when the final check chooses the noise) the noise the kept
    controller acts at, ``best_action_noise``."""
    es_state = es.init(jax.random.key(seed), mean, es_params)
    return _arrays(
        dict(
            es_state=es_state,
            generation=0,
            best_params=mean,
            best_real_score=-jnp.inf,
            best_generation=-1,
            rnn_step=-1,  # the M under which best_real_score was measured
            round_start=0,  # generation at which this round's search began
            **empty_finalists(finalists, mean.shape[0]),
            **(dict(stalled=0) if patience else {}),
            **({} if action_noise is None else dict(best_action_noise=action_noise)),
        )
    )


def restart_from_kept(
    es: CMA_ES, es_params: Any, search: dict[str, Any], seed: int
) -> dict[str, Any]:
    """The search restarted at its kept controller with σ0 and a fresh covariance; the
    generation count and the kept controller carry on, and a new round begins."""
    es_state = es.init(jax.random.key(seed), search["best_params"], es_params)
    search = dict(search, es_state=_arrays(es_state), round_start=search["generation"])
    if "stalled" in search:
        search["stalled"] = jnp.zeros_like(search["stalled"])
    return search


def search_checkpoint_config(config: Config) -> dict[str, Any]:
    """What a resumed search shares with the saved one (not its length or checks)."""
    dream = config.to_dict()["dream"]
    for key in ("generations", "real_eval_every", "real_eval_episodes",
                "final_check_episodes"):
        dream.pop(key)
    return dict(
        dream,
        env_id=config.env_id,
        z_dim=config.vae.z_dim,
        hidden_size=config.rnn.hidden_size,
    )


def search_checkpointer(folder: Path, config: Config) -> Checkpointer:
    return Checkpointer(
        folder / "ckpt",
        search_checkpoint_config(config),
        defaults=search_checkpoint_config(Config()),
    )


def search_template(config: Config) -> tuple[CMA_ES, Any, dict[str, Any]]:
    template = make_controller(config, key=jax.random.key(config.dream.seed))
    es, es_params = make_strategy(config, num_parameters(template))
    mean = jnp.zeros_like(controller_to_flat(template))
    search = initial_search(
        es, es_params, mean, config.dream.seed, config.dream.finalists,
        config.dream.patience, _chosen_noise(config),
    )
    return es, es_params, search


def _chosen_noise(config: Config) -> float | None:
    """The noise a search starts its kept controller at, if the final check chooses
    one (``dream.final_check_noise``)."""
    dream = config.dream
    return float(dream.action_noise) if dream.final_check_noise else None


def search_from_kept(
    es: CMA_ES, es_params: Any, kept: Array, config: Config
) -> dict[str, Any]:
    """A new search centred on ``kept``, recorded as kept at generation 0 but not yet
    scored by reality (so ``evolve`` re-scores it first)."""
    return dict(
        initial_search(
            es, es_params, kept, config.dream.seed, config.dream.finalists,
            config.dream.patience, _chosen_noise(config),
        ),
        best_params=kept,
        best_generation=jnp.asarray(0),
    )


def save_start(
    folder: str | os.PathLike, config: Config, params: Array
) -> Path:
    """A search folder whose kept controller is ``params``: ``evolve(start_from=...)``
    starts there (re-scored by reality first), e.g. from a fitted controller. A start
    saved there before is replaced."""
    es, es_params, _ = search_template(config)
    search = search_from_kept(es, es_params, jnp.asarray(params, jnp.float32), config)
    shutil.rmtree(Path(folder) / "ckpt", ignore_errors=True)
    checkpointer = search_checkpointer(Path(folder), config)
    try:
        checkpointer.save(0, search)
    finally:
        checkpointer.close()
    return Path(folder)


def load_search(
    run_dir: str | os.PathLike,
    config: Config | None = None,
    folder: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The latest saved search of ``run_dir`` (or of the search ``folder``, e.g. an
    earlier round's kept aside): es_state, generation, best_params, ..."""
    config = load_run_config(run_dir) if config is None else config
    _, _, template = search_template(config)
    folder = Path(run_dir) / "dream" if folder is None else Path(folder)
    checkpointer = search_checkpointer(folder, config)
    try:
        return checkpointer.restore(template)
    finally:
        checkpointer.close()


def finalist_params(run_dir: str | os.PathLike, generation: int) -> Array:
    """The flat parameters of the search's finalist from ``generation``, e.g. to test
    a finalist the final check did not keep beside the kept one."""
    search = load_search(run_dir)
    generations = [int(g) for g in search.get("finalist_generations", []) if g >= 0]
    if generation not in generations:
        raise ValueError(
            f"{run_dir} has no finalist from generation {generation}; its finalists: "
            f"{sorted(generations) or 'none (dream.finalists = 0)'}"
        )
    return search["finalist_params"][generations.index(generation)]
