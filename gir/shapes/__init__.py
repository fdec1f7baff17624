"""Symbolic shapes: dims over integer positive symbols, per-op shape rules, constraints, ShapeError,
and specialization (binding symbols to ints)."""
from gir.shapes.dims import (Constraints, H, N, T, Undecidable, W, ceildiv, dims_equal, floordiv, min_value,
                             sym)
from gir.shapes.errors import ShapeError
from gir.shapes.rules import SHAPE_RULES, infer, infer_node
from gir.shapes.specialize import BindingError, bind_dim, specialize

__all__ = ["Constraints", "H", "N", "T", "Undecidable", "W", "ceildiv", "dims_equal", "floordiv", "min_value", "sym",
           "ShapeError", "SHAPE_RULES", "infer", "infer_node", "BindingError", "bind_dim", "specialize"]
