"""Activation layout: run the 4-D activations in another memory order than the NCHW the layers
are written in. Nets, adjoints and the graph's interface stay NCHW; the pass moves every
activation into the new order once (at the first convolution, or where a graph input meets
one) and keeps it there, so convolutions, elementwise ops, pads, slices and reductions read
and write the new order directly and only values that leave the activation path are
transposed back.

One rule per op (`RULES`), each a few lines: given the op's inputs in the new order, emit the
same op in the new order, or return None and the op runs on NCHW inputs. Convolutions always
run through their rule: their outputs start the new order.

- `layout_nhwc`: channels innermost. 1x1 convolutions become one matmul over batch and space,
  depthwise taps vectorize along channels.
- `layout_cnhw`: channels outermost. 1x1 convolutions become one matmul, batch-norm
  statistics become row sums.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import attrs

from gir.ir import opdefs as od
from gir.ir.graph import Graph, Node, Value
from gir.ir.ops import rule_registrar
from gir.rewrite.driver import Pass, dead_code_elimination, register_pass
from gir.shapes.emit import Emitter

WRITTEN = "NCHW"
"""The order activations are written in (layers, adjoints, the graph interface)."""
WEIGHT_GRAD = "CNHW"
"""The output layout of gir's convolution weight gradients (gir.autodiff.adjoints)."""


ELEMENTWISE = (*od.ELEMENTWISE_UNARY, *od.ELEMENTWISE_BINARY, "compare", "select", "convert", "clamp")


def permute_layout(layout: str, perm: tuple[int, ...]) -> str:
    """A convolution layout string for an operand stored transposed by `perm`."""
    return "".join(layout[p] for p in perm)


class Relayout:
    """The values of a graph being rebuilt: each old value in its own order (`plain`) or stored
    transposed by `perm` (`moved`), each form made from the other on demand, once."""

    def __init__(self, perm: tuple[int, ...], max_pixels: int | None = None):
        self.perm = perm
        self.max_pixels = max_pixels
        self.inverse = tuple(perm.index(d) for d in range(len(perm)))
        self.plain: dict[Value, Value] = {}
        self.moved: dict[Value, Value] = {}
        self._moved_plain: dict[Value, Value] = {}   # new-graph plain value -> its moved form

    def is_moved(self, v: Value) -> bool:
        return v in self.moved

    def small(self, v: Value) -> bool:
        """Whether convolutions store the (NCHW) activation v in the new order: every one does,
        or those of at most `max_pixels` pixels per image."""
        return self.max_pixels is None or math.prod(int(d) for d in v.type.shape[2:]) <= self.max_pixels

    def moved_shape(self, shape) -> tuple:
        return tuple(shape[p] for p in self.perm)

    def as_plain(self, e: Emitter, v: Value) -> Value:
        if v not in self.plain:
            self.plain[v] = e.transpose(self.moved[v], self.inverse)
        return self.plain[v]

    def cheap_to_move(self, v: Value) -> bool:
        """A 4-D value made only from splat constants and broadcasts by elementwise ops:
        re-emitted in the new order instead of transposed."""
        return v.type.rank == 4 and v in self.plain and self._cheap(self.plain[v])

    def _cheap(self, p: Value) -> bool:
        node = p.producer
        if node is None:
            return False
        if node.op in ("constant", "broadcast_in_dim"):
            return True
        return node.op in ELEMENTWISE and all(v.type.rank == 0 or self._cheap(v) for v in node.inputs)

    def as_moved(self, e: Emitter, v: Value) -> Value:
        if v not in self.moved:
            self.moved[v] = self._move(e, self.plain[v])
        return self.moved[v]

    def _move(self, e: Emitter, p: Value) -> Value:
        """The new-graph value p in the new order: a splat constant, a broadcast, or an elementwise
        op of those re-emitted in it, anything else transposed; a reshape's output (a flattened layer's gradient)
        behind a barrier first, which keeps IREE from folding the transpose into the matmul that made it (mnist_cnn's
        dense input gradient: 24 ms at 17 GFLOP/s, against 3.6 ms for the transpose alone)."""
        if p not in self._moved_plain:
            node = p.producer
            if node is not None and node.op == "constant":
                t = node.attrs.type
                y = e.const(node.attrs.value, t, shape=self.moved_shape(t.shape))
            elif node is not None and node.op == "broadcast_in_dim":
                x = node.inputs[0]
                y = self.broadcast(e, x, node.attrs, tuple(range(x.type.rank)))
            elif self._cheap(p):
                y = e.op(node.op, *(v if v.type.rank == 0 else self._move(e, v) for v in node.inputs),
                         attrs=node.attrs)
            elif node is not None and node.op == "reshape":
                y = e.transpose(e.op("optimization_barrier", p), self.perm)
            else:
                y = e.transpose(p, self.perm)
            self._moved_plain[p] = y
        return self._moved_plain[p]

    def broadcast(self, e: Emitter, x: Value, a: od.BroadcastAttrs, x_order: tuple[int, ...]) -> Value:
        """broadcast_in_dim(x, a) in the new order, where x's dim k is its plain dim x_order[k]; x
        is transposed first when its dims would land out of order."""
        dims = [self.inverse[a.dims[x_order[k]]] for k in range(x.type.rank)]
        order = sorted(range(len(dims)), key=dims.__getitem__)
        return e.bcast(e.transpose(x, order), self.moved_shape(a.shape), sorted(dims))


Rule = Callable[[Relayout, Emitter, Node], "tuple[Value, bool] | None"]
"""Emit `node` for the new order: (its output, whether that output is in the new order), or None."""
RULES: dict[str, Rule] = {}


layout_rule = rule_registrar(RULES)
"""`@layout_rule("op", ...)` files a layout rule."""


@layout_rule(*ELEMENTWISE)
def _elementwise(r: Relayout, e: Emitter, node: Node):
    if any(v.type.rank not in (0, 4) for v in node.inputs):
        return None
    ins = [r.as_moved(e, v) if v.type.rank == 4 else r.plain[v] for v in node.inputs]
    return e.op(node.op, *ins, attrs=node.attrs), True


@layout_rule("broadcast_in_dim")
def _broadcast(r: Relayout, e: Emitter, node: Node):
    x, a = node.inputs[0], node.attrs
    if len(a.shape) != 4:
        return None
    return r.broadcast(e, r.moved[x], a, r.perm), True


@layout_rule("reduce")
def _reduce(r: Relayout, e: Emitter, node: Node):
    """Reduce the same dims; the kept dims come out in the new order, transposed back if that
    differs from theirs (a small result: per-channel statistics, pooled features)."""
    a: od.ReduceAttrs = node.attrs
    y = e.reduce(r.moved[node.inputs[0]], a.kind, sorted(r.inverse[d] for d in a.dims))
    kept = [p for p in r.perm if p not in a.dims]
    if len(kept) == 4:
        return y, True
    return e.transpose(y, sorted(range(len(kept)), key=kept.__getitem__)), False


@layout_rule("convolution")
def _convolution(r: Relayout, e: Emitter, node: Node):
    """A convolution written NCHW (forward or input gradient) reads its input and writes its
    output in the new order; a weight gradient (gir's adjoint writes it CNHW: weight-shaped)
    reads both activations in the new order and keeps its output. Each operand's layout string
    is permuted to match. Under a pixel limit an output larger than it goes back to NCHW, and a
    weight gradient with a larger activation runs NCHW."""
    a: od.ConvolutionAttrs = node.attrs
    x, w = node.inputs
    if x.type.rank != 4 or a.out_layout not in (WRITTEN, WEIGHT_GRAD):
        return None
    if a.out_layout == WRITTEN:
        to_new = r.small(node.outputs[0])
        if not to_new and not r.is_moved(x):
            return None
        # a large plain input read by a small output's convolution is moved for it alone: were it
        # filed as moved, its other consumers (at its size) would follow it. A large input can be
        # moved already: elementwise ops, pads and broadcasts of moved values stay moved whatever
        # their size (a max-pool gradient scattered back to the larger image)
        xm = r.as_moved(e, x) if r.small(x) or r.is_moved(x) else r._move(e, r.plain[x])
        wm = r.is_moved(w) or r.cheap_to_move(w)
        moved = [True, wm]
        ins = [xm, r.as_moved(e, w) if wm else r.plain[w]]
    else:
        if not (r.is_moved(x) or r.is_moved(w)) or not (r.small(x) and r.small(w)):
            return None
        to_new, moved = False, [True, True]
        ins = [r.as_moved(e, x), r.as_moved(e, w)]
    lhs, rhs = (permute_layout(lay, r.perm) if m else lay for lay, m in zip((a.lhs_layout, a.rhs_layout), moved))
    out = permute_layout(a.out_layout, r.perm) if a.out_layout == WRITTEN else a.out_layout
    y = e.op("convolution", *ins, attrs=attrs.evolve(a, lhs_layout=lhs, rhs_layout=rhs, out_layout=out))
    if a.out_layout == WRITTEN and not to_new:
        return e.transpose(y, r.inverse), False   # a large output: NCHW, as its consumers
    return y, to_new


def _per_dim(r: Relayout, values: tuple) -> tuple:
    return tuple(values[p] for p in r.perm)


@layout_rule("pad")
def _pad(r: Relayout, e: Emitter, node: Node):
    a: od.PadAttrs = node.attrs
    x, v = node.inputs
    return e.op("pad", r.moved[x], r.plain[v], attrs=od.PadAttrs(
        _per_dim(r, a.low), _per_dim(r, a.high), _per_dim(r, a.interior))), True


@layout_rule("slice")
def _slice(r: Relayout, e: Emitter, node: Node):
    a: od.SliceAttrs = node.attrs
    return e.op("slice", r.moved[node.inputs[0]], attrs=od.SliceAttrs(
        _per_dim(r, a.start), _per_dim(r, a.limit), _per_dim(r, a.strides))), True


@layout_rule("reverse")
def _reverse(r: Relayout, e: Emitter, node: Node):
    dims = sorted(r.inverse[d] for d in node.attrs.dims)
    return e.op("reverse", r.moved[node.inputs[0]], attrs=od.ReverseAttrs(tuple(dims))), True


@layout_rule("reduce_window")
def _reduce_window(r: Relayout, e: Emitter, node: Node):
    a: od.ReduceWindowAttrs = node.attrs
    return e.op("reduce_window", r.moved[node.inputs[0]], attrs=od.ReduceWindowAttrs(
        a.kind, _per_dim(r, a.window), _per_dim(r, a.strides), _per_dim(r, a.padding))), True


@layout_rule("transpose")
def _transpose(r: Relayout, e: Emitter, node: Node):
    """transpose(x, p) of a moved x is one transpose of the moved value."""
    return e.transpose(r.moved[node.inputs[0]], tuple(r.inverse[p] for p in node.attrs.perm)), False


def relayout(graph: Graph, perm: tuple[int, ...], max_pixels: int | None = None) -> Graph:
    """A copy of `graph` whose 4-D activations are stored transposed by `perm`: all of them, or
    those that convolutions write at most `max_pixels` pixels per image (and what is computed
    from them), the larger ones staying NCHW."""
    out = Graph(graph.name)
    out.inputs = list(graph.inputs)
    r = Relayout(perm, max_pixels)
    r.plain.update({v: v for v in graph.inputs})
    for node in graph.nodes:
        e = Emitter(out, node.loc, node.adjoint_of)
        rule = RULES.get(node.op)
        res = None
        if rule is not None and len(node.outputs) == 1 \
                and (node.op == "convolution" or any(r.is_moved(v) for v in node.inputs)):
            res = rule(r, e, node)
        if res is None:
            new = out.add_node(node.op, [r.as_plain(e, v) for v in node.inputs], node.attrs,
                               [v.type for v in node.outputs], node.loc, node.adjoint_of)
            r.plain.update(zip(node.outputs, new.outputs))
        else:
            y, moved = res
            (r.moved if moved else r.plain)[node.outputs[0]] = y
    for name, v in graph.outputs.items():
        out.set_output(name, r.as_plain(Emitter(out), v))
    return dead_code_elimination(out)   # what was re-emitted in the new order leaves its plain form unused


def _layout_pass(name: str, order: str, why: str, max_pixels: int | None = None) -> Pass:
    perm = tuple(WRITTEN.index(ch) for ch in order)
    which = "4-D activations" if max_pixels is None else f"4-D activations of at most {max_pixels} pixels"
    return register_pass(Pass(name, f"store {which} {order} instead of NCHW: {why}", "primitive",
                              transform=lambda g, ctx: relayout(g, perm, max_pixels)))


LAYOUT_NHWC = _layout_pass("layout_nhwc", "NHWC", "1x1 convolutions become one matmul, depthwise taps "
                                                  "vectorize along channels")
LAYOUT_CNHW = _layout_pass("layout_cnhw", "CNHW", "1x1 convolutions become one matmul, batch-norm "
                                                  "statistics row sums")
SMALL_PIXELS = 28 * 28
"""Where channels-first wins on IREE's CPU code: MobileNetV2 at 224x224 runs 1.0x with every
activation CNHW (its 1x1 matmuls gain, the fused batch-norm dispatches over 112x112 rows lose)
and faster with only the 28x28-and-smaller layers moved (docs/performance.md, Levers run 6)."""
LAYOUT_CNHW_SMALL = _layout_pass("layout_cnhw_small", "CNHW", "the same, where the image is small (28x28 "
                                                              "or less); larger layers stay NCHW",
                                 SMALL_PIXELS)
