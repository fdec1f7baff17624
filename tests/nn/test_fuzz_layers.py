"""Fuzzing the layer vocabulary (issue 7, item 2): hypothesis writes random nets from the public layers of
`gir.nn` and builds them. Nothing may crash obscurely.

The nets: an input of rank 4 (N, C, H, W), 2 (N, F), 3 (N, T, D) or 1 (N,), each dim a symbol (N, H, W)
or an int, under random `Constraints` (lower and upper bounds, divisors; always satisfiable); then 1-6
layers drawn from conv2d, conv_bn (also depthwise), depthwise_conv, batch_norm, dense, layer_norm, the
activation layers, max_pool, avg_pool, global_avg_pool, flatten, residual_block, bottleneck_block,
residual_stage, inverted_residual, squeeze_excite, mb_conv, inverted_bottleneck, fused_mb_conv, uib,
convnext_stage, convnext_downsample, layer_norm2d, patch_embed, transformer_encoder,
class_token_pool and sequential (of 1-3 of these). Arguments follow the running channel count most of the
time and are random otherwise: mismatched, zero or negative channels, kernels up to 300 (and 0), strides
1-3 or a pair, 'same'/'valid'/explicit padding, 0 squeeze channels, t=0 expansions, stages of 0 blocks,
heads that do not divide the model dim. Now and then a layer comes from another rank's vocabulary (a conv
after flatten, a dense on an image). Rarely an argument is invalid (`Case.bad` lists them): a stride
<= 0, a padding that is not 'same'/'valid'/two non-negative pairs, an unknown activation, a depthwise
conv_bn changing channels, a pool window of 0, heads=0, a uib without depthwise convs given a stride, a
stage's drop_path list of the wrong length, a layer name used twice or with a dot,
patch_embed on a symbolic image size, label_smoothing 1.5. The net is built in train or eval mode,
sometimes with the loss.

The property: `Net(...).build()` either
  * succeeds, and then the graph verifies with the shape rules under the net's constraints, every
    output's symbols are the input's, and the graph specialized at two allowed bindings (the smallest
    values the constraints allow, and larger ones) verifies too with every dim a positive int; or
  * raises `ShapeError` naming its op and layer path (what `gir` reports as a shape error); or
  * raises ValueError/TypeError, but only when the net has a deliberately invalid argument, and with a
    message of its own (not Python's "too many values to unpack", "object is not iterable", ...):
    the errors `gir.cli.build_graph` reports as "while building net ..." against the net file.
Any other exception (KeyError, IndexError, ZeroDivisionError, sympy's, ...) fails the test.

Fixed since this test found them (the strategy draws them again): dense(0, k) divided by zero in
`dense_init` before the parameter's shape check; class_token_pool/patch_embed on the wrong rank failed
to unpack the shape instead of raising ShapeError.

KNOWN CRASHES (found by this test; `KNOWN_CRASHES` keeps each out of the strategy until it is fixed):
  * "rank0_input": a rank-0 net input: flatten() -> IndexError in `Builder.flatten`; layer_norm(...) ->
    IndexError in the layer_norm shape rule (x.shape[-1]); `build(loss=True)` -> IndexError in
    `Net.build` (the labels' shape is input_shape[0]).
  * "unclear_argument_errors": a stride that is a float or None (conv2d, conv_bn, depthwise_conv):
    TypeError "'float' object is not iterable" from `ConvAttrs`; explicit padding ((1,), (2,)): ValueError
    "not enough values to unpack"; a kernel size that is a tuple: TypeError "can't multiply sequence by
    non-int" from `conv_init`. Invalid arguments, but the messages do not say which argument.

CI runs 200 examples of the property (about 2 s); `--slow` runs 5000 (about 25 s). A last test checks
that the strategy reaches every outcome: successes, shape errors and argument errors.
"""
from __future__ import annotations

import re
from typing import Any

import attrs
from hypothesis import given, note, settings
from hypothesis import strategies as st

from gir.ir.verify import verify
from gir.nn import (Net, avg_pool, batch_norm, bottleneck_block, class_token_pool, conv2d, conv_bn,
                    convnext_downsample, convnext_stage, dense, depthwise_conv, flatten, fused_mb_conv, gelu,
                    global_avg_pool, hard_sigmoid, hard_swish, identity, inverted_bottleneck, inverted_residual,
                    layer_norm, layer_norm2d, max_pool, mb_conv, patch_embed, relu, relu6, residual_block,
                    residual_stage, sequential, sigmoid, squeeze_excite, swish, transformer_encoder, uib)
from gir.shapes import Constraints, H, N, ShapeError, W, infer_node, specialize

KNOWN_CRASHES = frozenset({"rank0_input", "unclear_argument_errors"})
"""The crashes listed in the module docstring that the strategy avoids; remove a name once it is fixed
and the strategy draws that construct again."""

ACTS = ("identity", "relu", "relu6", "swish", "silu", "hard_swish", "hard_sigmoid", "gelu", "sigmoid", "tanh")
ACT_LAYERS = (relu, relu6, swish, hard_swish, hard_sigmoid, gelu, sigmoid, identity)
GOOD_PADDINGS = ("same", "valid", ((1, 0), (2, 1)), ((0, 0), (0, 0)), ((1, 1), (1, 1)))
BAD_PADDINGS = ("full", "SAME", ((1, 1),), ((1, -1), (0, 0)))
UNCLEAR_PADDINGS = (((1,), (2,)),)
PYTHON_INTERNAL = re.compile(r"values to unpack|object is not iterable|can't multiply sequence|unsupported operand|"
                             r"object is not subscriptable|has no attribute|index out of range|not callable")
"""Messages of errors raised by Python itself rather than by gir's checks: never acceptable."""


@attrs.define
class Case:
    input_shape: tuple
    constraints: Constraints
    layers: list = attrs.Factory(list)
    mode: str = "train"
    loss: bool = False
    label_smoothing: float = 0.0
    bad: list[str] = attrs.Factory(list)   # the deliberately invalid arguments drawn, described

    def __repr__(self) -> str:
        return (f"Net('fuzz', {self.layers!r}, input_shape={self.input_shape}, "
                f"constraints=<{self.constraints.describe()}>).build(mode={self.mode!r}, loss={self.loss}, "
                f"label_smoothing={self.label_smoothing})"
                + (f"  # invalid arguments: {'; '.join(self.bad)}" if self.bad else ""))


# ---- the strategy ----------------------------------------------------------------------------------

@st.composite
def constraints(draw) -> Constraints:
    """Random satisfiable constraints on N, H, W: a divisor, a lower and an upper bound, each maybe."""
    c = Constraints()
    for s in (N, H, W):
        if draw(st.booleans()):
            c = c.divisible_by(s, draw(st.sampled_from((2, 3, 4, 8, 16, 32))))
        if draw(st.booleans()):
            c = c.at_least(s, draw(st.integers(1, 80)))
        if draw(st.integers(0, 3)) == 0:
            lo = c.smallest(s)
            c = c.at_most(s, draw(st.integers(lo, lo + 3 * c.divisor(s))))
    return c


class _Gen:
    """Draws the layers of one net, tracking (roughly: a wrong guess only makes more shape errors) the
    rank and the channel count (dim 1 of images, the last dim otherwise) that they produce."""

    def __init__(self, draw, case: Case):
        self.draw, self.case = draw, case
        shape = case.input_shape
        self.rank = len(shape)
        last = shape[1 if self.rank == 4 else -1] if shape else 1
        self.chan = last if isinstance(last, int) else 3
        self.names: set[str] = set()

    def choice(self, xs):
        return self.draw(st.sampled_from(list(xs)))

    def one_in(self, k: int) -> bool:
        """True with probability about 1/k. Tested against 1, not 0: hypothesis draws the bounds of a
        range more often than the rest, and shrinks towards 0 (so a minimal example has no rare event)."""
        return self.draw(st.integers(0, k - 1)) == 1

    def bad(self, what: str) -> None:
        self.case.bad.append(what)

    # arguments ----------------------------------------------------------------------------------
    def channels(self) -> int:
        """The running channel count (usually), another small count, or (rarely) zero or negative."""
        if not self.one_in(5):
            return self.chan
        if self.one_in(4):
            return self.choice((0, -2))   # a zero-sized parameter: a ShapeError
        return self.draw(st.integers(1, 12))

    def fan_in(self) -> int:
        c = self.channels()
        return 1 if c == 0 and "dense_fan_in_0" in KNOWN_CRASHES else c

    def kernel(self):
        if self.one_in(8):
            return self.choice((9, 17, 64, 300, 0))   # too large for small or symbolic images; 0: ShapeError
        if "unclear_argument_errors" not in KNOWN_CRASHES and self.one_in(40):
            self.bad("kernel size a tuple")
            return (3, 3)
        return self.choice((1, 2, 3, 3, 5, 7))

    def stride(self):
        if self.one_in(30):
            self.bad("stride <= 0")
            return self.choice((0, -1))
        if "unclear_argument_errors" not in KNOWN_CRASHES and self.one_in(40):
            self.bad("stride a float or None")
            return self.choice((1.5, None))
        return self.choice((1, 1, 2, 2, 3, (2, 1), (1, 2)))

    def pool_stride(self):
        """None (the window), a positive stride, or (rarely) a negative one. Not 0: max_pool(k, stride=0)
        means stride=k (`stride or k`), documented as the default."""
        if self.one_in(20):
            self.bad("stride < 0")
            return -1
        return None if self.one_in(2) else self.choice((1, 2, 3, (2, 1)))

    def padding(self, default: str = "same"):
        if self.one_in(30):
            self.bad("invalid padding")
            unclear = UNCLEAR_PADDINGS if "unclear_argument_errors" not in KNOWN_CRASHES else ()
            return self.choice(BAD_PADDINGS + unclear)
        return self.choice(GOOD_PADDINGS) if self.one_in(2) else default

    def act(self) -> str:
        if self.one_in(40):
            self.bad("unknown activation")
            return "leaky_relu"
        return self.choice(ACTS)

    def name(self) -> dict:
        """Usually no name; sometimes a fresh one; rarely a duplicate or one with a dot (ValueError)."""
        k = self.draw(st.integers(0, 60))
        if k == 1 and self.names:
            self.bad("duplicate layer name")
            return {"name": self.choice(sorted(self.names))}
        if k == 2:
            self.bad("layer name with a dot")
            return {"name": "a.b"}
        if 3 <= k < 15:
            n = f"l{len(self.names)}"
            self.names.add(n)
            return {"name": n}
        return {}

    def drop_path(self, n: int):
        """A stage's drop_path: one rate, or one per block; rarely a list of the wrong length."""
        if self.one_in(8):
            self.bad("drop_path list of the wrong length")
            return [0.1] * (n + 1)
        return self.choice((0.0, 0.2)) if self.draw(st.booleans()) else [0.1 * i for i in range(n)]

    # layers: each returns a Layer and updates the tracked rank and channels --------------------------
    def image_layer(self, real_rank: int):
        kinds = ["conv2d", "conv_bn", "conv_bn_dw", "depthwise_conv", "max_pool", "avg_pool", "residual_block",
                 "bottleneck_block", "residual_stage", "inverted_residual", "squeeze_excite", "mb_conv",
                 "inverted_bottleneck", "fused_mb_conv", "uib", "convnext_stage", "convnext_downsample",
                 "layer_norm2d", "batch_norm", "act", "global_avg_pool", "flatten", "patch_embed"]
        if real_rank != 4 and "token_layers_on_wrong_rank" in KNOWN_CRASHES:
            kinds.remove("patch_embed")
        if real_rank == 0 and "rank0_input" in KNOWN_CRASHES:
            kinds.remove("flatten")
        kind = self.choice(kinds)
        ic, oc = self.channels(), self.draw(st.integers(1, 16))
        if kind == "conv2d":
            lay = conv2d(ic, oc, k=self.kernel(), stride=self.stride(), padding=self.padding(),
                         bias=self.draw(st.booleans()), act=self.act(), **self.name())
        elif kind in ("conv_bn", "conv_bn_dw"):
            dw = kind == "conv_bn_dw"
            if dw and not self.one_in(6):
                oc = ic
            elif dw and oc != ic:
                self.bad("depthwise conv_bn changing channels")
            lay = conv_bn(ic, oc, k=self.kernel(), stride=self.stride(), padding=self.padding(), act=self.act(),
                          depthwise=dw, **self.name())
        elif kind == "depthwise_conv":
            oc = ic
            lay = depthwise_conv(ic, k=self.kernel(), stride=self.stride(), padding=self.padding(),
                                 bias=self.draw(st.booleans()), act=self.act(), **self.name())
        elif kind in ("max_pool", "avg_pool"):
            oc = self.chan
            k = self.kernel() if self.one_in(6) else self.choice((1, 2, 2, 3, 4))
            if k == 0:
                self.bad("pool window 0")
            fn = max_pool if kind == "max_pool" else avg_pool
            lay = fn(k, stride=self.pool_stride(), padding=self.padding("valid"), **self.name())
        elif kind in ("residual_block", "bottleneck_block"):
            if kind == "bottleneck_block" and not self.one_in(4):
                oc = 4 * self.draw(st.integers(1, 4))    # else mid = oc // 4 may be 0: a ShapeError
            fn = residual_block if kind == "residual_block" else bottleneck_block
            lay = fn(ic, oc, stride=self.stride() if self.one_in(6) else self.choice((1, 2)), **self.name())
        elif kind == "residual_stage":
            bottleneck = self.draw(st.booleans())
            if bottleneck:
                oc = 4 * self.draw(st.integers(1, 4))
            lay = residual_stage(ic, oc, stride=self.choice((1, 2)), n=self.draw(st.integers(0, 2)),
                                 bottleneck=bottleneck, **self.name())
        elif kind == "inverted_residual":
            oc = ic if self.one_in(3) else oc
            lay = inverted_residual(ic, oc, t=self.choice((1, 2, 6, 0)), stride=self.choice((1, 2)),
                                    n=self.draw(st.integers(0, 3)), **self.name())
        elif kind == "squeeze_excite":
            oc = self.chan
            if ic == 0 and "dense_fan_in_0" in KNOWN_CRASHES:
                ic = 1    # its first dense would be dense(0, squeeze)
            lay = squeeze_excite(ic, 0 if self.one_in(10) else self.draw(st.integers(1, 8)), **self.name())
        elif kind == "mb_conv":
            oc = ic if self.one_in(3) else oc
            lay = mb_conv(ic, oc, t=self.choice((1, 2, 6)), k=self.choice((3, 5)), stride=self.choice((1, 2)),
                          n=self.draw(st.integers(1, 2)), se_ratio=self.choice((0.0, 0.25, 0.5)), **self.name())
        elif kind == "inverted_bottleneck":
            oc = ic if self.one_in(3) else oc
            lay = inverted_bottleneck(ic, oc, hidden=self.draw(st.integers(1, 24)), k=self.choice((3, 5)),
                                      stride=self.choice((1, 2)), act=self.act(), se=self.choice((0.0, 0.25)),
                                      drop_path=self.choice((0.0, 0.1)), **self.name())
        elif kind in ("fused_mb_conv", "uib"):
            oc = ic if self.one_in(3) else oc
            n = self.draw(st.integers(0, 2))
            drop = self.drop_path(n)
            if kind == "fused_mb_conv":
                lay = fused_mb_conv(ic, oc, t=self.choice((1, 4)), k=self.choice((1, 3)), stride=self.choice((1, 2)),
                                    n=n, drop_path=drop, **self.name())
            else:
                start_k, mid_k, stride = self.choice((0, 3, 5)), self.choice((0, 3)), self.choice((1, 2))
                if stride != 1 and not start_k and not mid_k:
                    self.bad("uib without a depthwise conv (an FFN block) given a stride")
                lay = uib(ic, oc, t=self.choice((1, 2, 4)), start_k=start_k, mid_k=mid_k, stride=stride, n=n,
                          drop_path=drop, **self.name())
        elif kind == "convnext_stage":
            oc = ic
            n = self.draw(st.integers(0, 2))
            lay = convnext_stage(ic, n=n, drop_path=self.drop_path(n), layer_scale=self.choice((0.0, 1e-6)),
                                 **self.name())
        elif kind == "convnext_downsample":
            lay = convnext_downsample(ic, oc, **self.name())
        elif kind == "layer_norm2d":
            oc = self.chan
            lay = layer_norm2d(ic, **self.name())
        elif kind == "batch_norm":
            oc = self.chan
            lay = batch_norm(ic, eps=self.choice((1e-5, 1e-3)), momentum=self.choice((0.1, 0.01)), **self.name())
        elif kind == "act":
            oc = self.chan
            lay = self.choice(ACT_LAYERS)(**self.name())
        elif kind == "global_avg_pool":
            oc = self.chan
            lay = global_avg_pool(**self.name())
            self.rank = 2
        elif kind == "flatten":
            lay = flatten(**self.name())
            oc = self.draw(st.integers(1, 64))     # usually symbolic: any guess will do
            self.rank = 2
        else:  # patch_embed: needs a fixed image size (a ValueError for a symbolic one)
            if any(not isinstance(d, int) for d in self.case.input_shape[2:]):
                self.bad("patch_embed on a symbolic image size")
            oc = 4 * self.draw(st.integers(1, 4))
            lay = patch_embed(ic, oc, patch=self.choice((2, 4, 8, 16)), class_token=self.draw(st.booleans()),
                              **self.name())
            self.rank = 3
        self.chan = oc
        return lay

    def vector_layer(self, real_rank: int):
        kinds = ["dense", "dense", "batch_norm", "layer_norm", "act", "flatten"]
        if real_rank == 0 and "rank0_input" in KNOWN_CRASHES:
            kinds = ["dense", "batch_norm", "act"]
        kind = self.choice(kinds)
        if kind == "dense":
            oc = self.draw(st.integers(1, 16))
            lay = dense(self.fan_in(), oc, act=self.act(), bias=self.draw(st.booleans()), **self.name())
            self.chan = oc
        elif kind == "batch_norm":
            lay = batch_norm(self.channels(), **self.name())
        elif kind == "layer_norm":
            lay = layer_norm(self.channels(), eps=self.choice((1e-5, 1e-6)), **self.name())
        elif kind == "act":
            lay = self.choice(ACT_LAYERS)(**self.name())
        else:
            lay = flatten(**self.name())
            self.rank = 2
        return lay

    def token_layer(self, real_rank: int):
        kinds = ["transformer_encoder", "layer_norm", "dense", "class_token_pool", "act"]
        if real_rank != 3 and "token_layers_on_wrong_rank" in KNOWN_CRASHES:
            kinds.remove("class_token_pool")
        if real_rank == 0 and "rank0_input" in KNOWN_CRASHES:
            kinds.remove("layer_norm")
            kinds.remove("transformer_encoder")   # starts with a layer_norm
        kind = self.choice(kinds)
        if kind == "transformer_encoder":
            heads = self.choice((3, 0)) if self.one_in(10) else self.choice((1, 2, 4))
            if heads == 0:
                self.bad("heads=0")
            lay = transformer_encoder(self.channels(), heads, self.draw(st.integers(1, 32)),
                                      depth=self.draw(st.integers(1, 2)), **self.name())
        elif kind == "layer_norm":
            lay = layer_norm(self.channels(), **self.name())
        elif kind == "dense":
            oc = self.draw(st.integers(1, 16))
            lay = dense(self.fan_in(), oc, act=self.act(), **self.name())
            self.chan = oc
        elif kind == "class_token_pool":
            lay = class_token_pool(**self.name())
            self.rank = 2
        else:
            lay = self.choice(ACT_LAYERS)(**self.name())
        return lay

    def layer(self, depth: int = 0):
        if depth == 0 and self.one_in(10):
            return sequential(*[self.layer(1) for _ in range(self.draw(st.integers(1, 3)))], **self.name())
        real = self.rank
        # now and then a layer from another rank's vocabulary: a conv after flatten, a dense on an image ...
        vocab = self.choice((2, 3, 4)) if self.one_in(7) else min(max(real, 2), 4)
        return {2: self.vector_layer, 3: self.token_layer, 4: self.image_layer}[vocab](real)


@st.composite
def cases(draw) -> Case:
    c = draw(constraints())
    kinds = ["image", "image", "image", "static_image", "vector", "tokens", "rank1", "rank0"]
    if "rank0_input" in KNOWN_CRASHES:
        kinds.remove("rank0")
    kind = draw(st.sampled_from(kinds))
    ch = draw(st.integers(1, 8))

    def n_or(*ints):
        return N if draw(st.booleans()) else draw(st.sampled_from(ints))

    def side_or(*ints):
        return draw(st.sampled_from(ints)) if draw(st.integers(0, 3)) == 1 else None

    if kind == "image":
        shape = (n_or(1, 2, 4), ch, side_or(8, 32) or H, side_or(8, 32) or W)
    elif kind == "static_image":
        side = draw(st.sampled_from((1, 4, 7, 16, 32)))
        shape = (draw(st.sampled_from((1, 2))), ch, side, draw(st.sampled_from((side, 5))))
    elif kind == "vector":
        shape = (n_or(1, 3), draw(st.integers(1, 16)))
    elif kind == "tokens":
        shape = (n_or(2,), draw(st.integers(1, 9)), draw(st.sampled_from((4, 8, 6))))
    elif kind == "rank1":
        shape = (n_or(3),)
    else:
        shape = ()
    case = Case(shape, c)
    gen = _Gen(draw, case)
    case.layers = [gen.layer() for _ in range(draw(st.integers(1, 6)))]
    case.mode = draw(st.sampled_from(("train", "eval")))
    case.loss = draw(st.integers(0, 3)) == 0
    if case.loss:
        case.label_smoothing = draw(st.sampled_from((0.0, 0.1)))
        if draw(st.integers(0, 20)) == 1:
            case.label_smoothing = 1.5
            case.bad.append("label_smoothing outside [0, 1)")
    return case


# ---- the property -----------------------------------------------------------------------------------

def _bindings(c: Constraints, symbols) -> list[dict]:
    """Two allowed bindings: the smallest values, and the largest of three consecutive allowed ones."""
    out = []
    for pick in (0, -1):
        out.append({s: c.samples(s, 3)[pick] for s in symbols})
    return out


def build_case(case: Case) -> tuple[str, Any]:
    """Builds the net; returns ("ok", graph), ("shape", ShapeError) or ("arg", ValueError/TypeError).
    Any other exception propagates (and fails the test)."""
    net = Net("fuzz", case.layers, input_shape=case.input_shape, constraints=case.constraints)
    try:
        return "ok", net.build(mode=case.mode, loss=case.loss, label_smoothing=case.label_smoothing)
    except ShapeError as e:
        return "shape", e
    except (ValueError, TypeError) as e:
        return "arg", e


def check_case(case: Case) -> str:
    note(repr(case))
    outcome, got = build_case(case)
    note(f"{outcome}: {got!s}")
    if outcome == "shape":
        assert got.op and got.loc.path and got.loc.file, f"a ShapeError without its op, layer or file: {got!s}"
        return outcome
    if outcome == "arg":
        assert case.bad, f"{type(got).__name__} for a net without invalid arguments: {got}"
        assert not PYTHON_INTERNAL.search(str(got)), f"{type(got).__name__} from Python, not from gir: {got}"
        return outcome

    g, c = got, case.constraints
    verify(g, "fuzz", type_rule=lambda node: infer_node(node, c))
    symbols = set().union(*(v.type.free_symbols for v in g.inputs))
    for name, v in g.outputs.items():
        assert v.type.free_symbols <= symbols, f"output {name} has symbols the inputs do not: {v.type}"
    for binding in _bindings(c, sorted(symbols, key=str)):
        s = specialize(g, binding, c)
        verify(s, f"specialize {binding}", type_rule=infer_node)
        for v in [*s.inputs, *(o for n in s.nodes for o in n.outputs)]:
            assert all(isinstance(d, int) and d >= 1 for d in v.type.shape), f"{v.type} at {binding}"
    return outcome


def test_random_layer_stacks_build_or_raise_a_shape_error(fuzz_settings):
    @fuzz_settings(200, 5000)
    @given(case=cases())
    def check(case):
        check_case(case)

    check()


def test_the_strategy_reaches_every_outcome(examples):
    """Guards the property above against a strategy that only ever fails (or never does)."""
    seen: dict[str, int] = {}

    @settings(max_examples=examples(100, 1000), deadline=None, derandomize=True, database=None)
    @given(case=cases())
    def collect(case):
        outcome, _ = build_case(case)
        seen[outcome] = seen.get(outcome, 0) + 1

    collect()
    total = sum(seen.values())
    assert seen.get("ok", 0) >= total // 6, seen
    assert seen.get("shape", 0) >= total // 6, seen
    assert seen.get("arg", 0) >= 1, seen
