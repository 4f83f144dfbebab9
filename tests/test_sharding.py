"""The dream's population split over two devices plays the same dreams as on one.

The two-device side runs this file as a script in a process of its own, with two CPU
devices forced by XLA_FLAGS (the flag must be set before JAX starts)."""

import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from world_models.config import make_config
from world_models.dream.evolve import run_generations
from world_models.dream.rollout import make_dream
from world_models.dream.search import initial_search, make_strategy
from world_models.envs import get_spec
from world_models.models.controller import controller_to_flat, make_controller
from world_models.models.mdnrnn import rnn_from_config

CAR = get_spec("CarRacing-v3")
Z = 3
POPULATION = 6
ROLLOUTS = 3


def _dream_numbers() -> dict[str, np.ndarray]:
    """A small search's numbers, and how its population was split, on this process's
    devices."""
    config = make_config(
        "smoke",
        overrides=[
            f"vae.z_dim={Z}",
            "dream.population=5",
            f"dream.rollouts={ROLLOUTS}",
        ],
    )
    rnn = rnn_from_config(config, key=jax.random.key(3))
    template = make_controller(config, key=jax.random.key(4))
    starts = np.arange(5 * Z, dtype=np.float32).reshape(5, Z)
    dream = make_dream(rnn, (starts, np.zeros_like(starts)), template, CAR, 6, 1.0)
    mean = jnp.zeros_like(controller_to_flat(template))
    population = 0.5 * jax.random.normal(jax.random.key(5), (POPULATION, mean.size))
    split, lengths = eqx.filter_jit(dream.population_returns)(
        population, jax.random.key(6), ROLLOUTS
    )

    es, es_params = make_strategy(config, mean.size)
    es_state = initial_search(es, es_params, mean, seed=0)["es_state"]
    # committed to one device, as a restored checkpoint's state is
    es_state = jax.device_put(es_state, jax.devices()[0])
    # 5 candidates in chunks of 2, one on each device; the last chunk is padded
    es_state, metrics = run_generations(
        dream, es, es_params, es_state, jax.random.key(1), jnp.asarray(0), 2,
        ROLLOUTS, 2 * ROLLOUTS,
    )
    return dict(
        devices=np.asarray(len(jax.devices())),
        shard_rows=np.asarray(
            sorted(shard.index[0].indices(POPULATION)[:2]
                   for shard in split.addressable_shards)
        ),
        returns=np.asarray(split),
        lengths=np.asarray(lengths),
        es_mean=np.asarray(es_state.mean),
        es_devices=np.asarray(len(es_state.mean.sharding.device_set)),
        **{name: np.asarray(values) for name, values in metrics.items()},
    )


def test_two_devices_split_the_population_and_play_the_same_dreams(tmp_path):
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=2".strip(),
    )
    out = tmp_path / "two_devices.npz"
    two_devices = subprocess.Popen([sys.executable, __file__, str(out)], env=env)
    one = _dream_numbers()  # meanwhile, here on one device
    assert two_devices.wait(timeout=300) == 0
    two = dict(np.load(out))

    assert int(one["devices"]) == 1 and int(two["devices"]) == 2
    # on one device one shard holds every candidate; on two each holds half
    np.testing.assert_array_equal(one["shard_rows"], [[0, POPULATION]])
    np.testing.assert_array_equal(
        two["shard_rows"], [[0, POPULATION // 2], [POPULATION // 2, POPULATION]]
    )
    assert int(two["es_devices"]) == 2  # CMA-ES's state is whole on both devices
    np.testing.assert_array_equal(two["lengths"], one["lengths"])
    for name in ("returns", "dream_best", "dream_mean", "dream_worst",
                 "dream_length", "sigma", "es_mean"):
        np.testing.assert_allclose(two[name], one[name], rtol=1e-6, atol=1e-7,
                                   err_msg=name)


if __name__ == "__main__":
    np.savez(sys.argv[1], **_dream_numbers())
