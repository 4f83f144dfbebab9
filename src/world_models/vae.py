"""ConvVAE (V): 64x64x3 frame <-> z, exactly the paper's architecture, fast on XLA CPU.

Encoder: 4 convs (32, 64, 128, 256 channels; kernel 4, stride 2, VALID; ReLU) -> flatten
-> dense mu, dense logvar. Decoder: dense z -> 1024 -> (1, 1, 1024) -> transposed convs
128 k5, 64 k5, 32 k6 (ReLU), 3 k6 (sigmoid), all stride 2. 4,348,547 parameters at z=32.

Why the layers are written by hand instead of eqx.nn.Conv2d / ConvTranspose2d: on XLA's
CPU backend a convolution with lhs dilation (a transposed conv, and the input gradient
of any strided conv) misses the fast path and runs a generic loop, several times slower
for this model. Here every layer is a single GEMM in NHWC layout: strided convs gather
their windows (im2col), transposed convs multiply first and then overlap-add the k x k
output patches (col2im). im2col and col2im are each other's transpose and custom VJP, so
the backward pass is GEMMs too. The mathematics is unchanged (tests compare forward and
gradients against lax.conv_general_dilated).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
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


def _blocks(size: int, out_size: int, kernel: int) -> int:
    """Rows of 2x2 blocks that cover both the image and every k x k stride-2 window."""
    taps = -(-kernel // STRIDE)
    return max(out_size + taps - 1, -(-size // STRIDE))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def im2col(x: Float[Array, "h w c"], kernel: int) -> Float[Array, "ho wo k k c"]:
    """The k x k windows at stride 2 of an image (VALID): out[i,j,a,b] = x[2i+a, 2j+b].

    The image is cut into 2x2 blocks, so each window is a few shifted block slices
    (contiguous copies); XLA fuses the stack into one loop.
    """
    height, width, channels = x.shape
    out_h, out_w = (height - kernel) // STRIDE + 1, (width - kernel) // STRIDE + 1
    block_h = _blocks(height, out_h, kernel)
    block_w = _blocks(width, out_w, kernel)
    taps = -(-kernel // STRIDE)
    x = jnp.pad(
        x, ((0, STRIDE * block_h - height), (0, STRIDE * block_w - width), (0, 0))
    )
    x = x.reshape(block_h, STRIDE, block_w, STRIDE, channels)
    windows = jnp.stack(
        [
            jnp.stack([x[p : p + out_h, :, q : q + out_w] for q in range(taps)], axis=3)
            for p in range(taps)
        ],
        axis=1,
    )  # (out_h, taps, 2, out_w, taps, 2, c) = (i, p, r, j, q, s, c) with a = 2p + r
    windows = windows.transpose(0, 3, 1, 2, 4, 5, 6).reshape(
        out_h, out_w, STRIDE * taps, STRIDE * taps, channels
    )
    return windows[:, :, :kernel, :kernel]


def col2im(cols: Float[Array, "ho wo k k c"], height: int, width: int) -> Array:
    """Overlap-add of k x k patches at stride 2: the exact transpose of im2col."""
    return _col2im(cols, (height, width))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _col2im(cols: Array, size: tuple[int, int]) -> Array:
    out_h, out_w, kernel, _, channels = cols.shape
    height, width = size
    block_h = _blocks(height, out_h, kernel)
    block_w = _blocks(width, out_w, kernel)
    taps = -(-kernel // STRIDE)
    pad = STRIDE * taps - kernel
    cols = jnp.pad(cols, ((0, 0), (0, 0), (0, pad), (0, pad), (0, 0)))
    cols = cols.reshape(out_h, out_w, taps, STRIDE, taps, STRIDE, channels)
    blocks = sum(
        jnp.pad(
            cols[:, :, p, :, q].transpose(0, 2, 1, 3, 4),  # (i, r, j, s, c)
            (
                (p, block_h - out_h - p),
                (0, 0),
                (q, block_w - out_w - q),
                (0, 0),
                (0, 0),
            ),
        )
        for p in range(taps)
        for q in range(taps)
    )
    image = blocks.reshape(STRIDE * block_h, STRIDE * block_w, channels)
    return image[:height, :width]


# Autodiff of the slices and pads above would materialise one padded copy per kernel
# offset; the transpose of each map is the other one, a single fused gather or add.
def _im2col_fwd(x, kernel):
    return im2col(x, kernel), x.shape[:2]


def _im2col_bwd(kernel, size, grad):
    return (_col2im(grad, size),)


def _col2im_fwd(cols, size):
    return _col2im(cols, size), cols.shape[2]


def _col2im_bwd(size, kernel, grad):
    return (im2col(grad, kernel),)


im2col.defvjp(_im2col_fwd, _im2col_bwd)
_col2im.defvjp(_col2im_fwd, _col2im_bwd)


class StridedConv(eqx.Module):
    """VALID k x k convolution with stride 2 on an (H, W, C_in) image: im2col + GEMM."""

    weight: Float[Array, "k k c_in c_out"]
    bias: Float[Array, " c_out"]
    kernel: int = eqx.field(static=True)

    def __init__(self, c_in: int, c_out: int, kernel: int, *, key: PRNGKeyArray):
        wkey, bkey = jax.random.split(key)
        fan_in = c_in * kernel * kernel
        self.weight = _uniform(wkey, (kernel, kernel, c_in, c_out), fan_in)
        self.bias = _uniform(bkey, (c_out,), fan_in)
        self.kernel = kernel

    def __call__(self, x: Float[Array, "h w c_in"]) -> Float[Array, "ho wo c_out"]:
        windows = im2col(x, self.kernel)
        out_h, out_w = windows.shape[:2]
        patches = windows.reshape(out_h * out_w, -1)
        out = patches @ self.weight.reshape(patches.shape[1], -1) + self.bias
        return out.reshape(out_h, out_w, -1)


class TransposedConv(eqx.Module):
    """k x k transposed convolution with stride 2 (no padding): GEMM + col2im.

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

    def __call__(self, x: Float[Array, "h w c_in"]) -> Float[Array, "ho wo c_out"]:
        k = self.kernel
        height, width, c_in = x.shape
        cols = x.reshape(height * width, c_in) @ self.weight.reshape(c_in, -1)
        cols = cols.reshape(height, width, k, k, -1)
        return (
            col2im(cols, STRIDE * (height - 1) + k, STRIDE * (width - 1) + k)
            + self.bias
        )


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
        h = x
        for conv in self.encoder:
            h = jax.nn.relu(conv(h))
        h = h.reshape(-1)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: Float[Array, " z"]) -> Float[Array, "64 64 3"]:
        if z.shape != (self.z_dim,):
            raise ValueError(
                f"ConvVAE.decode expects z of shape ({self.z_dim},), got {z.shape}"
            )
        h = self.from_z(z).reshape(1, 1, DENSE_WIDTH)
        for deconv in self.decoder[:-1]:
            h = jax.nn.relu(deconv(h))
        return jax.nn.sigmoid(self.decoder[-1](h))

    def __call__(
        self, x: Float[Array, "64 64 3"], *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "64 64 3"], Float[Array, " z"], Float[Array, " z"]]:
        mu, logvar = self.encode(x)
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
        return self.decode(z), mu, logvar


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


def load_vae(run_dir: str | Path) -> ConvVAE:
    """The ConvVAE of the latest checkpoint in ``run_dir``/vae/ckpt."""
    from world_models.vae_training import load_trained_vae  # it imports this module

    return load_trained_vae(run_dir)
