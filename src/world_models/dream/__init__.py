"""M's dream as a pure JAX rollout, and C evolved in it by CMA-ES."""
