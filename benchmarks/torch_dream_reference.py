"""Reference: M's dream played by a batch of linear controllers in plain PyTorch eager
on the CPU (agent-steps/s).

    python benchmarks/torch_dream_reference.py [--batch 256 --horizon 50 --threads 2]

Standalone (stdlib + torch only); torch is NOT a project dependency: run it with a
Python that has torch. Per step and agent, the work of ``Dream.step``: the linear
controller on [z, h] (tanh, gas and brake squashed to [0, 1]), one nn.LSTMCell step
(z 32 + action 3 -> 256), the head (3·5·32 mixture parameters + reward + termination
logit), a mixture component per latent dimension drawn from softmax(logits / τ) and
Gaussian noise at τ, the reward summed while alive. Under torch.no_grad. Prints one
JSON line per timed repeat: {"agent_steps_per_s": ..., "compile_s": ...}. Exits 0 with
"torch not available" otherwise. benchmarks/dream.py --torch-python PATH runs it
beside ours.
"""

from __future__ import annotations

import argparse
import json
import math
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--horizon", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=0.5)
    args = parser.parse_args()
    try:
        import torch
        from torch import nn
    except ImportError:
        print("torch not available")
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    z_dim, actions, hidden, mixtures, tau = 32, 3, 256, 5, args.temperature
    cell = nn.LSTMCell(z_dim + actions, hidden)
    head = nn.Linear(hidden, 3 * mixtures * z_dim + 2)
    controller = nn.Linear(z_dim + hidden, actions)
    batch = args.batch

    @torch.no_grad()
    def dream():
        z = torch.randn(batch, z_dim)
        h = torch.zeros(batch, hidden)
        c = torch.zeros(batch, hidden)
        total = torch.zeros(batch)
        alive = torch.ones(batch, dtype=torch.bool)
        for _ in range(args.horizon):
            raw_action = torch.tanh(controller(torch.cat([z, h], -1)))
            action = torch.cat(
                [raw_action[:, :1], (raw_action[:, 1:] + 1) / 2], -1
            )
            h, c = cell(torch.cat([z, action], -1), (h, c))
            raw = head(h)
            mix = raw[:, :-2].reshape(batch, 3, z_dim, mixtures)
            logit_pi, means, log_sigma = mix[:, 0], mix[:, 1], mix[:, 2]
            probs = torch.softmax(logit_pi / tau, -1).reshape(-1, mixtures)
            component = torch.multinomial(probs, 1).reshape(batch, z_dim, 1)
            mean = means.gather(-1, component)[..., 0]
            sigma = log_sigma.clamp(-7.0, 3.0).gather(-1, component)[..., 0].exp()
            z = mean + sigma * math.sqrt(tau) * torch.randn_like(mean)
            total += torch.where(alive, raw[:, -2], torch.zeros_like(total))
            alive &= torch.sigmoid(raw[:, -1]) <= 0.5
        return total

    start = time.perf_counter()
    dream()
    compile_s = time.perf_counter() - start
    for _ in range(args.repeats):
        start = time.perf_counter()
        dream()
        seconds = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "agent_steps_per_s": batch * args.horizon / seconds,
                    "compile_s": compile_s,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
