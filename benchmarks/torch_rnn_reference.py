"""Reference: M (LSTM + per-dimension mixture head) trained in plain PyTorch eager on
the CPU (sequence-steps/s).

    python benchmarks/torch_rnn_reference.py [--batch 32 --seq-len 100 --threads 2]

Standalone (stdlib + torch only); torch is NOT a project dependency: run it with a
Python that has torch. The step does the work of ``training/rnn_loss.py``'s step: z
drawn from the posterior per window, an LSTM (z 32 + action 3 -> 256) over the window,
a head of 3·5·32 mixture parameters + reward + termination logit at every step, the
per-dimension mixture NLL, the asymmetric reward error (5x above the target), the
termination BCE, global-norm clipping at 1 and Adam 1e-3. nn.LSTM runs the recurrence
(oneDNN's fused kernel where torch has one). Prints one JSON line per timed repeat:
{"seq_steps_per_s": ..., "compile_s": ...}. Exits 0 with "torch not available"
otherwise. benchmarks/train.py --torch-python PATH runs it as a subprocess beside ours.
"""

from __future__ import annotations

import argparse
import json
import math
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    args = parser.parse_args()
    try:
        import torch
        from torch import nn
    except ImportError:
        print("torch not available")
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    z_dim, actions, hidden, mixtures = 32, 3, 256, 5

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(z_dim + actions, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 3 * mixtures * z_dim + 2)

        def forward(self, z, a):
            h, _ = self.lstm(torch.cat([z, a], -1))
            return self.head(h)

    model = M()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch, length = args.batch, args.seq_len
    mu = torch.randn(batch, length + 1, z_dim)
    logvar = torch.full((batch, length + 1, z_dim), -2.0)
    acts = torch.rand(batch, length, actions) * 2 - 1
    rewards = torch.randn(batch, length)
    terminated = torch.zeros(batch, length)
    log_sqrt_2pi = 0.5 * math.log(2 * math.pi)

    def step():
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        raw = model(z[:, :-1], acts)
        mix = raw[..., :-2].reshape(batch, length, 3, z_dim, mixtures)
        logit_pi, means = mix[:, :, 0], mix[:, :, 1]
        log_sigma = mix[:, :, 2].clamp(-7.0, 3.0)
        scaled = (z[:, 1:, :, None] - means) * torch.exp(-log_sigma)
        log_normal = -0.5 * scaled**2 - log_sigma - log_sqrt_2pi
        log_prob = torch.logsumexp(torch.log_softmax(logit_pi, -1) + log_normal, -1)
        nll = -log_prob.mean()
        error = raw[..., -2] - rewards
        reward = (torch.where(error > 0, 5.0, 1.0) * error**2).mean()
        done = nn.functional.binary_cross_entropy_with_logits(raw[..., -1], terminated)
        loss = nll + reward + done
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        return loss

    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start
    for _ in range(args.warmup - 1):
        step()
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "seq_steps_per_s": batch * length * args.steps / seconds,
                    "compile_s": compile_s,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
