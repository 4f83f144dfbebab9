"""ConvVAE (V): 64x64x3 frame <-> z, exactly the paper's architecture, fast on XLA CPU.

Encoder: 4 convs (32, 64, 128, 256 channels; kernel 4, stride 2, VALID; ReLU) -> flatten
-> dense mu, dense logvar. Decoder: dense z -> 1024 -> (1, 1, 1024) -> transposed convs
128 k5, 64 k5, 32 k6 (ReLU), 3 k6 (sigmoid), all stride 2. 4,348,547 parameters at z=32.
The layers are hand-written for speed on XLA CPU (``layers``).
``encoder_norm="instance"`` normalises each encoder layer's output per frame and channel
before its ReLU, with no parameters added: for frames that are one flat colour but for
a few small objects (Pong), where the paper's encoder passes almost nothing on.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from world_models.config_sections import VAE_ENCODER_NORMS
from world_models.models.layers import Dense, StridedConv, TransposedConv

ENCODER_CHANNELS = (32, 64, 128, 256)
ENCODER_KERNEL = 4
DECODER_CHANNELS = (128, 64, 32)
DECODER_KERNELS = (5, 5, 6, 6)
DENSE_WIDTH = 1024  # encoder output 2x2x256 flattened; decoder input 1x1x1024
IMAGE_SHAPE = (64, 64, 3)
# A channel this far (values in [0, 1]) from the batch median marks a salient pixel
SALIENT_DIFFERENCE = 0.1
INSTANCE_NORM_EPSILON = 1e-5


class ConvVAE(eqx.Module):
    """The paper's ConvVAE. Methods take ONE image (64, 64, 3) in [0, 1]; vmap them."""

    encoder: tuple[StridedConv, ...]
    to_mu: Dense
    to_logvar: Dense
    from_z: Dense
    decoder: tuple[TransposedConv, ...]
    z_dim: int = eqx.field(static=True)
    encoder_norm: str = eqx.field(static=True)

    def __init__(
        self, z_dim: int = 32, *, key: PRNGKeyArray, encoder_norm: str = "none"
    ):
        if encoder_norm not in VAE_ENCODER_NORMS:
            raise ValueError(
                f"encoder_norm={encoder_norm!r}; known: {', '.join(VAE_ENCODER_NORMS)}"
            )
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
        self.encoder_norm = encoder_norm

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
            h = conv(h)
            if self.encoder_norm == "instance":
                h = instance_norm(h)
            h = jax.nn.relu(h)
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
        z = jax.vmap(sample_posterior)(mu, logvar, keys)
        return self.decode_batch(z), mu, logvar


def sample_posterior(mu: Array, logvar: Array, key: PRNGKeyArray) -> Array:
    """z ~ N(mu, exp(logvar)), V's posterior (the one reparameterised draw)."""
    return mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)


def count_parameters(model: eqx.Module) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array)))


def kl_divergence(
    mu: Float[Array, " z"], logvar: Float[Array, " z"]
) -> Float[Array, ""]:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dimensions."""
    return -0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar))


def vae_terms(
    model: ConvVAE,
    frames: Float[Array, "batch 64 64 3"],
    key: PRNGKeyArray,
    pixel_weights: Float[Array, "batch 64 64 1"] | None = None,
) -> tuple[Float[Array, " batch"], Float[Array, " batch"]]:
    """Per image: summed (weighted) squared reconstruction error and KL, z sampled."""
    keys = jax.random.split(key, frames.shape[0])
    recon, mu, logvar = model.forward_batch(frames, keys)
    error = (recon - frames) ** 2
    if pixel_weights is not None:
        error = error * pixel_weights
    return jnp.sum(error, axis=(1, 2, 3)), jax.vmap(kl_divergence)(mu, logvar)


def instance_norm(h: Float[Array, "b h w c"]) -> Float[Array, "b h w c"]:
    """Each frame's channel to zero mean and unit variance over its pixels (no learned
    scale, so V's parameters are the paper's)."""
    mean = jnp.mean(h, axis=(1, 2), keepdims=True)
    variance = jnp.var(h, axis=(1, 2), keepdims=True)
    return (h - mean) * jax.lax.rsqrt(variance + INSTANCE_NORM_EPSILON)


def salient_weights(
    frames: Float[Array, "batch 64 64 3"], weight: float
) -> Float[Array, "batch 64 64 1"]:
    """1 + ``weight`` on the pixels where a frame differs from its batch's per-pixel
    median, 1 elsewhere.

    The median of a batch of frames from many moments and episodes is the static
    scene; what differs from it is what moves or is rare. A small object (LunarLander's
    lander, 3-4 pixels at 64 x 64) costs a plain pixel loss almost nothing to leave
    out, and V leaves it out; weighting its pixels makes V keep it.
    """
    background = jnp.median(frames, axis=0)
    salient = jnp.any(
        jnp.abs(frames - background) > SALIENT_DIFFERENCE, axis=-1, keepdims=True
    )
    return 1.0 + weight * salient.astype(frames.dtype)


def vae_loss(
    model: ConvVAE,
    frames: Float[Array, "batch 64 64 3"],
    key: PRNGKeyArray,
    *,
    beta: float | Array = 1.0,
    kl_tolerance: float = 0.5,
    salient_weight: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """Batch mean of summed squared error + beta * max(KL, kl_tolerance * z_dim).

    The free-bits floor is applied per image, as in the paper's code: below the floor
    the KL term has no gradient, so the encoder may spend those nats on reconstruction.
    With ``salient_weight`` > 0 the squared error is weighted by ``salient_weights``.
    """
    weights = salient_weights(frames, salient_weight) if salient_weight else None
    recon, kl = vae_terms(model, frames, key, weights)
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


@eqx.filter_jit
def decode_latents(vae: ConvVAE, zs: Array) -> Array:
    """V's decoder over any leading axes: (..., Z) -> (..., 64, 64, 3) in [0, 1]."""
    flat = zs.reshape(-1, zs.shape[-1])
    frames = jax.vmap(vae.decode)(flat)
    return frames.reshape(*zs.shape[:-1], *frames.shape[1:])
