"""The structural verifier: good graphs pass; each broken invariant names the stage and the node."""
import pytest

import gir.shapes
from gir.ir import Graph, Loc, TensorType
from gir.ir import opdefs as od
from gir.ir.verify import VerifyError, verify
from gir.nn import Builder
from gir.nn import layers as L
from gir.shapes import H, N, W

RULE = lambda n: gir.shapes.infer_node(n)  # noqa: E731


def _good():
    g = Graph("g")
    x = g.add_input("x", TensorType((N, 4)), "data")
    w = g.add_input("w", TensorType((4, 3)), "param")
    d = g.add_node("dense", [x, w], None, [TensorType((N, 3))], Loc("fc", "net.py", 3))
    s = g.add_node("softmax", [d.out], od.AxisAttrs(-1), [TensorType((N, 3))], Loc("head", "net.py", 4))
    g.set_output("probs", s.out)
    return g, x, d, s


def test_good_hand_built_graph_passes():
    g, *_ = _good()
    verify(g)
    verify(g, "build", type_rule=RULE)


def test_builder_graph_passes_with_the_shape_rule():
    b = Builder("net")
    x = b.input("x", (N, 3, H, W))
    with b.scope("stem"):
        y = L.conv_bn(3, 8, k=3, stride=2)(b, x)
    y = b.global_avg_pool(y)
    b.graph.set_output("y", y)
    verify(b.graph, "build", type_rule=RULE)


def test_input_not_defined_in_the_graph():
    g, x, d, s = _good()
    other = Graph("other").add_input("z", TensorType((N, 3)), "data")
    bad = g.add_node("add", [s.out, other], None, [TensorType((N, 3))], Loc("mix", "net.py", 9))
    with pytest.raises(VerifyError) as info:
        verify(g, "autodiff")
    msg = str(info.value)
    assert "after autodiff" in msg
    assert f"node add #{bad.id}" in msg and "mix at net.py:9" in msg
    assert "input 1" in msg and "not in the graph" in msg


def test_input_used_before_its_definition():
    g, x, d, s = _good()
    g.nodes.reverse()  # softmax now reads dense's output before dense runs
    with pytest.raises(VerifyError, match=rf"after reorder: node softmax #{s.id} \(head at net.py:4\).*input 0"):
        verify(g, "reorder")


def test_attrs_of_the_wrong_class():
    g, x, d, s = _good()
    s.attrs = od.ConcatAttrs(1)
    with pytest.raises(VerifyError) as info:
        verify(g, "simplify")
    msg = str(info.value)
    assert "after simplify" in msg and f"node softmax #{s.id}" in msg
    assert "AxisAttrs" in msg


def test_wrong_arity():
    g, x, d, s = _good()
    s.inputs = (d.out, d.out)
    with pytest.raises(VerifyError, match=rf"after fuse: node softmax #{s.id}.*takes 1 inputs, got 2"):
        verify(g, "fuse")


def test_unknown_op():
    g, x, d, s = _good()
    s.op = "soft_max"
    with pytest.raises(VerifyError, match=r"after rename: node soft_max .*unknown op 'soft_max'"):
        verify(g, "rename")


def test_type_that_disagrees_with_the_shape_rule():
    g = Graph("g")
    x = g.add_input("x", TensorType((N, 4)), "data")
    w = g.add_input("w", TensorType((4, 3)), "param")
    d = g.add_node("dense", [x, w], None, [TensorType((N, 4))], Loc("fc", "net.py", 3))
    g.set_output("y", d.out)
    verify(g, "lower")  # structurally fine
    with pytest.raises(VerifyError) as info:
        verify(g, "lower", type_rule=RULE)
    msg = str(info.value)
    assert "after lower" in msg and f"node dense #{d.id}" in msg and "fc at net.py:3" in msg
    assert "tensor<Nx4xf32>" in msg and "tensor<Nx3xf32>" in msg


def test_wrong_dtype_disagrees_with_the_shape_rule():
    g = Graph("g")
    x = g.add_input("x", TensorType((N, 4)), "data")
    c = g.add_node("compare", [x, x], od.CompareAttrs("LT"), [TensorType((N, 4))])
    with pytest.raises(VerifyError, match="i1"):
        verify(g, "cse", type_rule=RULE)
    assert c.out.type.dtype.value == "f32"


def test_wrong_number_of_outputs_disagrees_with_the_shape_rule():
    g = Graph("g")
    x = g.add_input("x", TensorType((N, 4)), "data")
    gam = g.add_input("gamma", TensorType((4,)), "param")
    bet = g.add_input("beta", TensorType((4,)), "param")
    bn = g.add_node("batch_norm", [x, gam, bet], od.BatchNormAttrs(training=True), [x.type])
    with pytest.raises(VerifyError, match=f"node batch_norm #{bn.id}"):
        verify(g, "train", type_rule=RULE)


def test_inputs_the_shape_rule_rejects_still_give_a_verify_error():
    # Both operands are defined, but their shapes disagree: the verifier must report it as a
    # VerifyError naming the stage and node, not let the rule's ShapeError escape.
    g = Graph("g")
    a = g.add_input("a", TensorType((2, 3)), "data")
    b = g.add_input("b", TensorType((3, 2)), "data")
    n = g.add_node("add", [a, b], None, [TensorType((2, 3))], Loc("res", "net.py", 5))
    with pytest.raises(VerifyError) as info:
        verify(g, "rewrite", type_rule=RULE)
    msg = str(info.value)
    assert "after rewrite" in msg and f"node add #{n.id}" in msg


def test_output_not_in_the_graph():
    g, *_ = _good()
    stray = Graph("other").add_input("z", TensorType((1,)), "data")
    g.set_output("loss", stray)
    with pytest.raises(VerifyError) as info:
        verify(g, "prune")
    msg = str(info.value)
    assert "after prune" in msg and "output 'loss'" in msg and "not defined" in msg


def test_output_of_a_node_removed_from_the_graph():
    g, x, d, s = _good()
    g.nodes.remove(s)
    with pytest.raises(VerifyError, match="output 'probs' is not defined"):
        verify(g, "dce")


def test_duplicate_input_names():
    g, x, d, s = _good()
    g.inputs.append(g.inputs[0].__class__(TensorType((1,)), None, 0, "x", "data"))
    with pytest.raises(VerifyError, match="duplicate input name 'x'"):
        verify(g)


def test_output_that_does_not_point_back():
    g, x, d, s = _good()
    d.outputs[0].index = 1
    with pytest.raises(VerifyError, match=rf"node dense #{d.id}.*output 0 does not point back"):
        verify(g, "clone")


def test_without_a_stage_the_message_has_no_after():
    g, x, d, s = _good()
    s.attrs = None
    with pytest.raises(VerifyError) as info:
        verify(g)
    assert "after" not in str(info.value) and "graph 'g'" in str(info.value)
