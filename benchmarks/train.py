"""Training throughput of V (images/s) and M, and V's encoding, variants side by side.

    uv run python benchmarks/train.py [--vae-batch 64 --steps 20 --repeats 5]

Variants run interleaved (A, B, C, A, B, C, ...) so that load from other users of the
machine hits them alike; the table gives the median and the ratio to the naive baseline.
Compile time (first call) is reported apart from the steady state.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from world_models.config import make_config
from world_models.envs import get_spec
from world_models.models import layers, mdnrnn
from world_models.models.layers import (
    STRIDE,
    xla_strided_conv,
    xla_transposed_conv,
)
from world_models.models.lstm import cell_sequences
from world_models.models.mdnrnn import rnn_from_config
from world_models.models.vae import (
    DECODER_CHANNELS,
    DECODER_KERNELS,
    DENSE_WIDTH,
    ENCODER_CHANNELS,
    ENCODER_KERNEL,
    IMAGE_SHAPE,
    ConvVAE,
    count_parameters,
    encode_frames,
    vae_loss,
)
from world_models.training.rnn_loss import make_optimizer as make_rnn_optimizer
from world_models.training.rnn_loss import make_train_step as make_rnn_train_step
from torch_reference import measure  # sibling script: benchmarks/ is on sys.path

RESULTS = Path(__file__).parent / "results" / "train.json"


def _forward_batch(model, x, keys):
    """(recon, mu, logvar) of a batch through a variant's single-image ``__call__``:
    the method ``vae_loss`` calls, as on ``ConvVAE``."""
    return jax.vmap(lambda image, key: model(image, key=key))(x, keys)


class NaiveConvVAE(eqx.Module):
    """The same network written the obvious way: eqx.nn.Conv2d / ConvTranspose2d,
    NCHW."""

    encoder: tuple[eqx.nn.Conv2d, ...]
    to_mu: eqx.nn.Linear
    to_logvar: eqx.nn.Linear
    from_z: eqx.nn.Linear
    decoder: tuple[eqx.nn.ConvTranspose2d, ...]
    z_dim: int = eqx.field(static=True)

    def __init__(self, z_dim: int, *, key):
        keys = iter(jax.random.split(key, 11))
        chans = (IMAGE_SHAPE[-1],) + ENCODER_CHANNELS
        self.encoder = tuple(
            eqx.nn.Conv2d(a, b, ENCODER_KERNEL, STRIDE, key=next(keys))
            for a, b in zip(chans[:-1], chans[1:])
        )
        self.to_mu = eqx.nn.Linear(DENSE_WIDTH, z_dim, key=next(keys))
        self.to_logvar = eqx.nn.Linear(DENSE_WIDTH, z_dim, key=next(keys))
        self.from_z = eqx.nn.Linear(z_dim, DENSE_WIDTH, key=next(keys))
        chans = (DENSE_WIDTH,) + DECODER_CHANNELS + (IMAGE_SHAPE[-1],)
        self.decoder = tuple(
            eqx.nn.ConvTranspose2d(a, b, k, STRIDE, key=next(keys))
            for a, b, k in zip(chans[:-1], chans[1:], DECODER_KERNELS)
        )
        self.z_dim = z_dim

    def __call__(self, x, *, key):
        h = x.transpose(2, 0, 1)
        for conv in self.encoder:
            h = jax.nn.relu(conv(h))
        h = h.reshape(-1)
        mu, logvar = self.to_mu(h), self.to_logvar(h)
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
        h = self.from_z(z).reshape(DENSE_WIDTH, 1, 1)
        for deconv in self.decoder[:-1]:
            h = jax.nn.relu(deconv(h))
        return jax.nn.sigmoid(self.decoder[-1](h)).transpose(1, 2, 0), mu, logvar

    forward_batch = _forward_batch


class XlaConvVAE(eqx.Module):
    """ConvVAE's parameters run through lax.conv_general_dilated in NHWC/HWIO (the
    library's ``xla`` lowering), one image at a time under vmap."""

    vae: ConvVAE
    z_dim: int = eqx.field(static=True)

    def __call__(self, x, *, key):
        h = x[None]
        for conv in self.vae.encoder:
            h = jax.nn.relu(xla_strided_conv(h, conv.weight) + conv.bias)
        mu, logvar = self.vae.to_mu(h.reshape(-1)), self.vae.to_logvar(h.reshape(-1))
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
        h = self.vae.from_z(z).reshape(1, 1, 1, DENSE_WIDTH)
        for i, deconv in enumerate(self.vae.decoder):
            h = xla_transposed_conv(h, deconv.weight) + deconv.bias
            last = i == len(self.vae.decoder) - 1
            h = jax.nn.sigmoid(h) if last else jax.nn.relu(h)
        return h[0], mu, logvar

    forward_batch = _forward_batch


def make_vae_step(optimiser: optax.GradientTransformation) -> Callable:
    @eqx.filter_jit
    def step(model, opt_state, frames, key):
        (loss, _), grads = eqx.filter_value_and_grad(vae_loss, has_aux=True)(
            model, frames, key
        )
        updates, opt_state = optimiser.update(grads, opt_state, model)
        return eqx.apply_updates(model, updates), opt_state, loss

    return step


def _timed_steps(step, state, frames, key, count):
    model, opt_state = state
    start = time.perf_counter()
    for _ in range(count):
        key, sub = jax.random.split(key)
        model, opt_state, loss = step(model, opt_state, frames, sub)
    jax.block_until_ready(loss)
    return time.perf_counter() - start, (model, opt_state)


TORCH_VARIANT = "PyTorch 2 threads, eager (subprocess)"
OURS = "gather + GEMM, custom VJPs, NHWC (ours)"
# ours before the transposed conv's product-first form (layers._transposed_conv)
WINDOWS_ONLY = "ours, every transposed conv by gathered windows"


@contextlib.contextmanager
def _patched(module, name: str, value, active: bool = True):
    """``module.name`` set to ``value`` inside the block (when ``active``): a variant
    of ours traced, on its first call, with one piece swapped."""
    original = getattr(module, name)
    if active:
        setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def _torch_rate(python: str, workload: str, batch_size: int, steps: int,
                **options) -> tuple[float, float]:
    """(rate, first-call s) of torch_reference.py's ``workload`` run by ``python``."""
    result = measure(python, workload, batch=batch_size, steps=steps, **options)
    return result["rate"], result["compile_s"]


def bench_vae(batch_size: int, steps: int, repeats: int, z_dim: int = 32,
              torch_python: str | None = None,
              only: tuple[str, ...] = ("naive", "lax", "ours")) -> list[dict]:
    """VAE training images/s per lowering of the same network (Adam, batch_size).

    With ``torch_python``, a PyTorch eager run of the same network (a subprocess, so
    torch is no dependency) takes its turn after ours in every round."""
    key = jax.random.PRNGKey(0)
    vae = ConvVAE(z_dim, key=key)
    variants = {
        name: model
        for short, name, model in [
            ("naive", "eqx Conv2d/ConvTranspose2d, NCHW (naive)",
             NaiveConvVAE(z_dim, key=key)),
            ("lax", "lax.conv_general_dilated, NHWC", XlaConvVAE(vae, z_dim)),
            ("windows", WINDOWS_ONLY, vae),
            ("ours", OURS, vae),
        ]
        if short in only
    }
    frames = jax.random.uniform(jax.random.PRNGKey(1), (batch_size,) + IMAGE_SHAPE)
    optimiser = optax.adam(1e-4)
    states, timings, rows = {}, {}, []
    for name, model in variants.items():
        assert count_parameters(model) == count_parameters(vae), name
        step = make_vae_step(optimiser)
        state = (model, optimiser.init(eqx.filter(model, eqx.is_array)))
        windows_only = name == WINDOWS_ONLY  # traced without the product-first form
        with _patched(layers, "_products_first", lambda *shape: False, windows_only):
            compile_s, state = _timed_steps(step, state, frames, key, 1)
        states[name], timings[name] = (step, state), []
        rows.append({"variant": name, "compile_s": compile_s})
    if torch_python:
        timings[TORCH_VARIANT] = []
        rows.append({"variant": TORCH_VARIANT, "compile_s": 0.0})
    for _ in range(repeats):
        for name in variants:
            step, state = states[name]
            seconds, state = _timed_steps(step, state, frames, key, steps)
            states[name] = (step, state)
            timings[name].append(batch_size * steps / seconds)
        if torch_python:
            rate, rows[-1]["compile_s"] = _torch_rate(torch_python, "vae", batch_size,
                                                      steps)
            timings[TORCH_VARIANT].append(rate)
    baseline = statistics.median(timings[rows[0]["variant"]])
    for row in rows:
        rates = timings[row["variant"]]
        row.update(
            model="vae",
            unit="images/s",
            batch_size=batch_size,
            median=statistics.median(rates),
            min=min(rates),
            max=max(rates),
            ratio=statistics.median(rates) / baseline,
        )
    if torch_python and OURS in timings:
        ours = statistics.median(timings[OURS])
        for row in rows:
            row["ours_over_torch"] = ours / statistics.median(timings[TORCH_VARIANT])
    return rows


RNN_AUTODIFF = "autodiff through eqx.nn.LSTMCell"
RNN_OURS = "lstm_sequences: weight gradients one GEMM each (ours)"


def bench_rnn(batch_sizes: list[int], seq_len: int, steps: int, repeats: int,
              torch_python: str | None = None,
              only: tuple[str, ...] = ("autodiff", "ours")) -> list[dict]:
    """MDN-RNN training sequence-steps/s (batch x seq_len per step) at CarRacing sizes,
    per LSTM kernel (``autodiff``: the train step traced with ``cell_sequences`` in
    place of ``lstm_sequences``) and batch size; ratios against the first row. With
    ``torch_python``, the same work in PyTorch (torch_reference.py rnn) takes its turn
    after ours at each batch size in every round, and each of our rows gets
    ``ours_over_torch``."""
    config = make_config("quick", "CarRacing-v3", [f"rnn.seq_len={seq_len}"])
    spec = get_spec(config.env_id)
    rnn = rnn_from_config(config, key=jax.random.PRNGKey(0))
    optimiser = make_rnn_optimizer(config.rnn)
    kernels = [(short, name) for short, name in
               [("autodiff", RNN_AUTODIFF), ("ours", RNN_OURS)] if short in only]
    variants = {f"{name}, batch {b}": (b, short) for b in batch_sizes
                for short, name in kernels}
    batches = {b: _rnn_batch(b, seq_len, config.vae.z_dim, spec.action_size)
               for b in batch_sizes}
    def loss_only(train_step):
        def step(model, opt_state, batch, key):
            model, opt_state, metrics = train_step(model, opt_state, batch, key)
            return model, opt_state, metrics["loss"]
        return step

    step_of = {short: loss_only(make_rnn_train_step(optimiser, config.rnn, spec))
               for short, _ in kernels}  # one jit cache per kernel

    states, timings, rows = {}, {}, {}
    for name, (batch_size, kernel) in variants.items():
        state = (rnn, optimiser.init(eqx.filter(rnn, eqx.is_array)))
        autodiff = kernel == "autodiff"  # traced with the cell's autodiff VJP
        with _patched(mdnrnn, "lstm_sequences", cell_sequences, autodiff):
            compile_s, state = _timed_steps(step_of[kernel], state,
                                            batches[batch_size],
                                            jax.random.PRNGKey(1), 1)
        states[name], timings[name] = state, []
        rows[name] = {"variant": name, "compile_s": compile_s}
    # PyTorch's row and rates for each batch size
    torch_rows = {
        b: {"variant": f"PyTorch nn.LSTM eager, 2 threads, batch {b}",
            "compile_s": 0.0}
        for b in batch_sizes
    } if torch_python else {}
    torch_timings = {b: [] for b in torch_rows}
    for _ in range(repeats):
        for name, (batch_size, kernel) in variants.items():
            seconds, states[name] = _timed_steps(step_of[kernel], states[name],
                                                 batches[batch_size],
                                                 jax.random.PRNGKey(2), steps)
            timings[name].append(batch_size * seq_len * steps / seconds)
        for batch_size in torch_rows:
            rate, torch_rows[batch_size]["compile_s"] = _torch_rate(
                torch_python, "rnn", batch_size, steps, seq_len=seq_len)
            torch_timings[batch_size].append(rate)
    baseline = statistics.median(timings[next(iter(variants))])

    def summarise(row: dict, batch_size: int, rates: list[float]) -> dict:
        row.update(model="rnn", unit="seq-steps/s", batch_size=batch_size,
                   seq_len=seq_len, median=statistics.median(rates), min=min(rates),
                   max=max(rates), ratio=statistics.median(rates) / baseline)
        return row

    for name, row in rows.items():
        batch_size = variants[name][0]
        summarise(row, batch_size, timings[name])
        if torch_python:
            row["ours_over_torch"] = row["median"] / statistics.median(
                torch_timings[batch_size])
    return [*rows.values(),
            *(summarise(row, b, torch_timings[b]) for b, row in torch_rows.items())]


def bench_encode(batch_size: int, steps: int, repeats: int,
                 torch_python: str | None = None, z_dim: int = 32) -> list[dict]:
    """process_data's work: images/s of ``encode_frames`` (uint8 frames to V's mean
    and log-variance in jitted batches of ``batch_size``, host arrays in and out)
    over ``steps`` batches per repeat. With ``torch_python``, PyTorch's encoder
    (torch_reference.py encode) takes its turn after ours in every round."""
    vae = ConvVAE(z_dim, key=jax.random.PRNGKey(0))
    frames = np.random.default_rng(0).integers(
        0, 256, (batch_size * steps,) + IMAGE_SHAPE, dtype=np.uint8)
    start = time.perf_counter()
    encode_frames(vae, frames[:batch_size], batch_size)
    rows = [{"variant": "ours: encode_frames, jitted batches", "compile_s":
             time.perf_counter() - start}]
    if torch_python:
        rows.append({"variant": "PyTorch 2 threads, eager, no_grad (subprocess)",
                     "compile_s": 0.0})
    rates = {row["variant"]: [] for row in rows}
    for _ in range(repeats):
        start = time.perf_counter()
        encode_frames(vae, frames, batch_size)
        rates[rows[0]["variant"]].append(len(frames) / (time.perf_counter() - start))
        if torch_python:
            rate, rows[1]["compile_s"] = _torch_rate(torch_python, "encode",
                                                     batch_size, steps)
            rates[rows[1]["variant"]].append(rate)
    ours = statistics.median(rates[rows[0]["variant"]])
    for row in rows:
        got = rates[row["variant"]]
        row.update(model="encode", unit="images/s", batch_size=batch_size,
                   median=statistics.median(got), min=min(got), max=max(got),
                   ratio=statistics.median(got) / ours)
        if torch_python:
            row["ours_over_torch"] = ours / statistics.median(rates[rows[1]["variant"]])
    return rows


def _rnn_batch(batch_size: int, seq_len: int, z_dim: int, action_size: int) -> dict:
    rng = np.random.default_rng(0)
    return dict(
        mu=rng.normal(size=(batch_size, seq_len + 1, z_dim)).astype(np.float32),
        logvar=np.full((batch_size, seq_len + 1, z_dim), -2.0, np.float32),
        actions=rng.uniform(-1, 1, (batch_size, seq_len, action_size)).astype(
            np.float32),
        rewards=rng.normal(size=(batch_size, seq_len)).astype(np.float32),
        reward_targets=rng.normal(size=(batch_size, seq_len)).astype(np.float32),
        terminated=np.zeros((batch_size, seq_len), bool),
        truncated=np.zeros((batch_size, seq_len), bool),
        mask=np.ones((batch_size, seq_len), np.float32),
    )


def print_table(rows: list[dict]) -> None:
    header = f"{'model':6} {'variant':44} {'compile s':>9} {'median':>9} {'min':>8} "
    print(header + f"{'max':>8} {'ratio':>6}  unit")
    for r in rows:
        print(
            f"{r['model']:6} {r['variant']:44} {r['compile_s']:9.2f} "
            f"{r['median']:9.1f} "
            f"{r['min']:8.1f} {r['max']:8.1f} {r['ratio']:6.2f}  {r['unit']} "
            f"(batch {r['batch_size']})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rnn-batch", type=int, nargs="+", default=[32, 100])
    parser.add_argument("--rnn-seq-len", type=int, default=100)
    parser.add_argument("--encode-batch", type=int, default=256)
    parser.add_argument("--models", default="vae,encode,rnn",
                        help="comma-separated: vae,encode,rnn")
    parser.add_argument("--torch-python", metavar="PATH",
                        help="a Python with torch: also time benchmarks/"
                        "torch_reference.py (vae, encode, rnn), interleaved with ours")
    parser.add_argument("--vae-variants", default="naive,lax,windows,ours",
                        help="comma-separated subset of naive,lax,windows,ours")
    parser.add_argument("--rnn-variants", default="autodiff,ours",
                        help="comma-separated subset of autodiff,ours")
    args = parser.parse_args()
    models = args.models.split(",")
    rows = (bench_vae(args.vae_batch, args.steps, args.repeats,
                      torch_python=args.torch_python,
                      only=args.vae_variants.split(","))
            if "vae" in models else [])
    if any("ours_over_torch" in r for r in rows):
        print(f"ours / PyTorch (same rounds): {rows[0]['ours_over_torch']:.2f}")
    if "encode" in models:
        rows += bench_encode(args.encode_batch, args.steps, args.repeats,
                             args.torch_python)
        if "ours_over_torch" in rows[-1]:
            print(f"encoding ours / PyTorch: {rows[-1]['ours_over_torch']:.2f}")
    if "rnn" in models:
        rows += bench_rnn(args.rnn_batch, args.rnn_seq_len, args.steps, args.repeats,
                          args.torch_python, only=args.rnn_variants.split(","))
        for row in rows:
            if row["model"] == "rnn" and "ours_over_torch" in row:
                print(f"M {row['variant']} / PyTorch: {row['ours_over_torch']:.2f}")
    print_table(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "processor": platform.processor() or platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "jax": jax.__version__,
    }
    path = (
        RESULTS
        if machine["backend"] == "cpu"
        else RESULTS.with_name(f"train_{machine['backend']}.json")
    )
    if path.exists():  # keep the other model's rows from an earlier run here
        earlier = json.loads(path.read_text())
        if earlier.get("machine", {}).get("devices") == machine["devices"]:
            kept = earlier.get("results", [])
            rows = [r for r in kept if r.get("model") not in models] + rows
    path.write_text(json.dumps({"machine": machine, "results": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
