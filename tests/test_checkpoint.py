import os
import shutil
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from world_models.checkpoint import Checkpointer, CheckpointError


def _state(seed):
    model = eqx.nn.MLP(4, 2, 8, 2, key=jax.random.PRNGKey(seed))
    opt = optax.adam(1e-3)
    return {"model": model, "opt": opt.init(eqx.filter(model, eqx.is_array)),
            "key": jax.random.PRNGKey(seed + 1), "typed_key": jax.random.key(seed + 2),
            "count": jnp.asarray(seed, jnp.int32)}


def _leaves_equal(a, b):
    la = jax.tree.leaves(eqx.filter(a, eqx.is_array))
    lb = jax.tree.leaves(eqx.filter(b, eqx.is_array))
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_and_latest(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", {"lr": 1e-3})
    assert ckpt.latest_step() is None
    ckpt.save(5, _state(0))
    ckpt.save(10, _state(1))
    assert ckpt.latest_step() == 10
    _leaves_equal(ckpt.restore(_state(7)), _state(1))
    _leaves_equal(ckpt.restore(_state(7), step=5), _state(0))


def test_keep_limits_old_steps(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", {}, keep=2)
    for step in range(4):
        ckpt.save(step, _state(step))
    ckpt2 = Checkpointer(tmp_path / "ck", {})
    assert ckpt2.latest_step() == 3
    with pytest.raises(CheckpointError):
        ckpt2.restore(_state(0), step=0)


def test_other_config_refused(tmp_path):
    Checkpointer(tmp_path / "ck", {"lr": 1e-3}).save(1, _state(0))
    with pytest.raises(CheckpointError, match="another config.*lr"):
        Checkpointer(tmp_path / "ck", {"lr": 1e-2})


def test_a_setting_added_later_matches_only_at_its_default(tmp_path):
    Checkpointer(tmp_path / "ck", {"lr": 1e-3}).save(1, _state(0))
    defaults = {"lr": 1e-4, "new": 0.0}
    resumed = Checkpointer(tmp_path / "ck", {"lr": 1e-3, "new": 0.0}, defaults=defaults)
    assert resumed.latest_step() == 1
    with pytest.raises(CheckpointError, match="another config.*new"):
        Checkpointer(tmp_path / "ck", {"lr": 1e-3, "new": 0.5}, defaults=defaults)
    # no default known
    with pytest.raises(CheckpointError, match="another config.*new"):
        Checkpointer(tmp_path / "ck", {"lr": 1e-3, "new": 0.0})
    # saved keys as before
    with pytest.raises(CheckpointError, match="another config.*lr"):
        Checkpointer(tmp_path / "ck", {"lr": 1e-4, "new": 0.0}, defaults=defaults)


def test_an_ignored_key_is_not_compared_the_others_are(tmp_path):
    Checkpointer(tmp_path / "ck", {"lr": 1e-3, "seed": 1}).save(1, _state(0))
    resumed = Checkpointer(tmp_path / "ck", {"lr": 1e-3, "seed": 0}, ignore=("seed",))
    _leaves_equal(resumed.restore(_state(7)), _state(0))
    with pytest.raises(CheckpointError, match="another config.*seed"):
        Checkpointer(tmp_path / "ck", {"lr": 1e-3, "seed": 0})
    with pytest.raises(CheckpointError, match="another config.*lr"):
        Checkpointer(tmp_path / "ck", {"lr": 1e-2, "seed": 0}, ignore=("seed",))


def test_other_shapes_refused(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", {})
    ckpt.save(1, {"w": jnp.zeros((3, 4))})
    with pytest.raises(CheckpointError):
        ckpt.restore({"w": jnp.zeros((5, 4))})


def test_corrupt_checkpoint_named(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", {})
    ckpt.save(1, _state(0))
    for path in (tmp_path / "ck" / "1").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
            path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=str(tmp_path / "ck")):
        Checkpointer(tmp_path / "ck", {}).restore(_state(0))


def test_half_written_step_is_ignored(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", {})
    ckpt.save(1, _state(0))
    # What a process killed mid-save leaves: orbax's temporary folder for the next step.
    shutil.copytree(tmp_path / "ck" / "1",
                    tmp_path / "ck" / "2.orbax-checkpoint-tmp-123")
    fresh = Checkpointer(tmp_path / "ck", {})
    assert fresh.latest_step() == 1
    _leaves_equal(fresh.restore(_state(3)), _state(0))


def test_reading_an_absent_checkpoint_creates_nothing(tmp_path):
    ckpt = Checkpointer(tmp_path / "absent", {})
    assert ckpt.latest_step() is None
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ckpt.restore(_state(0))
    assert not (tmp_path / "absent").exists()


def test_restore_into_a_shape_only_template(tmp_path):
    ckpt = Checkpointer(tmp_path / "ck", {})
    ckpt.save(1, _state(4))
    template = eqx.filter_eval_shape(_state, 0)
    _leaves_equal(ckpt.restore(template), _state(4))


_SAVE_ON_SECOND_DEVICE = """
import sys, jax, jax.numpy as jnp
from world_models.checkpoint import Checkpointer
state = {"w": jax.device_put(jnp.arange(6.0).reshape(2, 3), jax.devices()[1])}
saver = Checkpointer(sys.argv[1], {"lr": 0.1})
saver.save(1, state)
saver.close()
"""


def test_a_checkpoint_saved_on_other_devices_restores_here(tmp_path):
    """A GPU run's checkpoints are read by CPU workers: here a process with two
    devices saves on its second one, and this one-device process restores it."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    subprocess.run(
        [sys.executable, "-c", _SAVE_ON_SECOND_DEVICE, str(tmp_path)],
        env=env,
        check=True,
    )
    restored = Checkpointer(tmp_path, {"lr": 0.1}).restore({"w": jnp.zeros((2, 3))})
    np.testing.assert_array_equal(restored["w"], np.arange(6.0).reshape(2, 3))
