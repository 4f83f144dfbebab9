"""An LSTM over a batch of whole sequences, with a hand-written backward pass.

Autodiff through a scanned ``eqx.nn.LSTMCell`` adds each weight's gradient into an
accumulator step by step: per step a GEMM whose inner dimension is the batch (32
windows in training) and a read and write of the whole (4H, H) matrix. Here the
backward scan carries only the gate gradients; each weight gradient is then one GEMM
over every step of every sequence, and the forward's input projection is one GEMM
before the scan. The cell is ``eqx.nn.LSTMCell``'s (gates i, f, g, o; one bias),
computed batch-major (x·Wᵀ), so its sums round differently from the cell's W·x.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def lstm_sequences(
    cell: eqx.nn.LSTMCell,
    xs: Float[Array, "batch time inputs"],
    state: tuple[Float[Array, "batch hidden"], Float[Array, "batch hidden"]],
) -> Float[Array, "batch time hidden"]:
    """Every step's h of ``cell`` run over each sequence of ``xs`` from ``state``.

    Gradients reach the cell's weights, ``xs`` and ``state``."""
    if cell.bias is None:
        raise ValueError("lstm_sequences needs an LSTMCell with a bias")
    hs = _sequences(
        cell.weight_ih, cell.weight_hh, cell.bias, jnp.swapaxes(xs, 0, 1), *state
    )
    return jnp.swapaxes(hs, 0, 1)


def cell_sequences(
    cell: eqx.nn.LSTMCell,
    xs: Float[Array, "batch time inputs"],
    state: tuple[Float[Array, "batch hidden"], Float[Array, "batch hidden"]],
) -> Float[Array, "batch time hidden"]:
    """``lstm_sequences`` by JAX's autodiff through ``cell`` stepped in a scan: the
    reference the hand-written VJP is tested and benchmarked against."""

    def one_sequence(x, h, c):
        def step(carry, x_t):
            carry = cell(x_t, carry)
            return carry, carry[0]

        return jax.lax.scan(step, (h, c), x)[1]

    return jax.vmap(one_sequence)(xs, *state)


def _gates(lin: Array) -> tuple[Array, Array, Array, Array]:
    i, f, g, o = jnp.split(lin, 4, axis=-1)
    return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)


@jax.custom_vjp
def _sequences(w_ih, w_hh, bias, xs, h0, c0):
    return _forward(w_ih, w_hh, bias, xs, h0, c0)[0]


def _forward(w_ih, w_hh, bias, xs, h0, c0):
    """Time-major: ``xs`` (T, B, I) -> hs (T, B, H), and what the backward reads."""
    projected = jnp.einsum("tbi,gi->tbg", xs, w_ih)

    def step(carry, x_projected):
        h, c = carry
        i, f, g, o = _gates(x_projected + h @ w_hh.T + bias)
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), (h, c, i, f, g, o)

    _, (hs, cs, i, f, g, o) = jax.lax.scan(step, (h0, c0), projected)
    return hs, (w_ih, w_hh, xs, h0, c0, hs, cs, i, f, g, o)


def _backward(residuals, d_hs):
    w_ih, w_hh, xs, h0, c0, hs, cs, i, f, g, o = residuals
    h_before = jnp.concatenate([h0[None], hs[:-1]])
    c_before = jnp.concatenate([c0[None], cs[:-1]])

    def step(carry, inputs):
        # carry: the gradients that step t+1 sends back to h_t and c_t
        dh_later, dc_later = carry
        dh_out, c, c_prev, i, f, g, o = inputs
        dh = dh_out + dh_later
        tanh_c = jnp.tanh(c)
        dc = dc_later + dh * o * (1 - tanh_c**2)
        d_lin = jnp.concatenate(
            [
                dc * g * i * (1 - i),
                dc * c_prev * f * (1 - f),
                dc * i * (1 - g**2),
                dh * tanh_c * o * (1 - o),
            ],
            axis=-1,
        )
        return (d_lin @ w_hh, dc * f), d_lin

    (dh0, dc0), d_lin = jax.lax.scan(
        step,
        (jnp.zeros_like(h0), jnp.zeros_like(c0)),
        (d_hs, cs, c_before, i, f, g, o),
        reverse=True,
    )
    return (
        jnp.einsum("tbg,tbi->gi", d_lin, xs),
        jnp.einsum("tbg,tbh->gh", d_lin, h_before),
        d_lin.sum((0, 1)),
        jnp.einsum("tbg,gi->tbi", d_lin, w_ih),
        dh0,
        dc0,
    )


_sequences.defvjp(_forward, _backward)
