"""ConvVAE (V): 64x64x3 frame <-> z, exactly the paper's architecture, fast on XLA CPU.

Encoder: 4 convs (32, 64, 128, 256 channels; kernel 4, stride 2, VALID; ReLU) -> flatten
-> dense mu, dense logvar. Decoder: dense z -> 1024 -> (1, 1, 1024) -> transposed convs
128 k5, 64 k5, 32 k6 (ReLU), 3 k6 (sigmoid), all stride 2. 4,348,547 parameters at z=32.

Why the layers are written by hand instead of eqx.nn.Conv2d / ConvTranspose2d: on XLA's
CPU backend a convolution with lhs dilation (a transposed conv, and the input gradient
of any strided conv) misses the fast path and runs a generic loop, several times slower
for this model. Here every layer, forward and backward, is one window gather (a static
index table; XLA fuses it with the producer's bias/ReLU) plus plain row-major GEMMs,
with hand-written VJPs: a strided conv gathers its k x k stride-2 windows; a transposed
conv is computed sub-pixel (each of the 4 output stride phases is a stride-1 conv with
ceil(k/2)^2 taps: one gather, one GEMM, a depth-to-space reshape), so there is no
scatter-add anywhere; each one's input gradient is the other one's forward; weight
gradients materialise the thin operand's transpose so the GEMM is (M, K) x (K, N) (XLA
otherwise runs a dot contracting dimension 0 as a slow plain loop). Training calls the
batched methods (``forward_batch``) so each weight gradient is one GEMM over the batch.
The mathematics is unchanged (tests compare forward and gradients against
lax.conv_general_dilated).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

ENCODER_CHANNELS = (32, 64, 128, 256)
ENCODER_KERNEL = 4
DECODER_CHANNELS = (128, 64, 32)
DECODER_KERNELS = (5, 5, 6, 6)
DENSE_WIDTH = 1024  # encoder output 2x2x256 flattened; decoder input 1x1x1024
STRIDE = 2
IMAGE_SHAPE = (64, 64, 3)


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
    so each of the 4 stride phases is an ordinary stride-1 conv with ceil(k/2)^2 taps;
    the 4 phases share one window gather and one GEMM (weights zero-padded to an even
    kernel) and interleave with a reshape (depth-to-space).
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
    w = w.reshape(c_in, taps, STRIDE, taps, STRIDE, c_out)[:, ::-1, :, ::-1]
    w = w.transpose(1, 3, 0, 2, 4, 5).reshape(taps * taps * c_in, -1)
    pad = taps - 1
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    phase_h, phase_w = height + pad, width + pad
    windows = _gather_windows(x, 1, (taps, taps), (phase_h, phase_w))
    out = _gemm(windows.reshape(batch * phase_h * phase_w, -1), w)
    out = out.reshape(batch, phase_h, phase_w, STRIDE, STRIDE, c_out)
    out = out.transpose(0, 1, 3, 2, 4, 5).reshape(
        batch, STRIDE * phase_h, STRIDE * phase_w, c_out
    )
    return out[:, :out_h, :out_w]


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
    # dW^T = G^T @ windows: the thin G (c_out columns) is the one transposed.
    d_weight = _gemm(_transposed(grad_rows), rows).T.reshape(weight.shape)
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
        return strided_conv(x, self.weight) + self.bias


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
        return transposed_conv(x, self.weight) + self.bias


class ConvVAE(eqx.Module):
    """The paper's ConvVAE. Methods take ONE image (64, 64, 3) in [0, 1]; vmap them."""

    encoder: tuple[StridedConv, ...]
    to_mu: Dense
    to_logvar: Dense
    from_z: Dense
    decoder: tuple[TransposedConv, ...]
    z_dim: int = eqx.field(static=True)

    def __init__(self, z_dim: int = 32, *, key: PRNGKeyArray):
        keys = iter(jax.random.split(key, 11))
        channels = (IMAGE_SHAPE[-1],) + ENCODER_CHANNELS
        self.encoder = tuple(
            StridedConv(c_in, c_out, ENCODER_KERNEL, key=next(keys))
            for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self.to_mu = Dense(DENSE_WIDTH, z_dim, key=next(keys))
        self.to_logvar = Dense(DENSE_WIDTH, z_dim, key=next(keys))
        self.from_z = Dense(z_dim, DENSE_WIDTH, key=next(keys))
        channels = (DENSE_WIDTH,) + DECODER_CHANNELS + (IMAGE_SHAPE[-1],)
        self.decoder = tuple(
            TransposedConv(c_in, c_out, kernel, key=next(keys))
            for c_in, c_out, kernel in zip(channels[:-1], channels[1:], DECODER_KERNELS)
        )
        self.z_dim = z_dim

    def encode(
        self, x: Float[Array, "64 64 3"]
    ) -> tuple[Float[Array, " z"], Float[Array, " z"]]:
        if x.shape != IMAGE_SHAPE:
            raise ValueError(
                f"ConvVAE.encode expects one {IMAGE_SHAPE} image, got {x.shape}"
            )
        mu, logvar = self.encode_batch(x[None])
        return mu[0], logvar[0]

    def decode(self, z: Float[Array, " z"]) -> Float[Array, "64 64 3"]:
        if z.shape != (self.z_dim,):
            raise ValueError(
                f"ConvVAE.decode expects z of shape ({self.z_dim},), got {z.shape}"
            )
        return self.decode_batch(z[None])[0]

    def __call__(
        self, x: Float[Array, "64 64 3"], *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "64 64 3"], Float[Array, " z"], Float[Array, " z"]]:
        recon, mu, logvar = self.forward_batch(x[None], key[None])
        return recon[0], mu[0], logvar[0]

    # Batched forms: the same maths on (B, ...) arrays without vmap. Training uses
    # these, so that each layer's custom VJP sums its weight gradient over the batch
    # inside one GEMM (under vmap it would form per-image weight gradients first).
    def encode_batch(
        self, x: Float[Array, "b 64 64 3"]
    ) -> tuple[Float[Array, "b z"], Float[Array, "b z"]]:
        h = x
        for conv in self.encoder:
            h = jax.nn.relu(conv(h))
        h = h.reshape(h.shape[0], -1)
        return self.to_mu(h), self.to_logvar(h)

    def decode_batch(self, z: Float[Array, "b z"]) -> Float[Array, "b 64 64 3"]:
        h = self.from_z(z).reshape(z.shape[0], 1, 1, DENSE_WIDTH)
        for deconv in self.decoder[:-1]:
            h = jax.nn.relu(deconv(h))
        return jax.nn.sigmoid(self.decoder[-1](h))

    def forward_batch(
        self, x: Float[Array, "b 64 64 3"], keys: PRNGKeyArray
    ) -> tuple[Float[Array, "b 64 64 3"], Float[Array, "b z"], Float[Array, "b z"]]:
        """(recon, mu, logvar) of a batch; image i samples z with keys[i]."""
        mu, logvar = self.encode_batch(x)
        noise = jax.vmap(lambda k: jax.random.normal(k, mu.shape[1:], mu.dtype))(keys)
        z = mu + jnp.exp(0.5 * logvar) * noise
        return self.decode_batch(z), mu, logvar


def count_parameters(model: eqx.Module) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array)))


def kl_divergence(
    mu: Float[Array, " z"], logvar: Float[Array, " z"]
) -> Float[Array, ""]:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dimensions."""
    return -0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar))


def vae_terms(
    model: ConvVAE, frames: Float[Array, "batch 64 64 3"], key: PRNGKeyArray
) -> tuple[Float[Array, " batch"], Float[Array, " batch"]]:
    """Per image: summed squared reconstruction error and KL, with z sampled."""
    keys = jax.random.split(key, frames.shape[0])
    if isinstance(model, ConvVAE):
        recon, mu, logvar = model.forward_batch(frames, keys)
    else:  # any module with the single-image __call__ (benchmark variants)
        recon, mu, logvar = jax.vmap(lambda x, k: model(x, key=k))(frames, keys)
    return jnp.sum((recon - frames) ** 2, axis=(1, 2, 3)), jax.vmap(kl_divergence)(
        mu, logvar
    )


def vae_loss(
    model: ConvVAE,
    frames: Float[Array, "batch 64 64 3"],
    key: PRNGKeyArray,
    *,
    beta: float | Array = 1.0,
    kl_tolerance: float = 0.5,
) -> tuple[Array, dict[str, Array]]:
    """Batch mean of summed squared error + beta * max(KL, kl_tolerance * z_dim).

    The free-bits floor is applied per image, as in the paper's code: below the floor
    the KL term has no gradient, so the encoder may spend those nats on reconstruction.
    """
    recon, kl = vae_terms(model, frames, key)
    loss = jnp.mean(recon + beta * jnp.maximum(kl, kl_tolerance * model.z_dim))
    return loss, {"recon": jnp.mean(recon), "kl": jnp.mean(kl)}


def beta_at(step: int | Array, beta: float, anneal_steps: int) -> Array:
    """beta, ramped linearly from 0 over the first ``anneal_steps`` steps when > 0."""
    if anneal_steps <= 0:
        return jnp.asarray(beta, jnp.float32)
    return beta * jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / anneal_steps)


def frames_to_float(frames: np.ndarray | Array) -> Array:
    """uint8 frames (..., 64, 64, 3) -> float32 in [0, 1]."""
    return jnp.asarray(frames, jnp.float32) / 255.0


@eqx.filter_jit
def _encode_batch(vae: ConvVAE, frames: Array) -> tuple[Array, Array]:
    return jax.vmap(vae.encode)(frames_to_float(frames))


def encode_frames(
    vae: ConvVAE, frames: np.ndarray, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, logvar) float32 (N, z) of uint8 frames (N, 64, 64, 3), in jitted batches.

    The last batch is zero-padded to ``batch_size`` so only one shape is ever compiled.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1:] != IMAGE_SHAPE or frames.dtype != np.uint8:
        raise ValueError(
            f"encode_frames expects uint8 frames (N, 64, 64, 3), got {frames.dtype} "
            f"{frames.shape}"
        )
    mus, logvars = [], []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start : start + batch_size]
        padded = np.zeros((batch_size,) + IMAGE_SHAPE, np.uint8)
        padded[: len(chunk)] = chunk
        mu, logvar = _encode_batch(vae, padded)
        mus.append(np.asarray(mu)[: len(chunk)])
        logvars.append(np.asarray(logvar)[: len(chunk)])
    if not mus:
        empty = np.zeros((0, vae.z_dim), np.float32)
        return empty, empty.copy()
    return np.concatenate(mus), np.concatenate(logvars)

