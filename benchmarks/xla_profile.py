"""Where the time goes: XLA's own profile of the three hot loops, op by op.

    uv run python benchmarks/xla_profile.py [--calls 5 --top 12]

For each workload (one dream generation's rollouts at the quick preset's 64 x 16
batch; one Adam step of V at batch 64; one Adam step of M at 32 windows x 100 steps,
the paper's sizes) the compiled call runs ``--calls`` times under ``jax.profiler``
after a warm-up. Every executed XLA op (a fusion, a GEMM, a loop) is timed by the
runtime; each is named here by the JAX operation it came from (the ``op_name`` XLA
keeps in the compiled HLO) and put in a kind: GEMM (XLA's ``ynn_fusion`` or ``dot``
thunks), gather/copy, transpose, loop (``while``: random bits, scans), elementwise.
Results: benchmarks/results/xla_profile.json; the tables go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import platform
import re
import sys
import tempfile
from pathlib import Path

import equinox as eqx
import jax
import optax

sys.path.insert(0, str(Path(__file__).parent))
from dream import ROLLOUTS, _dream, _population  # noqa: E402
from train import _rnn_batch, make_vae_step  # noqa: E402

from world_models.config import make_config  # noqa: E402
from world_models.envs import get_spec  # noqa: E402
from world_models.models.mdnrnn import rnn_from_config  # noqa: E402
from world_models.models.vae import IMAGE_SHAPE, ConvVAE  # noqa: E402
from world_models.training.rnn_loss import make_optimizer, make_train_step  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "xla_profile.json"
_RUNTIME = ("$", "Thunk", "Pjit", "Slinky", "CommonPjRt")
_OP = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"")


def op_kind(name: str) -> str:
    if name.startswith(("ynn_fusion", "dot")):
        return "GEMM"
    if name.startswith("while"):
        return "loop"
    if "transpose" in name:
        return "transpose"
    if name.startswith(("copy", "gather", "concatenate", "pad", "slice")):
        return "gather/copy"
    return "elementwise"


def source_ops(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the JAX op it came from (the last two parts of its
    op_name: the module or transform, and the primitive)."""
    sources = {}
    for line in hlo_text.splitlines():
        match = _OP.match(line)
        if match:
            path = [p for p in match.group(2).split("/") if not p.startswith("jit(")]
            sources[match.group(1)] = "/".join(path[-2:])
    return sources


def profile_calls(call, calls: int) -> dict[str, float]:
    """Seconds per call spent in each XLA op of ``call`` (already compiled)."""
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(calls):
            jax.block_until_ready(call())
        jax.profiler.stop_trace()
        trace = next(Path(trace_dir).rglob("*.trace.json.gz"))
        events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    spent = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not event["name"].startswith(_RUNTIME):
            spent[event["name"]] += event["dur"] * 1e-6 / calls
    return dict(spent)


def workloads():
    """(name, compiled call, its optimised HLO text) of each hot loop."""
    config = make_config("quick")
    dream = _dream("full", 100)
    population = _population(dream, config.dream.population)
    key = jax.random.key(3)
    dream_fn = jax.jit(
        lambda d, p, k: d.population_returns(p, k, ROLLOUTS, 0)[0]
    )
    dream_args = (dream, population, key)
    yield (
        f"dream, {config.dream.population} x {ROLLOUTS} rollouts, 100 steps",
        lambda: dream_fn(*dream_args),
        dream_fn.lower(*dream_args).compile().as_text(),
    )

    vae = ConvVAE(config.vae.z_dim, key=jax.random.key(0))
    optimiser = optax.adam(1e-4)
    opt_state = optimiser.init(eqx.filter(vae, eqx.is_array))
    frames = jax.random.uniform(jax.random.key(1), (64,) + IMAGE_SHAPE)
    vae_step = jax.jit(make_vae_step(optimiser))
    vae_args = (vae, opt_state, frames, jax.random.key(2))
    yield (
        "V, one Adam step, batch 64",
        lambda: vae_step(*vae_args),
        vae_step.lower(*vae_args).compile().as_text(),
    )

    spec = get_spec(config.env_id)
    rnn = rnn_from_config(config, key=jax.random.key(0))
    rnn_optimiser = make_optimizer(config.rnn)
    rnn_step = jax.jit(make_train_step(rnn_optimiser, config.rnn, spec))
    batch = _rnn_batch(32, 100, config.vae.z_dim, spec.action_size)
    rnn_args = (
        rnn,
        rnn_optimiser.init(eqx.filter(rnn, eqx.is_array)),
        batch,
        jax.random.key(2),
    )
    yield (
        "M, one Adam step, 32 windows x 100 steps",
        lambda: rnn_step(*rnn_args),
        rnn_step.lower(*rnn_args).compile().as_text(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    results = dict(
        machine=platform.processor() or platform.machine(),
        backend=jax.default_backend(),
        jax=jax.__version__,
        workloads=[],
    )
    for name, call, hlo in workloads():
        jax.block_until_ready(call())  # compile and warm up outside the trace
        spent = profile_calls(call, args.calls)
        sources = source_ops(hlo)
        total = sum(spent.values())
        kinds = collections.Counter()
        for op, seconds in spent.items():
            kinds[op_kind(op)] += seconds
        ops = [
            dict(op=op, kind=op_kind(op), source=sources.get(op, "?"), ms=s * 1e3,
                 share=s / total)
            for op, s in sorted(spent.items(), key=lambda item: -item[1])
        ]
        results["workloads"].append(
            dict(name=name, ms_per_call=total * 1e3, kinds={
                k: dict(ms=s * 1e3, share=s / total) for k, s in kinds.most_common()
            }, ops=ops)
        )
        print(f"\n### {name}: {total * 1e3:.1f} ms of XLA ops per call\n")
        print("| kind | ms | share |\n|---|---|---|")
        for kind, seconds in kinds.most_common():
            print(f"| {kind} | {seconds * 1e3:.1f} | {seconds / total:.0%} |")
        print("\n| op | kind | from | ms | share |\n|---|---|---|---|---|")
        for row in ops[: args.top]:
            print(
                f"| {row['op']} | {row['kind']} | {row['source']} | "
                f"{row['ms']:.2f} | {row['share']:.1%} |"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
