"""Specialization: binding N, H, W to ints gives a static graph; bad bindings are BindingErrors."""
import attrs
import pytest
import sympy

from gir.ir import DType, Graph, Init, TensorType
from gir.ir import opdefs as od
from gir.ir.verify import verify
from gir.nn import Builder
from gir.shapes import BindingError, Constraints, H, N, W, bind_dim, ceildiv, floordiv, infer_node, specialize
from gir.shapes.specialize import check_binding

C = Constraints().at_least(H, 8).at_least(W, 8)
BIND = {N: 8, H: 64, W: 64}


def _build(constraints=C):
    b = Builder("spec", constraints)
    x = b.input("x", (N, 3, H, W))
    labels = b.input("labels", (N,), DType.i32)
    with b.scope("stem"):
        w = b.param("weight", (16, 3, 3, 3), Init("he_normal", fan_in=27))
        y = b.conv2d(x, w, stride=2)
        g, be = b.param("gamma", (16,), Init("ones")), b.param("beta", (16,), Init("zeros"))
        rm = b.param("running_mean", (16,), Init("zeros"), role="state")
        rv = b.param("running_var", (16,), Init("ones"), role="state")
        y = b.batch_norm(y, g, be, rm, rv)
        y = b.unary("relu", y)
    with b.scope("pool"):
        y = b.max_pool(y, 2, 2)
    flat = b.flatten(y)  # a reshape whose attrs hold N and floor(ceil(H/2)/2)*...
    bias = b.broadcast_in_dim(b.constant(0.5, (16,)), (N, 16), (1,))
    with b.scope("head"):
        pooled = b.add(b.global_avg_pool(y), bias)
        logits = b.dense(pooled, b.param("weight", (16, 10), Init("uniform")))
    loss = b.softmax_cross_entropy(logits, labels)
    b.graph.set_output("loss", loss)
    b.graph.set_output("flat", flat)
    b.graph.set_output("logits", logits)
    return b.graph


def _all_values(g: Graph):
    return list(g.inputs) + [v for n in g.nodes for v in n.outputs]


def _symbols_in(v):
    if isinstance(v, sympy.Basic):
        return v.free_symbols
    if isinstance(v, TensorType):
        return v.free_symbols
    if isinstance(v, tuple):
        return set().union(*(_symbols_in(x) for x in v)) if v else set()
    if attrs.has(type(v)):
        return set().union(*(_symbols_in(getattr(v, f.name)) for f in attrs.fields(type(v))))
    return set()


def test_builder_graph_is_symbolic_before():
    g = _build()
    assert not all(v.type.is_static for v in _all_values(g))
    reshape = next(g.ops("reshape"))
    assert _symbols_in(reshape.attrs) == {N, H, W}


def test_specialized_types_are_static_and_match_expected_ints():
    s = specialize(_build(), BIND, C)
    assert all(v.type.is_static for v in _all_values(s))
    assert all(type(d) is int for v in _all_values(s) for d in v.type.shape)
    assert s.input("x").type == TensorType((8, 3, 64, 64))
    assert s.input("labels").type == TensorType((8,), DType.i32)
    by_op = {n.op: n for n in s.nodes}
    assert by_op["conv2d"].out.type.shape == (8, 16, 32, 32)
    assert [v.type.shape for v in by_op["batch_norm"].outputs] == [(8, 16, 32, 32), (16,), (16,)]
    assert by_op["max_pool"].out.type.shape == (8, 16, 16, 16)
    assert by_op["reshape"].out.type.shape == (8, 4096)
    assert by_op["global_avg_pool"].out.type.shape == (8, 16)
    assert by_op["dense"].out.type.shape == (8, 10)
    assert s.outputs["loss"].type == TensorType(())
    assert s.outputs["flat"].type.shape == (8, 4096)


def test_symbolic_attrs_become_ints():
    s = specialize(_build(), BIND, C)
    reshape = next(s.ops("reshape"))
    assert reshape.attrs == od.ReshapeAttrs((8, 4096))
    assert all(type(d) is int for d in reshape.attrs.shape)
    bcast = next(s.ops("broadcast_in_dim"))
    assert bcast.attrs.shape == (8, 16) and type(bcast.attrs.shape[0]) is int
    for n in s.nodes:
        assert not _symbols_in(n.attrs), (n.op, n.attrs)


def test_constant_and_iota_types_in_attrs_are_bound():
    g = Graph("c")
    k = g.add_node("constant", [], od.ConstantAttrs(1.0, TensorType((N, ceildiv(H, 2)))),
                   [TensorType((N, ceildiv(H, 2)))])
    i = g.add_node("iota", [], od.IotaAttrs(0, TensorType((H,), DType.i32)), [TensorType((H,), DType.i32)])
    g.set_output("k", k.out)
    g.set_output("i", i.out)
    s = specialize(g, {N: 2, H: 7})
    assert s.nodes[0].attrs.type == TensorType((2, 4)) and s.nodes[0].out.type == TensorType((2, 4))
    assert s.nodes[1].attrs.type == TensorType((7,), DType.i32)


def test_specialized_graph_verifies_against_the_shape_rules():
    s = specialize(_build(), BIND, C)
    verify(s, "specialize", type_rule=infer_node)


def test_specialize_keeps_structure_names_roles_locs_and_leaves_the_original_alone():
    g = _build()
    before = [v.type for v in _all_values(g)]
    s = specialize(g, BIND, C)
    assert s is not g and s.name == g.name
    assert [(v.name, v.role, v.init) for v in s.inputs] == [(v.name, v.role, v.init) for v in g.inputs]
    assert [n.op for n in s.nodes] == [n.op for n in g.nodes]
    assert [n.loc for n in s.nodes] == [n.loc for n in g.nodes]
    assert list(s.outputs) == list(g.outputs)
    assert [v.type for v in _all_values(g)] == before
    # wiring is preserved: each new node reads the new copies of the old node's inputs
    old_pos = {v: k for k, v in enumerate(_all_values(g))}
    new_pos = {v: k for k, v in enumerate(_all_values(s))}
    for on, nn in zip(g.nodes, s.nodes):
        assert [old_pos[v] for v in on.inputs] == [new_pos[v] for v in nn.inputs]
    assert all(v in new_pos for v in s.outputs.values())


def test_specialize_maps_adjoint_links():
    g = Graph("adj")
    x = g.add_input("x", TensorType((N, 4)), "data")
    e = g.add_node("exp", [x], None, [x.type])
    d = g.add_node("multiply", [e.out, x], None, [x.type], adjoint_of=e)
    g.set_output("d", d.out)
    s = specialize(g, {N: 3})
    assert s.nodes[1].adjoint_of is s.nodes[0]


@pytest.mark.parametrize("h, words", [(4, "H=4 is outside its declared range [8, 512]"),
                                      (600, "H=600 is outside its declared range [8, 512]")])
def test_binding_outside_declared_range(h, words):
    c = C.at_most(H, 512)
    with pytest.raises(BindingError) as info:
        specialize(_build(c), {N: 8, H: h, W: 64}, c)
    assert words in str(info.value)


def test_binding_below_an_open_range():
    with pytest.raises(BindingError, match=r"H=7 is outside its declared range \[8,"):
        specialize(_build(), {N: 8, H: 7, W: 64}, C)


def test_binding_not_divisible():
    c = C.divisible_by(H, 32)
    g = _build(c)
    with pytest.raises(BindingError, match="H=48 must be divisible by 32"):
        specialize(g, {N: 8, H: 48, W: 64}, c)
    assert specialize(g, {N: 8, H: 96, W: 64}, c).input("x").type.shape == (8, 3, 96, 64)


@pytest.mark.parametrize("bad", [64.0, True, "64", sympy.Integer(64) / 2 + sympy.Rational(1, 2)])
def test_binding_must_be_an_int(bad):
    with pytest.raises(BindingError, match="must be bound to an int"):
        check_binding({H: bad}, Constraints())


def test_unbound_symbol_is_an_error():
    with pytest.raises(BindingError) as info:
        specialize(_build(), {N: 8, H: 64}, C)
    msg = str(info.value)
    assert "W left unbound" in msg and "H" not in msg.split("left unbound")[0]


def test_unbound_symbol_named_with_the_value():
    g = Graph("u")
    g.add_input("img", TensorType((N, 3, H, W)), "data")
    with pytest.raises(BindingError, match=r"H, W left unbound: img has shape \[2, 3, H, W\]"):
        specialize(g, {N: 2})


def test_unbound_symbol_only_in_attrs_is_an_error():
    # The output type is static, but the slice bounds still name H: lowering would get a symbol.
    g = Graph("a")
    x = g.add_input("x", TensorType((16,)), "data")
    n = g.add_node("slice", [x], od.SliceAttrs((H - 4,), (H,), (1,)), [TensorType((4,))])
    g.set_output("y", n.out)
    with pytest.raises(BindingError, match="H"):
        specialize(g, {})


def test_bind_dim():
    assert bind_dim(5, {H: 3}) == 5
    assert bind_dim(ceildiv(H, 4), {H: 10}) == 3 and type(bind_dim(ceildiv(H, 4), {H: 10})) is int
    assert bind_dim(floordiv(H - 3, 2) + 1, {H: 3}) == 1
    assert bind_dim(N * H, {H: 2}) == 2 * N  # partially bound stays symbolic
