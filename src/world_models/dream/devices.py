"""The dream's candidates split over the devices, when there are several.

With one device every function here leaves what it is given as it is. With several
(GPUs, or a CPU under ``XLA_FLAGS=--xla_force_host_platform_device_count=N``) the
candidate axis of a population is split over a 1-D mesh of ``jax.devices()``
(``split_candidates``, in ``Dream.population_returns``): each device plays its share of
candidates x rollouts. Everything else (M, the dream's starts, the keys, CMA-ES's state,
and the population and fitness that CMA-ES reads) is whole on every device, so CMA-ES's
update is the same computation as on one device (docs/scale_out.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array

CANDIDATES = "candidates"  # the mesh's one axis


def device_count() -> int:
    return len(jax.devices())


def _sharding(spec: PartitionSpec) -> NamedSharding:
    return NamedSharding(Mesh(np.array(jax.devices()), (CANDIDATES,)), spec)


def split_candidates(population: Array) -> Array:
    """``population`` (candidates first, as many as a multiple of the device count)
    split over the devices; unchanged on one device."""
    if device_count() == 1:
        return population
    return jax.lax.with_sharding_constraint(
        population, _sharding(PartitionSpec(CANDIDATES))
    )


def whole_on_every_device(tree: Any) -> Any:
    """Inside a jitted function: ``tree``'s arrays whole on every device (unchanged on
    one device), e.g. the population and its fitness that CMA-ES reads, so that
    its update is the same computation as on one device."""
    if device_count() == 1:
        return tree
    return jax.lax.with_sharding_constraint(tree, _sharding(PartitionSpec()))


def arguments_on_every_device(function: Callable) -> Callable:
    """A jitted ``function`` that splits candidates, called with every array of its
    arguments replicated over the devices first: a computation that spans several
    devices refuses arrays committed to one, as a restored checkpoint's are. On one
    device the arguments are passed as they are."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        if device_count() > 1:
            replicated = _sharding(PartitionSpec())
            args, kwargs = jax.tree.map(
                lambda x: (
                    jax.device_put(x, replicated) if isinstance(x, jax.Array) else x
                ),
                (args, kwargs),
            )
        return function(*args, **kwargs)

    return call
