import json
import re
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from world_models.checkpoint import CheckpointError
from world_models.config import make_config
from world_models.config_sections import ConfigError
from world_models.data.episodes import (
    EpisodeError,
    list_episodes,
    load_episode,
    load_latents,
    save_episode,
)
from world_models.models.layers import (
    CONV_LOWERING_VARIABLE,
    conv_lowering,
    strided_conv,
    transposed_conv,
    xla_strided_conv,
    xla_transposed_conv,
)
from world_models.models.vae import (
    ConvVAE,
    count_parameters,
    encode_frames,
    kl_divergence,
    salient_weights,
    vae_loss,
)
from world_models.run_directory import init_run
from world_models.training.fit import TrainingDivergedError
from world_models.training.vae import encode_run, initial_state, load_vae, train_vae

STEPS_TO_KEEP_A_SQUARE = 60

def test_parameter_count_matches_paper():
    assert count_parameters(ConvVAE(32, key=jax.random.PRNGKey(0))) == 4_348_547
    normed = ConvVAE(32, key=jax.random.PRNGKey(0), encoder_norm="instance")
    assert count_parameters(normed) == 4_348_547
    with pytest.raises(ValueError, match="encoder_norm='batch'; known: none, instance"):
        ConvVAE(32, key=jax.random.PRNGKey(0), encoder_norm="batch")
    with pytest.raises(ConfigError, match="vae.encoder_norm must be one of"):
        make_config("smoke", overrides=["vae.encoder_norm=batch"])


def test_instance_norm_lets_the_encoder_see_a_flat_frames_small_object():
    """Pong's case: one flat colour but for a small bar whose row changes. The
    paper's encoder gives every frame nearly the same mean; with each layer's
    features normalised per frame, the bar's row moves the mean by orders more."""
    frames = np.tile(np.array([0.56, 0.28, 0.07], np.float32), (16, 64, 64, 1))
    for i, row in enumerate(np.linspace(2, 56, 16).astype(int)):
        frames[i, row : row + 6, 56:58] = (0.36, 0.73, 0.36)
    spread = {}
    for norm in ("none", "instance"):
        vae = ConvVAE(32, key=jax.random.PRNGKey(0), encoder_norm=norm)
        mu, _ = vae.encode_batch(jnp.asarray(frames))
        spread[norm] = float(jnp.std(mu, axis=0).mean() / jnp.abs(mu).mean())
    assert spread["instance"] > 20 * spread["none"], spread
    config = make_config("smoke", overrides=["vae.encoder_norm=instance"])
    assert initial_state(config.vae)["model"].encoder_norm == "instance"


def test_shapes_and_ranges():
    vae = ConvVAE(8, key=jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (64, 64, 3))
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (8,)
    recon = vae.decode(mu)
    assert recon.shape == (64, 64, 3)
    assert float(recon.min()) >= 0 and float(recon.max()) <= 1
    with pytest.raises(ValueError, match="expects one"):
        vae.encode(jnp.zeros((32, 32, 3)))


@pytest.mark.parametrize(
    "size,kernel", [(64, 4), (31, 4), (14, 4), (1, 5), (5, 5), (13, 6), (30, 6), (4, 5)]
)
@pytest.mark.parametrize("c_in,c_out", [(5, 7), (32, 3)])
def test_conv_primitives_match_lax_forward_and_vjp(size, kernel, c_in, c_out):
    """strided_conv / transposed_conv (custom VJPs) against lax.conv_general_dilated;
    (32, 3) takes the transposed conv's overlap-add form, (5, 7) its window form."""
    keys = jax.random.split(jax.random.PRNGKey(size * 10 + kernel), 4)
    cases = [(transposed_conv, xla_transposed_conv, (c_in, kernel, kernel, c_out))]
    if size >= kernel:
        cases.append((strided_conv, xla_strided_conv, (kernel, kernel, c_in, c_out)))
    for ours, ref, w_shape in cases:
        x = jax.random.normal(keys[0], (2, size, size, c_in))
        w = jax.random.normal(keys[1], w_shape)
        out, vjp = jax.vjp(ours, x, w)
        ref_out, ref_vjp = jax.vjp(ref, x, w)
        np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-4)
        cot = jax.random.normal(keys[2], out.shape)
        for a, b in zip(vjp(cot), ref_vjp(cot)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4 * float(abs(b).max()))


def test_conv_weight_gradients_compile_to_row_major_gemms():
    """No weight gradient is a dot that contracts its left operand over dimension 0:
    XLA's CPU backend runs that form as a plain loop instead of its GEMM library (V's
    encoder weight gradients were, until a barrier kept the final transpose out)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 14, 14, 8))
    convs = {
        "strided": (strided_conv, (4, 4, 8, 16)),
        "transposed": (transposed_conv, (8, 5, 5, 16)),
    }
    for name, (conv, w_shape) in convs.items():
        w = jnp.ones(w_shape)
        hlo = (
            jax.jit(jax.grad(lambda w, conv=conv: jnp.sum(conv(x, w) ** 2)))
            .lower(w)
            .compile()
            .as_text()
        )
        slow = [
            line.strip()
            for line in hlo.splitlines()
            if re.search(r"= f32\[[^]]*\]\S* dot\(", line)
            and "lhs_contracting_dims={0}" in line
        ]
        assert not slow, (name, slow)


def test_single_image_methods_match_batched_forward():
    vae = ConvVAE(8, key=jax.random.PRNGKey(0))
    frames = jax.random.uniform(jax.random.PRNGKey(1), (2, 64, 64, 3))
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    recon, mu, logvar = vae.forward_batch(frames, keys)
    one = jax.vmap(lambda x, k: vae(x, key=k))(frames, keys)
    for a, b in zip((recon, mu, logvar), one):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vae.encode(frames[0])[0], mu[0], rtol=1e-5, atol=1e-6)
    # Training's batched path (one GEMM per weight gradient) == the vmapped one.
    batched = eqx.filter_grad(lambda m: jnp.sum(m.forward_batch(frames, keys)[0]))(vae)
    mapped = eqx.filter_grad(
        lambda m: jnp.sum(jax.vmap(lambda x, k: m(x, key=k))(frames, keys)[0])
    )(vae)
    for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(mapped)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_conv_lowerings_give_the_same_vae_outputs_and_gradients(monkeypatch):
    vae = ConvVAE(8, key=jax.random.PRNGKey(0))
    frames = jax.random.uniform(jax.random.PRNGKey(1), (3, 64, 64, 3))
    keys = jax.random.split(jax.random.PRNGKey(2), len(frames))

    def loss(model):
        recon, mu, logvar = model.forward_batch(frames, keys)
        return jnp.sum((recon - frames) ** 2) + jnp.sum(mu**2) + jnp.sum(logvar**2)

    assert conv_lowering() == "gather"  # the default
    results = {}
    for lowering in ("gather", "xla"):
        monkeypatch.setenv(CONV_LOWERING_VARIABLE, lowering)
        assert conv_lowering() == lowering
        results[lowering] = eqx.filter_value_and_grad(loss)(vae)
    (ours, ours_grad), (ref, ref_grad) = results["gather"], results["xla"]
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ours_grad), jax.tree.leaves(ref_grad)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))
    monkeypatch.setenv(CONV_LOWERING_VARIABLE, "cudnn")
    with pytest.raises(ValueError,
                       match="WORLD_MODELS_CONV='cudnn'; known: gather, xla"):
        vae.encode(frames[0])


def test_kl_divergence_closed_form():
    mu, logvar = jnp.array([0.0, 1.0]), jnp.array([0.0, jnp.log(4.0)])
    expected = 0.5 * (4.0 + 1.0 - 1.0 - jnp.log(4.0))  # only dim 2 contributes
    np.testing.assert_allclose(kl_divergence(mu, logvar), expected, rtol=1e-6)


def test_free_bits_floor_active_and_inactive():
    vae = ConvVAE(4, key=jax.random.PRNGKey(0))
    frames = jax.random.uniform(jax.random.PRNGKey(1), (2, 64, 64, 3))
    key = jax.random.PRNGKey(2)
    _, parts = vae_loss(vae, frames, key)
    kl = float(parts["kl"])
    assert 0 < kl < 1.0  # fresh encoder: posterior close to the prior

    def kl_grad(tolerance):
        grad = eqx.filter_grad(
            lambda m: vae_loss(m, frames, key, kl_tolerance=tolerance, beta=1.0)[0]
        )(vae)
        recon_only = eqx.filter_grad(lambda m: vae_loss(m, frames, key, beta=0.0)[0])(
            vae
        )
        return grad.to_mu.weight - recon_only.to_mu.weight

    # Floor above the KL: constant KL term, no KL gradient, loss = recon + floor.
    loss, parts = vae_loss(vae, frames, key, kl_tolerance=1.0)
    np.testing.assert_allclose(loss, parts["recon"] + 4.0, rtol=1e-6)
    np.testing.assert_allclose(kl_grad(1.0), 0.0, atol=1e-6)
    # Floor at zero: the KL itself is added and pulls on the encoder.
    loss, parts = vae_loss(vae, frames, key, kl_tolerance=0.0, beta=2.0)
    np.testing.assert_allclose(loss, parts["recon"] + 2.0 * parts["kl"], rtol=1e-6)
    assert float(jnp.abs(kl_grad(0.0)).max()) > 1e-6


def test_overfits_a_few_frames():
    vae = ConvVAE(8, key=jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    frames = np.zeros((4, 64, 64, 3), np.float32)
    for i, frame in enumerate(frames):  # flat colour blocks, like game frames
        frame[:, :] = rng.uniform(size=3)
        frame[8 * i : 8 * i + 24, 10:40] = rng.uniform(size=3)
    frames = jnp.asarray(frames)
    optimiser = optax.adam(1e-3)
    opt_state = optimiser.init(eqx.filter(vae, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state, key):
        loss, grads = eqx.filter_value_and_grad(lambda m: vae_loss(m, frames, key)[0])(
            model
        )
        updates, opt_state = optimiser.update(grads, opt_state, model)
        return eqx.apply_updates(model, updates), opt_state, loss

    losses = []
    for i in range(80):
        vae, opt_state, loss = step(vae, opt_state, jax.random.PRNGKey(i))
        losses.append(float(loss))
    assert losses[-1] < 0.25 * losses[0], (losses[0], losses[-1])


def _frames_with_a_small_square(count: int, seed: int) -> np.ndarray:
    """A dark static scene with a bright 3x3 square at a random place in each frame:
    LunarLander's lander in miniature."""
    rng = np.random.default_rng(seed)
    frames = np.full((count, 64, 64, 3), 0.1, np.float32)
    frames[:, 48:, :] = 0.9  # the ground
    rows, cols = rng.integers(4, 40, count), rng.integers(4, 60, count)
    for frame, row, col in zip(frames, rows, cols):
        frame[row : row + 3, col : col + 3] = (0.5, 0.4, 0.9)
    return frames


def test_salient_weights_mark_what_differs_from_the_batch_median():
    frames = jnp.asarray(_frames_with_a_small_square(16, seed=0))
    weights = np.asarray(salient_weights(frames, 9.0))[..., 0]
    square = np.abs(np.asarray(frames) - np.asarray(frames)[:, :1, :1]).max(-1) > 0.3
    square[:, 48:, :] = False  # the ground is in every frame: not salient
    assert weights.shape == (16, 64, 64)
    np.testing.assert_array_equal(weights, np.where(square, 10.0, 1.0))
    # The loss weights exactly those pixels' squared error; weight 0 is the plain loss.
    vae, key = ConvVAE(4, key=jax.random.PRNGKey(0)), jax.random.PRNGKey(1)
    _, plain = vae_loss(vae, frames, key)
    _, zero = vae_loss(vae, frames, key, salient_weight=0.0)
    assert float(plain["recon"]) == float(zero["recon"])
    _, weighted = vae_loss(vae, frames, key, salient_weight=9.0)
    recon = vae.forward_batch(frames, jax.random.split(key, 16))[0]
    error = np.asarray((recon - frames) ** 2).sum(-1)
    expected = (error * np.where(square, 10.0, 1.0)).sum((1, 2)).mean()
    np.testing.assert_allclose(float(weighted["recon"]), expected, rtol=1e-5)


def test_salient_weighting_makes_v_keep_a_small_object():
    train = jnp.asarray(_frames_with_a_small_square(256, seed=1))
    held_out = jnp.asarray(_frames_with_a_small_square(32, seed=2))
    square = np.abs(np.asarray(held_out) - 0.1).max(-1) > 0.3
    square[:, 48:, :] = False

    def square_error(salient_weight: float) -> float:
        vae = ConvVAE(8, key=jax.random.PRNGKey(0))
        optimiser = optax.adam(1e-3)
        opt_state = optimiser.init(eqx.filter(vae, eqx.is_array))

        @eqx.filter_jit
        def step(model, opt_state, batch, key):
            grads = eqx.filter_grad(
                lambda m: vae_loss(m, batch, key, salient_weight=salient_weight)[0]
            )(model)
            updates, opt_state = optimiser.update(grads, opt_state, model)
            return eqx.apply_updates(model, updates), opt_state

        for i in range(STEPS_TO_KEEP_A_SQUARE):
            batch = train[(16 * i) % 256 : (16 * i) % 256 + 16]
            vae, opt_state = step(vae, opt_state, batch, jax.random.PRNGKey(i))
        mu, _ = vae.encode_batch(held_out)
        error = np.asarray((vae.decode_batch(mu) - held_out) ** 2).sum(-1)
        return float(error[square].mean())

    plain, weighted = square_error(0.0), square_error(50.0)
    assert weighted < 0.7 * plain, (plain, weighted)


def test_encode_frames_batches_like_one_call():
    vae = ConvVAE(8, key=jax.random.PRNGKey(0))
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    mu, logvar = encode_frames(vae, frames, batch_size=2)  # 2 + 2 + padded 1
    assert mu.shape == logvar.shape == (5, 8) and mu.dtype == np.float32
    direct = jax.vmap(vae.encode)(jnp.asarray(frames, jnp.float32) / 255.0)
    np.testing.assert_allclose(mu, direct[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logvar, direct[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        encode_frames(vae, frames.astype(np.float32))


# ------------------------------------------------------------ training on a run dir


def _make_run(run_dir, steps=6, **vae_overrides):
    overrides = [
        f"vae.steps={steps}",
        "vae.checkpoint_every=3",
        "vae.eval_every=3",
        "vae.batch_size=8",
        "vae.val_fraction=0.34",
    ]
    overrides += [f"vae.{k}={v}" for k, v in vae_overrides.items()]
    init_run(run_dir, make_config("smoke", overrides=overrides))
    rng = np.random.default_rng(0)
    for i in range(3):
        length = 9 + i
        save_episode(
            run_dir / "data" / "round0" / "brownian" / f"ep{i:03d}.npz",
            {
                "obs": rng.integers(0, 256, (length + 1, 64, 64, 3), dtype=np.uint8),
                "actions": rng.uniform(-1, 1, (length, 3)).astype(np.float32),
                "rewards": rng.normal(size=length).astype(np.float32),
                "terminated": np.zeros(length, bool),
                "truncated": np.eye(1, length, length - 1, dtype=bool)[0],
                "env_id": "CarRacing-v3",
                "policy": "brownian",
                "seed": i,
            },
        )
    return run_dir


def _params(model):
    return jax.tree.leaves(eqx.filter(model, eqx.is_array))


def test_interrupted_then_resumed_training_matches_uninterrupted(tmp_path):
    whole = _make_run(tmp_path / "whole")
    parts = _make_run(tmp_path / "parts")
    train_vae(whole, progress=False)
    train_vae(parts, stop_after=5, progress=False)  # "killed" after step 5: ckpt at 3
    train_vae(parts, progress=False)
    for a, b in zip(_params(load_vae(whole)), _params(load_vae(parts))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    rows = [json.loads(line) for line in (parts / "vae" / "metrics.jsonl").open()]
    assert [row["step"] for row in rows] == [3, 6]
    assert (parts / "vae" / "reconstructions.png").exists()
    assert (parts / "vae" / "loss_curves.png").exists()


def test_mismatched_and_corrupt_checkpoints_raise(tmp_path):
    run = _make_run(tmp_path / "run", steps=3)
    train_vae(run, progress=False)
    config = json.loads((run / "config.json").read_text())
    config["vae"]["learning_rate"] = 0.5
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="another config"):
        train_vae(run, progress=False)
    config["vae"]["learning_rate"] = 1e-4
    (run / "config.json").write_text(json.dumps(config))
    step_dir = run / "vae" / "ckpt" / "3"
    for path in step_dir.rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
            path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=re.escape(str(run / "vae" / "ckpt"))):
        load_vae(run)


def test_divergence_stops_with_the_step(tmp_path):
    run = _make_run(tmp_path / "run", steps=6, learning_rate=1e30)
    with pytest.raises(TrainingDivergedError, match=r"at step \d"):
        train_vae(run, progress=False)


def test_process_data_mirrors_data_and_is_idempotent(tmp_path):
    run = _make_run(tmp_path / "run", steps=3)
    train_vae(run, progress=False)
    assert encode_run(run, batch_size=4, progress=False) == 3
    latents = list_episodes(run / "latents")
    assert [p.relative_to(run / "latents") for p in latents] == [
        p.relative_to(run / "data") for p in list_episodes(run / "data")
    ]
    first = load_latents(latents[0])
    assert first["mu"].shape == first["logvar"].shape == (10, 8)  # T + 1 frames, Z = 8
    mtimes = [p.stat().st_mtime_ns for p in latents]
    assert encode_run(run, batch_size=4, progress=False) == 0
    assert [p.stat().st_mtime_ns for p in latents] == mtimes
    latents[1].write_bytes(b"torn")  # a damaged file is rewritten
    assert encode_run(run, batch_size=4, progress=False) == 1
    shutil.rmtree(run / "vae")
    with pytest.raises(CheckpointError):
        encode_run(run, progress=False)


def test_reencoding_killed_midway_leaves_no_latents_of_the_old_vae(tmp_path):
    run = _make_run(tmp_path / "run", steps=3)
    train_vae(run, progress=False)
    assert encode_run(run, batch_size=4, progress=False) == 3
    old = [load_latents(p)["mu"] for p in list_episodes(run / "latents")]
    train_vae(run, total_steps=6, progress=False)  # a retrained V, step 6

    episodes = list_episodes(run / "data")
    saved = episodes[1].read_bytes()
    episodes[1].write_bytes(b"torn")  # the pass dies after encoding the first file
    with pytest.raises(EpisodeError):
        encode_run(run, batch_size=4, progress=False)
    episodes[1].write_bytes(saved)
    encode_run(run, batch_size=4, progress=False)

    vae = load_vae(run)
    for path, stale in zip(episodes, old, strict=True):
        latents = load_latents(run / "latents" / path.relative_to(run / "data"))
        mu, logvar = encode_frames(vae, load_episode(path)["obs"], 4)
        np.testing.assert_array_equal(latents["mu"], mu)
        np.testing.assert_array_equal(latents["logvar"], logvar)
        assert not np.array_equal(latents["mu"], stale)
