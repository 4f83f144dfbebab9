"""Reference: the same ConvVAE trained in plain PyTorch eager on the CPU (images/s).

    python benchmarks/torch_vae_reference.py [--batch 64 --steps 5 --threads 2]

Standalone (stdlib + torch only); torch is NOT a project dependency: run it with a
Python that has torch. Prints one JSON line per timed repeat:
{"images_per_s": ..., "compile_s": ...}. Exits 0 with "torch not available" otherwise.
benchmarks/train.py --torch-python PATH runs it as a subprocess interleaved with ours.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--z", type=int, default=32)
    args = parser.parse_args()
    try:
        import torch
        from torch import nn
    except ImportError:
        print("torch not available")
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    class VAE(nn.Module):
        def __init__(self, z: int):
            super().__init__()
            self.enc = nn.Sequential(
                nn.Conv2d(3, 32, 4, 2), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                nn.Conv2d(64, 128, 4, 2), nn.ReLU(), nn.Conv2d(128, 256, 4, 2),
                nn.ReLU(), nn.Flatten())
            self.mu, self.logvar = nn.Linear(1024, z), nn.Linear(1024, z)
            self.fc = nn.Linear(z, 1024)
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

    model = VAE(args.z)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 4_348_547 or args.z != 32, n_params
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    frames = torch.rand(args.batch, 3, 64, 64)

    def step():
        recon, mu, logvar = model(frames)
        rec = ((recon - frames) ** 2).sum(dim=(1, 2, 3))
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)
        loss = (rec + torch.clamp(kl, min=0.5 * args.z)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start  # first step: allocator / oneDNN set-up
    for _ in range(args.warmup - 1):
        step()
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = time.perf_counter() - start
        rate = args.batch * args.steps / seconds
        print(json.dumps({"images_per_s": rate, "compile_s": compile_s,
                          "threads": torch.get_num_threads(),
                          "torch": torch.__version__}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
