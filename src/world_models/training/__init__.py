"""Training loops: V, M, and C by imitation."""
