"""World Models in JAX/Equinox."""
