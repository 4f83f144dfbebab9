import jax
import jax.numpy as jnp
import numpy as np
import pytest

from world_models.config import make_config
from world_models.envs import get_spec
from world_models.models.controller import (
    LinearController,
    MLPController,
    act,
    action_head,
    controller_from_flat,
    controller_to_flat,
    head_bounds,
    make_controller,
    num_parameters,
    zero_controller,
)

CAR = get_spec("CarRacing-v3")
LANDER = get_spec("LunarLander-v3")


def test_linear_controller_has_the_papers_867_parameters():
    config = make_config("full")
    controller = make_controller(config, key=jax.random.key(0))
    assert isinstance(controller, LinearController)
    assert num_parameters(controller) == 867


def test_mlp_controller_from_config():
    config = make_config(
        "smoke", overrides=["dream.controller=mlp", "dream.mlp_hidden=5"]
    )
    controller = make_controller(config, key=jax.random.key(0))
    assert isinstance(controller, MLPController)
    features = config.vae.z_dim + config.rnn.hidden_size
    assert num_parameters(controller) == features * 5 + 5 + 5 * 3 + 3


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_flat_round_trip(kind):
    config = make_config("smoke", overrides=[f"dream.controller={kind}"])
    controller = make_controller(config, key=jax.random.key(1))
    flat = controller_to_flat(controller)
    rebuilt = controller_from_flat(controller, flat)
    x = jax.random.normal(
        jax.random.key(2), (config.vae.z_dim + config.rnn.hidden_size,)
    )
    np.testing.assert_array_equal(controller(x), rebuilt(x))
    shifted = controller_from_flat(controller, flat + 1.0)
    np.testing.assert_allclose(controller_to_flat(shifted), flat + 1.0)
    with pytest.raises(ValueError, match="expects"):
        controller_from_flat(controller, flat[:-1])


def test_car_racing_head_stays_in_range():
    raw = 10.0 * jax.random.normal(jax.random.key(0), (2000, 3))
    actions = np.asarray(jax.vmap(lambda r: action_head(r, CAR))(raw))
    low, high = head_bounds(CAR)
    assert np.all(actions >= low) and np.all(actions <= high)
    # every part of the range is reachable: full left/right, full gas, full brake
    assert actions[:, 0].min() < -0.99 and actions[:, 0].max() > 0.99
    assert actions[:, 1].min() < 0.01 and actions[:, 1].max() > 0.99
    assert (actions[:, 2] == 0).mean() > 0.3 and actions[:, 2].max() > 0.99


def test_car_racing_head_maps_as_the_paper():
    action = action_head(jnp.array([jnp.arctanh(0.5), 0.0, jnp.arctanh(-0.3)]), CAR)
    np.testing.assert_allclose(action, [0.5, 0.5, 0.0], atol=1e-6)
    action = action_head(jnp.array([0.0, 100.0, jnp.arctanh(0.4)]), CAR)
    np.testing.assert_allclose(action, [0.0, 1.0, 0.4], atol=1e-6)


def test_discrete_head_is_argmax():
    raw = jax.random.normal(jax.random.key(0), (100, LANDER.action_size))
    actions = jax.vmap(lambda r: action_head(r, LANDER))(raw)
    assert actions.dtype == jnp.int32
    np.testing.assert_array_equal(actions, np.argmax(np.asarray(raw), axis=1))
    with pytest.raises(ValueError, match="discrete"):
        head_bounds(LANDER)


def test_zero_controller_drives_straight_at_half_gas():
    config = make_config("smoke")
    controller = zero_controller(make_controller(config, key=jax.random.key(0)))
    z = jnp.ones(config.vae.z_dim)
    h = jnp.ones(config.rnn.hidden_size)
    np.testing.assert_allclose(act(controller, z, h, CAR), [0.0, 0.5, 0.0])
