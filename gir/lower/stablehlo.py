"""StableHLO text from a static, primitive-only graph: one printing rule per primitive op.

Every op carries `loc("layer.path"("file.py":line:0))` so compiler diagnostics point at the
user's net file. Layer ops are decomposed first (gir.lower.decompose)."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from gir.ir import opdefs as od
from gir.ir.dtypes import DType
from gir.ir.graph import Graph, Loc, Node, Value
from gir.ir.ops import rule_registrar
from gir.ir.types import TensorType


class LoweringError(Exception):
    """A graph that cannot be printed as StableHLO (symbolic shapes, an op without a rule)."""


def ttype(t: TensorType) -> str:
    return "tensor<" + "".join(f"{d}x" for d in t.shape) + str(t.dtype) + ">"


def _ints(xs: Sequence[int]) -> str:
    return f"array<i64: {', '.join(str(int(x)) for x in xs)}>" if len(xs) else "array<i64>"


def _pads(pads: Sequence[tuple[int, int]]) -> str:
    rows = ", ".join(f"[{int(lo)}, {int(hi)}]" for lo, hi in pads)
    return f"dense<[{rows}]> : tensor<{len(pads)}x2xi64>"


_INF_HEX = {DType.f32: ("0x7F800000", "0xFF800000"), DType.bf16: ("0x7F80", "0xFF80"),
            DType.f64: ("0x7FF0000000000000", "0xFFF0000000000000")}


def scalar_literal(value: float | int | bool, dtype: DType) -> str:
    if dtype == DType.i1:
        return "true" if value else "false"
    if dtype == DType.i32:
        return str(int(value))
    v = float(value)
    if math.isinf(v):
        return _INF_HEX[dtype][0 if v > 0 else 1]
    if math.isnan(v):
        raise LoweringError("NaN constants are not supported")
    return f"{v:.17e}"  # always has a '.', and round-trips a double exactly


def location(loc: Loc, col: int | None = None) -> str:
    file_loc = f'"{loc.file}":{loc.line}:{loc.col if col is None else col}' if loc.file else "unknown"
    return f'loc("{loc.path}"({file_loc}))' if loc.path else f"loc({file_loc})"


class _Printer:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.names: dict[Value, str] = {}
        self.lines: list[str] = []
        self.counter = 0
        self.per_line: dict[tuple[str, int], int] = {}

    def loc(self, loc: Loc) -> str:
        """The op's location; its column numbers the ops of one source line (1, 2, ...) so that a
        compiler diagnostic, which prints only file:line:col, still names a single op."""
        key = (loc.file, loc.line)
        self.per_line[key] = self.per_line.get(key, 0) + 1
        return location(loc, self.per_line[key])

    def fresh(self) -> str:
        self.counter += 1
        return f"%{self.counter - 1}"

    def generic(self, node: Node, name: str, attrs: str = "", region: str = "", operands: Sequence[Value] | None = None,
                extra_in: Sequence[tuple[str, TensorType]] = ()) -> None:
        """`%r = "stablehlo.NAME"(operands) ({region}) {attrs} : (types) -> type loc(...)`."""
        ins = list(operands if operands is not None else node.inputs)
        args = [self.names[v] for v in ins] + [n for n, _ in extra_in]
        types = [ttype(v.type) for v in ins] + [ttype(t) for _, t in extra_in]
        res = ", ".join(ttype(v.type) for v in node.outputs)
        out = self.fresh()
        for v in node.outputs:
            self.names[v] = out
        self.lines.append(f'    {out} = "stablehlo.{name}"({", ".join(args)}){region}'
                          f'{" {" + attrs + "}" if attrs else ""} : ({", ".join(types)}) -> {res} {self.loc(node.loc)}')

    def scalar_const(self, value: float, dtype: DType, loc: Loc) -> str:
        name = self.fresh()
        t = TensorType((), dtype)
        self.lines.append(f"    {name} = stablehlo.constant dense<{scalar_literal(value, dtype)}> : {ttype(t)} "
                          f"{self.loc(loc)}")
        return name

    def region(self, kind: str, dtype: DType, loc: Loc) -> str:
        op = {"sum": "add", "max": "maximum", "min": "minimum"}[kind]
        t = ttype(TensorType((), dtype))
        return (f' ({{\n    ^bb0(%lhs: {t}, %rhs: {t}):\n'
                f'      %r = "stablehlo.{op}"(%lhs, %rhs) : ({t}, {t}) -> {t} {location(loc)}\n'
                f'      "stablehlo.return"(%r) : ({t}) -> () {location(loc)}\n    }})')


def _init_value(kind: str, dtype: DType) -> float | int | bool:
    """The reduction's identity: 0, or the lowest/highest value of the type (+-inf for floats)."""
    if kind == "sum":
        return 0
    if dtype == DType.i32:
        return -(2 ** 31) if kind == "max" else 2 ** 31 - 1
    if dtype == DType.i1:
        return kind == "min"
    return -math.inf if kind == "max" else math.inf


Rule = Callable[[_Printer, Node, Any], None]
STABLEHLO_RULES: dict[str, Rule] = {}


prints = rule_registrar(STABLEHLO_RULES)
"""`@prints("op", ...)` files a printing rule."""


_NAMES = {"exp": "exponential", "log": "log", "tanh": "tanh", "logistic": "logistic", "sqrt": "sqrt",
          "rsqrt": "rsqrt", "abs": "abs", "negate": "negate", "add": "add", "subtract": "subtract",
          "multiply": "multiply", "divide": "divide", "maximum": "maximum", "minimum": "minimum",
          "select": "select", "clamp": "clamp", "convert": "convert", "reshape": "reshape",
          "concatenate": "concatenate", "xor": "xor", "or": "or", "shift_left": "shift_left",
          "shift_right_logical": "shift_right_logical", "sine": "sine", "cosine": "cosine"}


@prints(*od.ELEMENTWISE_UNARY, *od.ELEMENTWISE_BINARY, *od.ELEMENTWISE_BITWISE, "select", "clamp", "convert",
        "reshape")
def _plain(p: _Printer, node: Node, a: Any) -> None:
    p.generic(node, _NAMES[node.op])


@prints("compare")
def _compare(p: _Printer, node: Node, a: od.CompareAttrs) -> None:
    kind = "FLOAT" if node.inputs[0].type.dtype.is_float else "SIGNED"
    p.generic(node, "compare", f"comparison_direction = #stablehlo<comparison_direction {a.direction}>, "
                               f"compare_type = #stablehlo<comparison_type {kind}>")


@prints("constant")
def _constant(p: _Printer, node: Node, a: od.ConstantAttrs) -> None:
    out = p.fresh()
    p.names[node.out] = out
    p.lines.append(f"    {out} = stablehlo.constant dense<{scalar_literal(a.value, a.type.dtype)}> : "
                   f"{ttype(a.type)} {p.loc(node.loc)}")


@prints("iota")
def _iota(p: _Printer, node: Node, a: od.IotaAttrs) -> None:
    p.generic(node, "iota", f"iota_dimension = {a.dim} : i64")


@prints("broadcast_in_dim")
def _broadcast(p: _Printer, node: Node, a: od.BroadcastAttrs) -> None:
    p.generic(node, "broadcast_in_dim", f"broadcast_dimensions = {_ints(a.dims)}")


@prints("transpose")
def _transpose(p: _Printer, node: Node, a: od.TransposeAttrs) -> None:
    p.generic(node, "transpose", f"permutation = {_ints(a.perm)}")


@prints("reverse")
def _reverse(p: _Printer, node: Node, a: od.ReverseAttrs) -> None:
    p.generic(node, "reverse", f"dimensions = {_ints(a.dims)}")


@prints("optimization_barrier")
def _optimization_barrier(p: _Printer, node: Node, a: None) -> None:
    """IREE's compute barriers, a start and an end: identities that keep IREE from fusing or moving transposes and
    reshapes across them in either direction. StableHLO's own optimization_barrier would do that too, but IREE makes
    the host wait for its operand (the work before it is submitted and awaited on its own): ResNet-18's train step
    became 100 submissions, and the caller's thread spun in those waits for 80 of its 210 ms (docs/performance.md)."""
    (x,), (y,), t = node.inputs, node.outputs, ttype(node.inputs[0].type)
    start, end = p.fresh(), p.fresh()
    p.lines.append(f"    {start} = iree_tensor_ext.compute_barrier.start {p.names[x]} : {t} -> {t} {p.loc(node.loc)}")
    p.lines.append(f"    {end} = iree_tensor_ext.compute_barrier.end {start} : {t} -> {t} {p.loc(node.loc)}")
    p.names[y] = end


@prints("slice")
def _slice(p: _Printer, node: Node, a: od.SliceAttrs) -> None:
    p.generic(node, "slice", f"start_indices = {_ints(a.start)}, limit_indices = {_ints(a.limit)}, "
                             f"strides = {_ints(a.strides)}")


@prints("pad")
def _pad(p: _Printer, node: Node, a: od.PadAttrs) -> None:
    p.generic(node, "pad", f"edge_padding_low = {_ints(a.low)}, edge_padding_high = {_ints(a.high)}, "
                           f"interior_padding = {_ints(a.interior)}")


@prints("concatenate")
def _concat(p: _Printer, node: Node, a: od.ConcatAttrs) -> None:
    p.generic(node, "concatenate", f"dimension = {a.dim} : i64")


@prints("dot_general")
def _dot_general(p: _Printer, node: Node, a: od.DotGeneralAttrs) -> None:
    lst = lambda xs: "[" + ", ".join(map(str, xs)) + "]"  # noqa: E731
    p.generic(node, "dot_general", "dot_dimension_numbers = #stablehlo.dot<"
              f"lhs_batching_dimensions = {lst(a.lhs_batch)}, rhs_batching_dimensions = {lst(a.rhs_batch)}, "
              f"lhs_contracting_dimensions = {lst(a.lhs_contract)}, rhs_contracting_dimensions = {lst(a.rhs_contract)}>")


def _dim_numbers(layout: str, batch: str, feat: str) -> str:
    spatial = iter(range(len(layout) - 2))
    return "[" + ", ".join({batch: "b" if batch == "N" else "o", feat: "f" if feat == "C" else "i"}.get(ch) or
                           str(next(spatial)) for ch in layout) + "]"


@prints("convolution")
def _convolution(p: _Printer, node: Node, a: od.ConvolutionAttrs) -> None:
    dn = (f"{_dim_numbers(a.lhs_layout, 'N', 'C')}x{_dim_numbers(a.rhs_layout, 'O', 'I')}->"
          f"{_dim_numbers(a.out_layout, 'N', 'C')}")
    p.generic(node, "convolution",
              f"dimension_numbers = #stablehlo.conv<{dn}>, window_strides = {_ints(a.window_strides)}, "
              f"padding = {_pads(a.padding)}, lhs_dilation = {_ints(a.lhs_dilation)}, "
              f"rhs_dilation = {_ints(a.rhs_dilation)}, feature_group_count = {a.feature_group_count} : i64, "
              f"batch_group_count = {a.batch_group_count} : i64")


@prints("reduce")
def _reduce(p: _Printer, node: Node, a: od.ReduceAttrs) -> None:
    dtype = node.inputs[0].type.dtype
    init = p.scalar_const(_init_value(a.kind, dtype), dtype, node.loc)
    p.generic(node, "reduce", f"dimensions = {_ints(a.dims)}", p.region(a.kind, dtype, node.loc),
              extra_in=[(init, TensorType((), dtype))])


@prints("reduce_window")
def _reduce_window(p: _Printer, node: Node, a: od.ReduceWindowAttrs) -> None:
    dtype = node.inputs[0].type.dtype
    init = p.scalar_const(_init_value(a.kind, dtype), dtype, node.loc)
    p.generic(node, "reduce_window", f"window_dimensions = {_ints(a.window)}, window_strides = {_ints(a.strides)}, "
              f"padding = {_pads(a.padding)}", p.region(a.kind, dtype, node.loc),
              extra_in=[(init, TensorType((), dtype))])


def _lst(xs: Sequence[int]) -> str:
    return "[" + ", ".join(map(str, xs)) + "]"


@prints("take")
def _take(p: _Printer, node: Node, a: None) -> None:
    """Row gather: each id (a batch position) selects a [1, D] slice of the table, its row dim collapsed."""
    table, ids = node.inputs
    r = ids.type.rank
    p.generic(node, "gather", f"dimension_numbers = #stablehlo.gather<offset_dims = {_lst([r])}, "
              f"collapsed_slice_dims = [0], start_index_map = [0], index_vector_dim = {r}>, "
              f"slice_sizes = {_ints((1, table.type.shape[1]))}, indices_are_sorted = false")


@prints("scatter_add")
def _scatter_add(p: _Printer, node: Node, a: None) -> None:
    """Row scatter with an add region: repeated ids accumulate."""
    operand, ids, _ = node.inputs
    r = ids.type.rank
    p.generic(node, "scatter", f"scatter_dimension_numbers = #stablehlo.scatter<update_window_dims = {_lst([r])}, "
              f"inserted_window_dims = [0], scatter_dims_to_operand_dims = [0], index_vector_dim = {r}>, "
              f"indices_are_sorted = false, unique_indices = false",
              p.region("sum", operand.type.dtype, node.loc))


TRANSIENT_STORAGE = "%transients: !hal.buffer {iree.abi.transients}"
"""The extra last argument of a function whose caller provides IREE's transient storage: IREE
places the call's intermediate buffers in it instead of allocating (and zero-filling) them on
every call (gir.lower.iree_runtime.IreeSession allocates it once per function)."""


def print_module(graphs: dict[str, Graph], module_name: str = "gir", transient_storage: bool = False) -> str:
    """One StableHLO module with a public function per (static, primitive-only) graph; each
    function takes the graph's inputs in order (then, with `transient_storage`, an IREE buffer
    for its intermediates) and returns its outputs in order."""
    parts = [f"module @{_ident(module_name)} {{"]
    for fname, g in graphs.items():
        parts.append(print_function(g, fname, transient_storage))
    parts.append("}")
    return "\n".join(parts) + "\n"


def _ident(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in s) or "m"


def print_function(graph: Graph, fname: str, transient_storage: bool = False) -> str:
    p = _Printer(graph)
    args = []
    for i, v in enumerate(graph.inputs):
        if not v.type.is_static:
            raise LoweringError(f"input {v.name!r} has symbolic shape {v.type}; bind the symbols first")
        p.names[v] = f"%arg{i}"
        args.append(f"%arg{i}: {ttype(v.type)} loc(\"{v.name}\")")
    if transient_storage:
        args.append(TRANSIENT_STORAGE)
    for node in graph.nodes:
        rule = STABLEHLO_RULES.get(node.op)
        if rule is None:
            raise LoweringError(f"no StableHLO rule for op {node.op!r} at {node.loc} (decompose layer ops first)")
        if not all(v.type.is_static for v in node.outputs):
            raise LoweringError(f"{node.op} at {node.loc} has a symbolic shape; bind the symbols first")
        try:
            rule(p, node, node.attrs)
        except LoweringError as e:
            where = node.loc.where()
            raise LoweringError(f"{where + ': ' if where else ''}{node.op} at layer '{node.loc.path}': {e}") from None
    outs = list(graph.outputs.values())
    results = ", ".join(ttype(v.type) for v in outs)
    head = f"  func.func public @{_ident(fname)}({', '.join(args)}) -> ({results}) {{"
    ret = f"    \"func.return\"({', '.join(p.names[v] for v in outs)}) : ({results}) -> ()"
    return "\n".join([head, *p.lines, ret, "  }"])
