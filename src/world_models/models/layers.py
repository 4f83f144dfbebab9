"""The layers V is built from: dense, and stride-2 convolutions in two lowerings.

``gather`` is written by hand (below); ``xla`` is ``lax.conv_general_dilated``. Both
compute the same function (tests compare outputs and gradients). ``gather`` is the
default on every backend measured: on the CPU ``xla`` is several times slower, and on
an H200 (TF32) V trains at 36k images/s with ``gather`` against 19k with cuDNN at batch
100, 127k against 37k at batch 1000 (docs/benchmarks.md). ``WORLD_MODELS_CONV=xla``
selects the other.

Why they are written by hand instead of eqx.nn.Conv2d / ConvTranspose2d: on XLA's
CPU backend a convolution with lhs dilation (a transposed conv, and the input gradient
of any strided conv) misses the fast path and runs a generic loop, several times slower
for this model. Here every layer, forward and backward, is a window gather (a static
index table; XLA fuses it with the producer's bias/ReLU) or a sum of shifted slices,
plus plain row-major GEMMs, with hand-written VJPs: a strided conv gathers its k x k
stride-2 windows; a transposed conv is computed sub-pixel (each of the 4 output stride
phases is a stride-1 conv with ceil(k/2)^2 taps: a window gather and one GEMM, or for a
thin output one GEMM and a sum of shifted slices; then a depth-to-space reshape), so
there is no scatter-add anywhere; each one's input gradient is the other one's forward;
weight gradients materialise the thin operand's transpose so the GEMM is (M, K) x (K,
N) (XLA otherwise runs a dot contracting dimension 0 as a slow plain loop). Training
calls the batched methods (``forward_batch``) so each weight gradient is one GEMM over
the batch.
"""

from __future__ import annotations

import math
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

STRIDE = 2
CONV_LOWERINGS = ("gather", "xla")
CONV_LOWERING_VARIABLE = "WORLD_MODELS_CONV"
_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_lowering() -> str:
    """The convolution lowering traced now: ``$WORLD_MODELS_CONV``, else ``gather``."""
    chosen = os.environ.get(CONV_LOWERING_VARIABLE) or "gather"
    if chosen not in CONV_LOWERINGS:
        raise ValueError(
            f"{CONV_LOWERING_VARIABLE}={chosen!r}; known: {', '.join(CONV_LOWERINGS)}"
        )
    return chosen


def _uniform(key: PRNGKeyArray, shape: tuple[int, ...], fan_in: int) -> Array:
    # The PyTorch / Equinox default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


class Dense(eqx.Module):
    weight: Float[Array, "n_in n_out"]
    bias: Float[Array, " n_out"]

    def __init__(self, n_in: int, n_out: int, *, key: PRNGKeyArray):
        wkey, bkey = jax.random.split(key)
        self.weight = _uniform(wkey, (n_in, n_out), n_in)
        self.bias = _uniform(bkey, (n_out,), n_in)

    def __call__(self, x: Float[Array, " n_in"]) -> Float[Array, " n_out"]:
        return x @ self.weight + self.bias


def _gather_windows(
    x: Float[Array, "b h w c"], stride: int, taps: tuple[int, int], out: tuple[int, int]
) -> Float[Array, "b ho wo kkc"]:
    """out[n, i, j, (a, b, c)] = x[n, stride*i + a, stride*j + b, c], as GEMM rows.

    One gather of whole channel rows with a static index table: XLA CPU emits it as a
    single loop that also absorbs the producer (bias, ReLU, padding), where a
    concatenation of k * k slices costs one pass per slice plus one more.
    """
    batch, height, width, channels = x.shape
    (kh, kw), (out_h, out_w) = taps, out
    rows = stride * np.arange(out_h)[:, None, None, None] + np.arange(kh)[:, None]
    cols = stride * np.arange(out_w)[None, :, None, None] + np.arange(kw)
    index = (rows * width + cols).reshape(-1)  # (i, j, a, b) flattened
    flat = x.reshape(batch, height * width, channels)
    windows = flat.at[:, index].get(mode="promise_in_bounds")
    return windows.reshape(batch, out_h, out_w, kh * kw * channels)


def _windows(x: Float[Array, "b h w c"], kernel: int) -> Float[Array, "b ho wo kkc"]:
    """The k x k windows at stride 2 (VALID); (a, b, c) is a (k, k, c_in, c_out)
    weight's row order."""
    _, height, width, _ = x.shape
    out = ((height - kernel) // STRIDE + 1, (width - kernel) // STRIDE + 1)
    return _gather_windows(x, STRIDE, (kernel, kernel), out)


def _gemm(a: Array, b: Array) -> Array:
    """(M, K) @ (K, N), row-major: the form XLA CPU hands to its fast GEMM library."""
    return lax.dot_general(a, b, (((1,), (0,)), ((), ())))


def _gemm_nt(a: Array, b: Array) -> Array:
    """(M, K) @ (N, K)^T, also a fast-path form."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())))


def _transposed(a: Array) -> Array:
    """a.T materialised. Without the barrier XLA folds the transpose back into the
    dot as a contraction over dimension 0, which its CPU backend runs as a slow loop."""
    return lax.optimization_barrier(a.T)


def _transposed_conv(x: Array, weight: Array) -> Array:
    """Stride-2 k x k transposed conv (no padding) of x (B, H, W, c_in) with weight
    (c_in, k, k, c_out) -> (B, 2(H-1)+k, 2(W-1)+k, c_out), without any scatter-add.

    Sub-pixel form: output pixel (2m + r, 2n + s) only sees kernel taps (2p+r, 2q+s),
    so each of the 4 stride phases is an ordinary stride-1 conv with ceil(k/2)^2 taps
    (weights zero-padded to an even kernel), and the phases interleave with a reshape
    (depth-to-space). Each phase pixel is computed one of two ways, whichever moves
    fewer floats per pixel: its input windows gathered, then one GEMM (ceil(k/2)^2 x
    c_in floats), or one GEMM of every input pixel's k x k x c_out products, then
    the ceil(k/2)^2 shifted slices of those products added (V's last layer, whose
    c_out is 3: V's training step 1.10x faster, docs/benchmarks.md).
    """
    batch, height, width, c_in = x.shape
    kernel, c_out = weight.shape[1], weight.shape[3]
    out_h, out_w = STRIDE * (height - 1) + kernel, STRIDE * (width - 1) + kernel
    if height == width == 1:  # no overlap: a plain dense layer
        out = _gemm(x.reshape(batch, c_in), weight.reshape(c_in, -1))
        return out.reshape(batch, kernel, kernel, c_out)
    taps = -(-kernel // STRIDE)
    even = STRIDE * taps
    w = jnp.pad(weight, ((0, 0), (0, even - kernel), (0, even - kernel), (0, 0)))
    phase_h, phase_w = height + taps - 1, width + taps - 1
    if _products_first(c_in, c_out, taps):
        out = _overlap_add(_gemm(x.reshape(-1, c_in), w.reshape(c_in, -1)), x.shape,
                           taps)
    else:
        w = w.reshape(c_in, taps, STRIDE, taps, STRIDE, c_out)[:, ::-1, :, ::-1]
        w = w.transpose(1, 3, 0, 2, 4, 5).reshape(taps * taps * c_in, -1)
        pad = taps - 1
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        windows = _gather_windows(x, 1, (taps, taps), (phase_h, phase_w))
        out = _gemm(windows.reshape(batch * phase_h * phase_w, -1), w)
    out = out.reshape(batch, phase_h, phase_w, STRIDE, STRIDE, c_out)
    out = out.transpose(0, 1, 3, 2, 4, 5).reshape(
        batch, STRIDE * phase_h, STRIDE * phase_w, c_out
    )
    return out[:, :out_h, :out_w]


def _products_first(c_in: int, c_out: int, taps: int) -> bool:
    """Whether a transposed conv's phase pixels come from per-pixel products (fewer
    floats moved) rather than gathered windows."""
    return (STRIDE * taps) ** 2 * c_out < taps * taps * c_in


def _overlap_add(products: Array, shape: tuple[int, ...], taps: int) -> Array:
    """Phase pixels (B, H + taps - 1, W + taps - 1, 2, 2, c_out) from every input
    pixel's products with the even kernel, (B * H * W, (2 taps)^2 c_out): phase pixel
    m receives tap p of input pixel m - p."""
    batch, height, width, _ = shape
    products = products.reshape(batch, height, width, taps, STRIDE, taps, STRIDE, -1)
    return sum(
        jnp.pad(
            products[:, :, :, p, :, q],
            ((0, 0), (p, taps - 1 - p), (q, taps - 1 - q), (0, 0), (0, 0), (0, 0)),
        )
        for p in range(taps)
        for q in range(taps)
    )


@jax.custom_vjp
def strided_conv(x: Array, weight: Array) -> Array:
    """VALID k x k conv, stride 2, of x (B, H, W, c_in), weight (k, k, c_in, c_out)."""
    return _strided_conv_fwd(x, weight)[0]


def _strided_conv_fwd(x, weight):
    windows = _windows(x, weight.shape[0])
    batch, out_h, out_w, depth = windows.shape
    rows = windows.reshape(-1, depth)
    out = _gemm(rows, weight.reshape(depth, -1))
    return out.reshape(batch, out_h, out_w, -1), (rows, weight, x.shape)


def _strided_conv_bwd(res, grad):
    rows, weight, (batch, height, width, c_in) = res
    grad_rows = grad.reshape(-1, grad.shape[-1])
    # dW^T = G^T @ windows: the thin G (c_out columns) is the one transposed. The
    # barrier keeps XLA from folding the final .T into the dot, which would make it
    # contract the windows over dimension 0: a plain loop, up to 2x slower on the CPU.
    d_weight_t = lax.optimization_barrier(_gemm(_transposed(grad_rows), rows))
    d_weight = d_weight_t.T.reshape(weight.shape)
    # dx is the transposed conv of grad by the same taps.
    d_x = _transposed_conv(grad, weight.transpose(3, 0, 1, 2))
    d_x = jnp.pad(
        d_x,
        ((0, 0), (0, height - d_x.shape[1]), (0, width - d_x.shape[2]), (0, 0)),
    )
    return d_x, d_weight


strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


@jax.custom_vjp
def transposed_conv(x: Array, weight: Array) -> Array:
    """k x k transposed conv, stride 2, unpadded: out[2i+a, 2j+b] += x[i,j] @ w[:,a,b].

    x (B, H, W, c_in), weight (c_in, k, k, c_out) -> (B, 2(H-1)+k, 2(W-1)+k, c_out).
    """
    return _transposed_conv(x, weight)


def _transposed_conv_fwd(x, weight):
    return _transposed_conv(x, weight), (x, weight)


def _transposed_conv_bwd(res, grad):
    x, weight = res
    c_in = x.shape[-1]
    # Both gradients read the k x k stride-2 windows of grad (a strided conv's im2col).
    windows = _windows(grad, weight.shape[1])
    rows = windows.reshape(-1, windows.shape[-1])
    flat_weight = weight.reshape(c_in, -1)
    d_x = _gemm_nt(rows, flat_weight).reshape(x.shape)
    d_weight = _gemm(_transposed(x.reshape(-1, c_in)), rows).reshape(weight.shape)
    return d_x, d_weight


transposed_conv.defvjp(_transposed_conv_fwd, _transposed_conv_bwd)


def xla_strided_conv(x: Array, weight: Array) -> Array:
    """``strided_conv`` through lax.conv_general_dilated."""
    return lax.conv_general_dilated(
        x, weight, (STRIDE, STRIDE), "VALID", dimension_numbers=_NHWC
    )


def xla_transposed_conv(x: Array, weight: Array) -> Array:
    """``transposed_conv`` through lax.conv_general_dilated: lhs dilation with the
    spatially flipped kernel, fully padded."""
    kernel = weight.shape[1]
    flipped = jnp.flip(weight, (1, 2)).transpose(1, 2, 0, 3)
    return lax.conv_general_dilated(
        x,
        flipped,
        (1, 1),
        [(kernel - 1, kernel - 1)] * 2,
        lhs_dilation=(STRIDE, STRIDE),
        dimension_numbers=_NHWC,
    )


def _batched(layer):
    """Layers run on a batch (B, H, W, C); a single (H, W, C) image is a batch of 1."""

    def call(self, x):
        if x.ndim == 3:
            return call(self, x[None])[0]
        return layer(self, x)

    return call


class StridedConv(eqx.Module):
    """VALID k x k convolution with stride 2 on (B, H, W, C_in) or (H, W, C_in)."""

    weight: Float[Array, "k k c_in c_out"]
    bias: Float[Array, " c_out"]
    kernel: int = eqx.field(static=True)

    def __init__(self, c_in: int, c_out: int, kernel: int, *, key: PRNGKeyArray):
        wkey, bkey = jax.random.split(key)
        fan_in = c_in * kernel * kernel
        self.weight = _uniform(wkey, (kernel, kernel, c_in, c_out), fan_in)
        self.bias = _uniform(bkey, (c_out,), fan_in)
        self.kernel = kernel

    @_batched
    def __call__(self, x: Float[Array, "b h w c_in"]) -> Float[Array, "b ho wo c_out"]:
        conv = strided_conv if conv_lowering() == "gather" else xla_strided_conv
        return conv(x, self.weight) + self.bias


class TransposedConv(eqx.Module):
    """k x k transposed convolution with stride 2 (no padding).

    out[2i + a, 2j + b] += x[i, j] @ weight[:, a, b]; output (2(H-1)+k, 2(W-1)+k).
    """

    weight: Float[Array, "c_in k k c_out"]
    bias: Float[Array, " c_out"]
    kernel: int = eqx.field(static=True)

    def __init__(self, c_in: int, c_out: int, kernel: int, *, key: PRNGKeyArray):
        wkey, bkey = jax.random.split(key)
        # PyTorch's ConvTranspose2d fan-in convention: weight.size(1) * k * k.
        fan_in = c_out * kernel * kernel
        self.weight = _uniform(wkey, (c_in, kernel, kernel, c_out), fan_in)
        self.bias = _uniform(bkey, (c_out,), fan_in)
        self.kernel = kernel

    @_batched
    def __call__(self, x: Float[Array, "b h w c_in"]) -> Float[Array, "b ho wo c_out"]:
        conv = transposed_conv if conv_lowering() == "gather" else xla_transposed_conv
        return conv(x, self.weight) + self.bias
