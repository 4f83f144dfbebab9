"""Real-env evaluation, world-model error, comparisons and diagnostics."""
