"""Reverse-mode autodiff: an adjoint per op, a reverse pass that emits the backward graph, and
checks (structural invariants and numerics) on what it built."""
from gir.autodiff import adjoints, layer_adjoints  # noqa: F401  (fill ADJOINTS)
from gir.autodiff.registry import ADJOINTS, NOT_DIFFERENTIABLE, AdjointError, adjoint
from gir.autodiff.reverse import Backward, backprop, grad, vjp

__all__ = ["ADJOINTS", "NOT_DIFFERENTIABLE", "AdjointError", "adjoint", "Backward", "backprop", "grad", "vjp"]
