"""Reference: this library's hot loops in plain PyTorch eager on the CPU.

    python benchmarks/torch_reference.py vae   [--batch 64 --steps 5 --threads 2]
    python benchmarks/torch_reference.py encode [--batch 256]
    python benchmarks/torch_reference.py rnn   [--batch 32 --seq-len 100]
    python benchmarks/torch_reference.py dream [--batch 256 --horizon 50]

Standalone (stdlib + torch only); torch is NOT a project dependency: run it with a
Python that has torch (benchmarks/train.py and benchmarks/dream.py --torch-python PATH
run it through ``measure``, a subprocess taking turns with ours). Paper sizes (z 32,
LSTM 256, 5 mixtures per dimension, the ConvVAE of 4,348,547 parameters). Each call
does the work of ours:

  vae    one Adam step (1e-4) of the ConvVAE: reconstruction + KL with free bits
  encode V's encoder (mean and log-variance) on a batch of uint8 frames, no gradient
  rnn    one Adam step (1e-3) of M on windows: z drawn from the posterior, nn.LSTM over
         the window, the head (3·5·32 mixture parameters + reward + termination logit)
         at every step, per-dimension mixture NLL, asymmetric reward error (5x above
         the target), termination BCE, global-norm clipping at 1
  dream  a whole dream under torch.no_grad: per step the linear controller on [z, h],
         an nn.LSTMCell step, the head, a mixture component per latent dimension from
         softmax(logits / τ) and Gaussian noise at τ, the reward summed while alive;
         ``--autocast 1`` runs it under torch.autocast(bfloat16), PyTorch's own
         mixed precision (its GEMMs in bfloat16 like ours under dream.matmul_dtype)

Prints one JSON line per timed repeat: {"rate": ..., "unit": ..., "compile_s": ...}
(compile_s: the first call, allocator and oneDNN set-up). Exits 0 with "torch not
available" otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

Z, ACTIONS, HIDDEN, MIXTURES = 32, 3, 256, 5
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def conv_vae(torch, nn):
    """The paper's ConvVAE (4,348,547 parameters), NCHW."""

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(
                nn.Conv2d(3, 32, 4, 2), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                nn.Conv2d(64, 128, 4, 2), nn.ReLU(), nn.Conv2d(128, 256, 4, 2),
                nn.ReLU(), nn.Flatten())
            self.mu, self.logvar = nn.Linear(1024, Z), nn.Linear(1024, Z)
            self.fc = nn.Linear(Z, 1024)
            self.dec = nn.Sequential(
                nn.ConvTranspose2d(1024, 128, 5, 2), nn.ReLU(),
                nn.ConvTranspose2d(128, 64, 5, 2), nn.ReLU(),
                nn.ConvTranspose2d(64, 32, 6, 2), nn.ReLU(),
                nn.ConvTranspose2d(32, 3, 6, 2), nn.Sigmoid())

        def forward(self, x):
            h = self.enc(x)
            mu, logvar = self.mu(h), self.logvar(h)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            return self.dec(self.fc(z).view(-1, 1024, 1, 1)), mu, logvar

    model = VAE()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 4_348_547, n_params
    return model


def vae_call(torch, nn, args):
    """(one Adam step of the ConvVAE, images per call)."""
    model = conv_vae(torch, nn)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    frames = torch.rand(args.batch, 3, 64, 64)

    def step():
        recon, mu, logvar = model(frames)
        rec = ((recon - frames) ** 2).sum(dim=(1, 2, 3))
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)
        loss = (rec + torch.clamp(kl, min=0.5 * Z)).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step, args.batch


def encode_call(torch, nn, args):
    """(the encoder's mean and log-variance of a batch of uint8 frames, as
    process_data computes them, images per call)."""
    model = conv_vae(torch, nn)
    frames = torch.randint(0, 256, (args.batch, 64, 64, 3), dtype=torch.uint8)

    @torch.no_grad()
    def encode():
        h = model.enc(frames.permute(0, 3, 1, 2).float() / 255.0)
        return model.mu(h), model.logvar(h)

    return encode, args.batch


def rnn_call(torch, nn, args):
    """(one Adam step of M on a batch of windows, sequence-steps per call)."""
    lstm = nn.LSTM(Z + ACTIONS, HIDDEN, batch_first=True)
    head = nn.Linear(HIDDEN, 3 * MIXTURES * Z + 2)
    parameters = list(lstm.parameters()) + list(head.parameters())
    optimiser = torch.optim.Adam(parameters, lr=1e-3)
    batch, length = args.batch, args.seq_len
    mu = torch.randn(batch, length + 1, Z)
    logvar = torch.full((batch, length + 1, Z), -2.0)
    actions = torch.rand(batch, length, ACTIONS) * 2 - 1
    rewards = torch.randn(batch, length)
    terminated = torch.zeros(batch, length)

    def step():
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        h, _ = lstm(torch.cat([z[:, :-1], actions], -1))
        raw = head(h)
        mix = raw[..., :-2].reshape(batch, length, 3, Z, MIXTURES)
        logit_pi, means = mix[:, :, 0], mix[:, :, 1]
        log_sigma = mix[:, :, 2].clamp(-7.0, 3.0)
        scaled = (z[:, 1:, :, None] - means) * torch.exp(-log_sigma)
        log_normal = -0.5 * scaled**2 - log_sigma - LOG_SQRT_2PI
        log_prob = torch.logsumexp(torch.log_softmax(logit_pi, -1) + log_normal, -1)
        error = raw[..., -2] - rewards
        reward = (torch.where(error > 0, 5.0, 1.0) * error**2).mean()
        done = nn.functional.binary_cross_entropy_with_logits(raw[..., -1], terminated)
        loss = -log_prob.mean() + reward + done
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()

    return step, batch * length


def dream_call(torch, nn, args):
    """(a whole dream of a batch of linear controllers, agent-steps per call)."""
    cell = nn.LSTMCell(Z + ACTIONS, HIDDEN)
    head = nn.Linear(HIDDEN, 3 * MIXTURES * Z + 2)
    controller = nn.Linear(Z + HIDDEN, ACTIONS)
    batch, tau = args.batch, args.temperature

    @torch.no_grad()
    @torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.autocast))
    def dream():
        z = torch.randn(batch, Z)
        h, c = torch.zeros(batch, HIDDEN), torch.zeros(batch, HIDDEN)
        total = torch.zeros(batch)
        alive = torch.ones(batch, dtype=torch.bool)
        for _ in range(args.horizon):
            raw_action = torch.tanh(controller(torch.cat([z, h], -1)))
            action = torch.cat([raw_action[:, :1], (raw_action[:, 1:] + 1) / 2], -1)
            h, c = cell(torch.cat([z, action], -1), (h, c))
            raw = head(h)
            mix = raw[:, :-2].reshape(batch, 3, Z, MIXTURES)
            probs = torch.softmax(mix[:, 0] / tau, -1).reshape(-1, MIXTURES)
            component = torch.multinomial(probs, 1).reshape(batch, Z, 1)
            mean = mix[:, 1].gather(-1, component)[..., 0]
            log_sigma = mix[:, 2].clamp(-7.0, 3.0).gather(-1, component)[..., 0]
            z = mean + log_sigma.exp() * math.sqrt(tau) * torch.randn_like(mean)
            total += torch.where(alive, raw[:, -2], torch.zeros_like(total))
            alive &= torch.sigmoid(raw[:, -1]) <= 0.5

    return dream, batch * args.horizon


def measure(python: str, workload: str, **options) -> dict:
    """One run of this script's ``workload`` by ``python`` (a subprocess, so the
    caller needs no torch): its last JSON line. ``options`` become flags
    (seq_len=100 -> --seq-len 100)."""
    flags = [
        part
        for name, value in options.items()
        for part in (f"--{name.replace('_', '-')}", str(value))
    ]
    out = subprocess.run(
        [python, str(Path(__file__)), workload, *flags],
        capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()
    if not out or not out[-1].startswith("{"):
        raise RuntimeError(f"{python} {Path(__file__).name}: {out[-1:] or 'no output'}")
    return json.loads(out[-1])


WORKLOADS = {
    "vae": (vae_call, "images/s", 64),
    "encode": (encode_call, "images/s", 256),
    "rnn": (rnn_call, "seq-steps/s", 32),
    "dream": (dream_call, "agent-steps/s", 256),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--batch", type=int,
                        help="default: vae 64, encode 256, rnn 32, dream 256")
    parser.add_argument("--steps", type=int, default=5, help="calls per timed repeat")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--seq-len", type=int, default=100, help="rnn window length")
    parser.add_argument("--horizon", type=int, default=50, help="dream steps")
    parser.add_argument("--temperature", type=float, default=0.5, help="dream τ")
    parser.add_argument(
        "--autocast", type=int, default=0, help="dream: 1 = bfloat16 autocast"
    )
    args = parser.parse_args()
    try:
        import torch
        from torch import nn
    except ImportError:
        print("torch not available")
        return 0
    build, unit, default_batch = WORKLOADS[args.workload]
    args.batch = args.batch or default_batch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    call, units = build(torch, nn, args)
    start = time.perf_counter()
    call()
    compile_s = time.perf_counter() - start
    for _ in range(args.warmup - 1):
        call()
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            call()
        rate = units * args.steps / (time.perf_counter() - start)
        print(json.dumps({"rate": rate, "unit": unit, "compile_s": compile_s,
                          "threads": torch.get_num_threads(),
                          "torch": torch.__version__}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
