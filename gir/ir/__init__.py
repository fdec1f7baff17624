"""The ground floor: values, nodes, graphs, tensor types, the op registry, verifier, printer, DOT."""
from gir.ir import opdefs  # noqa: F401  (registers every op)
from gir.ir.dtypes import DType, bf16, f32, f64, i1, i32
from gir.ir.graph import ROLES, Graph, Init, Loc, Node, Value
from gir.ir.ops import OPS, OpDef, get_op, missing_rules, register_op
from gir.ir.types import Dim, TensorType, format_dim

__all__ = ["DType", "bf16", "f32", "f64", "i1", "i32", "ROLES", "Graph", "Init", "Loc", "Node", "Value",
           "OPS", "OpDef", "get_op", "missing_rules", "register_op", "Dim", "TensorType", "format_dim"]
