"""The batched LSTM with its hand-written VJP against autodiff through the cell."""

import equinox as eqx
import jax
import numpy as np
import pytest

from world_models.models.lstm import cell_sequences, lstm_sequences
from world_models.models.mdnrnn import MDNRNN, dropout_mask


@pytest.mark.parametrize("batch, steps", [(1, 1), (3, 9)])
def test_lstm_sequences_match_the_cell_forward_and_vjp(batch, steps):
    keys = jax.random.split(jax.random.key(0), 5)
    cell = eqx.nn.LSTMCell(4, 6, key=keys[0])
    cell = eqx.tree_at(lambda c: c.bias, cell, jax.random.normal(keys[1], (24,)))
    xs = jax.random.normal(keys[2], (batch, steps, 4))
    state = tuple(jax.random.normal(k, (batch, 6)) for k in jax.random.split(keys[3]))
    cotangent = jax.random.normal(keys[4], (batch, steps, 6))

    def loss(run):
        return lambda cell, xs, state: (run(cell, xs, state) * cotangent).sum()

    ours = jax.value_and_grad(loss(lstm_sequences), argnums=(0, 1, 2))(cell, xs, state)
    reference = jax.value_and_grad(loss(cell_sequences), argnums=(0, 1, 2))(
        cell, xs, state
    )
    np.testing.assert_allclose(
        lstm_sequences(cell, xs, state), cell_sequences(cell, xs, state), atol=1e-6
    )
    leaves = jax.tree.leaves(ours)
    assert len(leaves) == 1 + 3 + 1 + 2  # loss; w_ih, w_hh, bias; xs; h0, c0
    for got, want in zip(leaves, jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_batched_sequences_equal_each_window_called_alone():
    model = MDNRNN(3, 2, 8, 2, key=jax.random.key(0), num_heads=2)
    zs = jax.random.normal(jax.random.key(1), (4, 7, 3))
    actions = jax.random.normal(jax.random.key(2), (4, 7, 2))
    masks = jax.vmap(dropout_mask, in_axes=(0, None, None))(
        jax.random.split(jax.random.key(3), 4), 8, 0.5
    )
    batched = model.sequences(zs, actions, masks)
    call = jax.vmap(model, in_axes=(0, 0, None, 0, None))
    alone = call(zs, actions, None, masks, True)
    assert batched.mu.shape == (4, 7, 2, 3, 2)
    for got, want in zip(batched, alone[1], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
