"""The functional builder: named scopes give nodes layer paths, every node records the user's
source line, and shapes are inferred (and checked) as each node is made."""
from __future__ import annotations

import contextlib
import zlib
from typing import Any, Iterator, Sequence

import sympy

from gir.ir import opdefs as od
from gir.ir.dtypes import DType
from gir.ir.graph import Graph, Init, Loc, Node, Value
from gir.ir.types import Dim, TensorType, format_dim
from gir.nn.provenance import short_path, user_frame
from gir.shapes.dims import Constraints
from gir.shapes.errors import ShapeError
from gir.shapes.rules import infer


STEP = "step"
"""The name of the training step's i32 input: random layers key their numbers by it."""


class Builder:
    """Builds one Graph. `mode` is "train" (BN uses batch statistics and reports them) or "eval"."""

    def __init__(self, name: str = "graph", constraints: Constraints = Constraints(), mode: str = "train",
                 seed: int = 0, dtype: DType = DType.f32):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.graph = Graph(name)
        self.constraints = constraints
        self.mode = mode
        self.seed = seed
        self.dtype = dtype  # of parameters and float constants: f32, or f64 for a whole-net float64 check
        self._scopes: list[str] = []
        self.sites: list[tuple[Loc, int]] = []  # (call site of the layer being built, stack depth then)
        self._child_names: dict[str, set[str]] = {}
        self.bn_stats: list[tuple[str, Value, Value]] = []

    # ---- scopes and provenance ----------------------------------------------------------

    @property
    def path(self) -> str:
        return ".".join(self._scopes)

    def qualify(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def child_name(self, name: str | None, prefix: str) -> str:
        """`name` if free in the current scope (an error if taken), else the next free `prefix<k>`."""
        used = self._child_names.setdefault(self.path, set())
        if name is None:
            k = 1
            while f"{prefix}{k}" in used:
                k += 1
            name = f"{prefix}{k}"
        elif name in used:
            raise ValueError(f"{self.loc()}: layer name {name!r} is used twice in scope "
                             f"{self.path or '<root>'!r}; give each layer a distinct name=")
        used.add(name)
        return name

    @contextlib.contextmanager
    def scope(self, name: str, site: Loc | None = None, depth: int = 0) -> Iterator[None]:
        """Nodes made inside get `name` appended to their layer path; `site` (a layer's call site)
        becomes their source line unless user code deeper in the stack than `depth` made them."""
        if not name or "." in name:
            raise ValueError(f"scope names are non-empty and have no dots, got {name!r}")
        self._scopes.append(name)
        if site is not None:
            self.sites.append((site, depth))
        try:
            yield
        finally:
            self._scopes.pop()
            if site is not None:
                self.sites.pop()

    def loc(self) -> Loc:
        """Provenance for a node made now: the user's frame if it is inside the current layer's
        build, else the layer's call site."""
        frame, depth = user_frame(2)
        if self.sites:
            site, site_depth = self.sites[-1]
            if frame is None or depth <= site_depth:
                return Loc(self.path, site.file, site.line, site.col)
        if frame is None:
            return Loc(self.path)
        return Loc(self.path, short_path(frame.f_code.co_filename), frame.f_lineno)

    # ---- graph inputs --------------------------------------------------------------------

    def input(self, name: str, shape: Sequence[Dim], dtype: DType | None = None, role: str = "data") -> Value:
        return self.graph.add_input(name, TensorType(shape, dtype or self.dtype), role)

    def param(self, name: str, shape: Sequence[int], init: Init, role: str = "param") -> Value:
        """A parameter named by its layer path, e.g. `stage3.block1.dw.weight`."""
        bad = [d for d in shape if not isinstance(d, int) or d < 1]
        if bad:
            loc = self.loc()
            raise ShapeError(f"parameter shape must be positive ints, got [{', '.join(format_dim(d) for d in shape)}]",
                             op="param", loc=loc)
        full = self.qualify(name)
        if any(v.name == full for v in self.graph.inputs):
            raise ValueError(f"{self.loc()}: a parameter named {full!r} already exists; give the layer a "
                             f"distinct name=")
        return self.graph.add_input(full, TensorType(tuple(shape), self.dtype), role, init)

    def step_input(self) -> Value:
        """The graph's i32 `step` input (role `hyper`, 1 for the first training step), made on first use."""
        try:
            return self.graph.input(STEP)
        except KeyError:
            return self.input(STEP, (), DType.i32, "hyper")

    def random_uniform(self, shape: Sequence[Dim]) -> Value:
        """Uniform floats in [0, 1) (24 random bits each), a function of (seed, step, layer path) alone: the same
        on IREE and JAX, and the same again when a run resumes at that step."""
        salt = zlib.crc32(self.path.encode()) & 0x7FFFFFFF
        key = self.constant(self.seed % 2**31, (), DType.i32)
        bits = self._one("random_bits", key, self.step_input(), attrs=od.RandomAttrs(tuple(shape), salt))
        top = self._one("shift_right_logical", bits, self.constant(8, shape, DType.i32))
        return self.multiply(self.convert(top, self.dtype), self.constant(2.0**-24, shape))

    # ---- nodes ---------------------------------------------------------------------------

    def emit(self, op: str, inputs: Sequence[Value], attrs: Any = None) -> Node:
        """Makes a node after inferring its output types; a ShapeError gets this op and provenance."""
        loc = self.loc()
        try:
            types = infer(op, attrs, tuple(v.type for v in inputs), self.constraints)
        except ShapeError as e:
            raise e.at(op, loc) from None
        return self.graph.add_node(op, inputs, attrs, types, loc)

    def _one(self, op: str, *inputs: Value, attrs: Any = None) -> Value:
        return self.emit(op, inputs, attrs).out

    # primitives ---------------------------------------------------------------------------

    def add(self, x: Value, y: Value) -> Value:
        return self._one("add", x, y)

    def subtract(self, x: Value, y: Value) -> Value:
        return self._one("subtract", x, y)

    def multiply(self, x: Value, y: Value) -> Value:
        return self._one("multiply", x, y)

    def divide(self, x: Value, y: Value) -> Value:
        return self._one("divide", x, y)

    def unary(self, op: str, x: Value) -> Value:
        """Any elementwise unary primitive or activation by name (exp, tanh, logistic, relu6, ...)."""
        if op not in od.ELEMENTWISE_UNARY + od.ACTIVATIONS:
            raise ValueError(f"{op!r} is not an elementwise unary op or activation")
        return self._one(op, x)

    def constant(self, value: float | int | bool, shape: Sequence[Dim] = (), dtype: DType | None = None) -> Value:
        return self._one("constant", attrs=od.ConstantAttrs(value, TensorType(shape, dtype or self.dtype)))

    def convert(self, x: Value, dtype: DType) -> Value:
        return x if x.type.dtype == dtype else self._one("convert", x, attrs=od.ConvertAttrs(dtype))

    def broadcast_in_dim(self, x: Value, shape: Sequence[Dim], dims: Sequence[int]) -> Value:
        return self._one("broadcast_in_dim", x, attrs=od.BroadcastAttrs(tuple(shape), tuple(dims)))

    def broadcast_like(self, x: Value, like: Value, dims: Sequence[int]) -> Value:
        """Broadcasts `x` to `like`'s shape, operand dim i going to result dim dims[i]."""
        return self.broadcast_in_dim(x, like.type.shape, dims)

    def reshape(self, x: Value, shape: Sequence[Dim]) -> Value:
        return self._one("reshape", x, attrs=od.ReshapeAttrs(tuple(shape)))

    def transpose(self, x: Value, perm: Sequence[int]) -> Value:
        return self._one("transpose", x, attrs=od.TransposeAttrs(tuple(perm)))

    def slice(self, x: Value, start: Sequence[Dim], limit: Sequence[Dim], strides: Sequence[int] | None = None) -> Value:
        strides = tuple(strides) if strides is not None else (1,) * x.type.rank
        return self._one("slice", x, attrs=od.SliceAttrs(tuple(start), tuple(limit), strides))

    def concatenate(self, xs: Sequence[Value], dim: int) -> Value:
        return self.emit("concatenate", xs, od.ConcatAttrs(dim)).out

    def reduce(self, x: Value, kind: str, dims: Sequence[int]) -> Value:
        return self._one("reduce", x, attrs=od.ReduceAttrs(kind, tuple(dims)))

    def dot_general(self, x: Value, y: Value, lhs_batch=(), rhs_batch=(), lhs_contract=(), rhs_contract=()) -> Value:
        return self._one("dot_general", x, y, attrs=od.DotGeneralAttrs(lhs_batch, rhs_batch, lhs_contract, rhs_contract))

    def iota(self, shape: Sequence[Dim], dim: int, dtype: DType = DType.i32) -> Value:
        """0, 1, 2, ... along `dim` of `shape`."""
        return self._one("iota", attrs=od.IotaAttrs(dim, TensorType(shape, dtype)))

    def compare(self, x: Value, y: Value, direction: str) -> Value:
        return self._one("compare", x, y, attrs=od.CompareAttrs(direction))

    def select(self, pred: Value, on_true: Value, on_false: Value) -> Value:
        return self._one("select", pred, on_true, on_false)

    def take(self, table: Value, ids: Value) -> Value:
        """Rows of table [V, D] at integer ids [...]: [..., D]."""
        return self._one("take", table, ids)

    # layer ops ------------------------------------------------------------------------------

    def conv2d(self, x: Value, w: Value, stride=1, padding="same", dilation=1) -> Value:
        return self._one("conv2d", x, w, attrs=od.ConvAttrs(stride, padding, dilation))

    def depthwise_conv2d(self, x: Value, w: Value, stride=1, padding="same", dilation=1) -> Value:
        return self._one("depthwise_conv2d", x, w, attrs=od.ConvAttrs(stride, padding, dilation))

    def dense(self, x: Value, w: Value) -> Value:
        return self._one("dense", x, w)

    def bias_add(self, x: Value, b: Value, axis: int) -> Value:
        return self._one("bias_add", x, b, attrs=od.AxisAttrs(axis))

    def batch_norm(self, x: Value, gamma: Value, beta: Value, running_mean: Value, running_var: Value,
                   eps: float = 1e-5, momentum: float = 0.1) -> Value:
        """Train mode: batch statistics, recorded in `bn_stats`; eval mode: the running statistics."""
        if self.mode == "train":
            node = self.emit("batch_norm", (x, gamma, beta), od.BatchNormAttrs(eps, momentum, True))
            y, mean, var = node.outputs
            self.bn_stats.append((self.path, mean, var))
            return y
        return self._one("batch_norm", x, gamma, beta, running_mean, running_var,
                         attrs=od.BatchNormAttrs(eps, momentum, False))

    def layer_norm(self, x: Value, gamma: Value, beta: Value, eps: float = 1e-5) -> Value:
        return self._one("layer_norm", x, gamma, beta, attrs=od.LayerNormAttrs(eps))

    def max_pool(self, x: Value, window, stride, padding="valid") -> Value:
        return self._one("max_pool", x, attrs=od.PoolAttrs(window, stride, padding))

    def avg_pool(self, x: Value, window, stride, padding="valid") -> Value:
        return self._one("avg_pool", x, attrs=od.PoolAttrs(window, stride, padding))

    def global_avg_pool(self, x: Value) -> Value:
        return self._one("global_avg_pool", x)

    def softmax(self, x: Value, axis: int = -1) -> Value:
        return self._one("softmax", x, attrs=od.AxisAttrs(axis))

    def attention(self, q: Value, k: Value, v: Value, heads: int, causal: bool = False) -> Value:
        return self._one("attention", q, k, v, attrs=od.AttentionAttrs(heads, causal))

    def softmax_cross_entropy(self, logits: Value, labels: Value, label_smoothing: float = 0.0) -> Value:
        return self._one("softmax_cross_entropy", logits, labels, attrs=od.XentAttrs(label_smoothing))

    def flatten(self, x: Value) -> Value:
        """[N, ...] -> [N, prod(...)]."""
        rest: Dim = 1
        for d in x.type.shape[1:]:
            rest = rest * d
        return self.reshape(x, (x.type.shape[0], sympy.sympify(rest) if not isinstance(rest, int) else rest))
