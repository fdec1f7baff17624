"""Hand-built graphs: inputs and roles, node arity/attribute checks, users; the op registry."""
import pytest

from gir.ir import OPS, ROLES, DType, Graph, Init, Loc, OpDef, TensorType, get_op, missing_rules, register_op
from gir.ir import opdefs as od
from gir.shapes import SHAPE_RULES, H, N

F = TensorType((N, 4))


def _tiny():
    g = Graph("tiny")
    x = g.add_input("x", F, "data")
    w = g.add_input("w", TensorType((4, 2)), "param", Init("he_normal", fan_in=4))
    d = g.add_node("dense", [x, w], None, [TensorType((N, 2))], Loc("fc", "net.py", 7))
    r = g.add_node("relu", [d.out], None, [d.out.type], Loc("fc"))
    g.set_output("y", r.out)
    return g, x, w, d, r


def test_add_input_records_name_role_init_and_order():
    g, x, w, _, _ = _tiny()
    assert g.inputs == [x, w]
    assert (x.name, x.role, x.init) == ("x", "data", None)
    assert w.role == "param" and w.init == Init("he_normal", fan_in=4)
    assert x.is_input and x.producer is None
    assert g.params == [w] and g.inputs_by_role("data") == [x] and g.inputs_by_role("state") == []
    assert g.input("w") is w


def test_all_roles_are_accepted():
    g = Graph()
    for role in ROLES:
        assert g.add_input(f"v_{role}", F, role).role == role
    assert set(ROLES) == {"param", "state", "data", "hyper"}


def test_unknown_role_is_rejected():
    with pytest.raises(ValueError, match="role must be one of"):
        Graph().add_input("x", F, "weights")


def test_duplicate_input_names_are_rejected():
    g = Graph("g")
    g.add_input("x", F, "data")
    with pytest.raises(ValueError, match="already has an input named 'x'"):
        g.add_input("x", TensorType((3,)), "param")
    assert len(g.inputs) == 1


def test_missing_input_lookup_names_graph_and_input():
    with pytest.raises(KeyError, match="no input named 'nope'"):
        Graph("g").input("nope")


def test_node_outputs_point_back_at_their_node():
    g, x, w, d, r = _tiny()
    assert g.nodes == [d, r]
    assert d.inputs == (x, w)
    assert d.out.producer is d and d.out.index == 0 and not d.out.is_input
    assert d.out.type == TensorType((N, 2))
    assert r.loc == Loc("fc") and d.loc.where() == "net.py:7"
    assert g.outputs == {"y": r.out}


def test_multi_output_node_and_out_property():
    g = Graph()
    x = g.add_input("x", TensorType((N, 3, H, H)), "data")
    gam = g.add_input("gamma", TensorType((3,)), "param")
    bet = g.add_input("beta", TensorType((3,)), "param")
    bn = g.add_node("batch_norm", [x, gam, bet], od.BatchNormAttrs(),
                    [x.type, TensorType((3,)), TensorType((3,))])
    assert [v.index for v in bn.outputs] == [0, 1, 2]
    assert all(v.producer is bn for v in bn.outputs)
    with pytest.raises(ValueError, match="3 outputs"):
        bn.out


@pytest.mark.parametrize("op, n, want", [("relu", 2, "takes 1 inputs, got 2"),
                                         ("add", 1, "takes 2 inputs, got 1"),
                                         ("batch_norm", 2, "takes 3..5 inputs, got 2"),
                                         ("batch_norm", 6, "takes 3..5 inputs, got 6"),
                                         ("concatenate", 0, "takes 1.. inputs, got 0")])
def test_add_node_checks_arity(op, n, want):
    g = Graph()
    xs = [g.add_input(f"x{i}", F, "data") for i in range(n)]
    a = {"batch_norm": od.BatchNormAttrs(), "concatenate": od.ConcatAttrs(0)}.get(op)
    with pytest.raises(TypeError, match=want.replace(".", r"\.")):
        g.add_node(op, xs, a, [F])
    assert g.nodes == []


def test_add_node_accepts_variadic_concatenate():
    g = Graph()
    xs = [g.add_input(f"x{i}", F, "data") for i in range(5)]
    node = g.add_node("concatenate", xs, od.ConcatAttrs(1), [TensorType((N, 20))])
    assert len(node.inputs) == 5


def test_add_node_rejects_attrs_of_wrong_class():
    g = Graph()
    x = g.add_input("x", F, "data")
    with pytest.raises(TypeError, match="wants attributes of type AxisAttrs"):
        g.add_node("softmax", [x], od.ConcatAttrs(1), [F])


def test_add_node_rejects_attrs_on_attrless_op():
    g = Graph()
    x = g.add_input("x", F, "data")
    with pytest.raises(TypeError, match="'relu' takes no attributes"):
        g.add_node("relu", [x], od.AxisAttrs(1), [F])


def test_add_node_rejects_missing_attrs():
    g = Graph()
    x = g.add_input("x", F, "data")
    with pytest.raises(TypeError, match="AxisAttrs"):
        g.add_node("softmax", [x], None, [F])


def test_add_node_unknown_op():
    with pytest.raises(KeyError, match="unknown op 'frobnicate'"):
        Graph().add_node("frobnicate", [], None, [])


def test_users_in_node_order():
    g = Graph()
    x = g.add_input("x", F, "data")
    a = g.add_node("exp", [x], None, [F])
    b = g.add_node("add", [x, a.out], None, [F])
    c = g.add_node("multiply", [b.out, b.out], None, [F])
    users = g.users()
    assert users[x] == [a, b]
    assert users[a.out] == [b]
    assert users[b.out] == [c, c]  # one entry per use
    assert c.out not in users
    assert list(g.ops("add")) == [b] and list(g.ops()) == [a, b, c]


def test_graph_repr_counts():
    g, *_ = _tiny()
    assert repr(g) == "<Graph tiny: 2 inputs, 2 nodes, 1 outputs>"


# ---- the op registry ---------------------------------------------------------------------

def test_registry_holds_primitives_and_layers():
    for name in ("add", "convolution", "dot_general", "reduce_window", "conv2d", "batch_norm", "attention"):
        assert name in OPS
        assert isinstance(OPS[name], OpDef) and OPS[name].name == name
    assert OPS["convolution"].level == "primitive" and OPS["conv2d"].level == "layer"
    assert OPS["convolution"].attrs_cls is od.ConvolutionAttrs and OPS["add"].attrs_cls is None
    assert (OPS["batch_norm"].min_inputs, OPS["batch_norm"].max_inputs) == (3, 5)
    assert OPS["concatenate"].max_inputs is None
    assert all(op.level in ("primitive", "layer") for op in OPS.values())


def test_get_op_returns_the_registered_def():
    assert get_op("conv2d") is OPS["conv2d"]


def test_get_op_unknown_message_lists_registered_ops():
    with pytest.raises(KeyError) as info:
        get_op("conv3d")
    msg = str(info.value)
    assert "unknown op 'conv3d'" in msg
    assert "conv2d" in msg and "dot_general" in msg


def test_register_op_duplicate_is_rejected_and_leaves_registry_alone():
    before = OPS["add"]
    with pytest.raises(ValueError, match="'add' is already registered"):
        register_op("add", None, 2, "primitive", "again")
    assert OPS["add"] is before


def test_register_op_bad_level_is_rejected():
    with pytest.raises(ValueError, match="level"):
        register_op("__test_bad_level", None, 1, "macro", "x")
    assert "__test_bad_level" not in OPS


def test_register_op_and_missing_rules():
    name = "__test_only_op"
    try:
        op = register_op(name, None, (1, None), "primitive", "test op")
        assert (op.min_inputs, op.max_inputs) == (1, None)
        lines = missing_rules(SHAPE_RULES, "shape rule")
        assert lines == [f"op {name!r} has no shape rule"]
        assert missing_rules(set(SHAPE_RULES) | {name}, "shape rule") == []
    finally:
        OPS.pop(name, None)
    assert missing_rules(SHAPE_RULES, "shape rule") == []


def test_missing_rules_names_each_op_sorted():
    table = {k for k in OPS if k not in ("relu", "add")}
    assert missing_rules(table, "lowering") == ["op 'add' has no lowering", "op 'relu' has no lowering"]


def test_opdef_check_arity_exact_message():
    with pytest.raises(TypeError, match=r"op 'select' takes 3 inputs, got 2"):
        get_op("select").check_arity(2)
    get_op("select").check_arity(3)


def test_dtype_is_an_enum_with_stablehlo_names():
    assert [str(d) for d in (DType.f32, DType.bf16, DType.i32, DType.i1)] == ["f32", "bf16", "i32", "i1"]
