"""Lowering: layer ops to primitives, StableHLO text, IREE compile and run, and the JAX backend."""
