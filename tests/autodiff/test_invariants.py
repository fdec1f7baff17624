"""Invariants on built backward passes: they hold for every net, and a deliberately wrong adjoint
makes the right one fail, naming the op and the layer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gir.autodiff import ADJOINTS, grad
from gir.autodiff import invariants as inv
from gir.autodiff.numeric import check_adjoint
from gir.ir import opdefs as od
from gir.ir.types import TensorType
from gir.netfile import load_net_file
from gir.shapes.specialize import specialize
from gir.lower.decompose import decompose

NETS = sorted((Path(__file__).resolve().parents[2] / "nets").glob("*.py"))


def backward(path, **kw):
    net, _ = load_net_file(path)
    g = net.build(mode="train", loss=True, label_smoothing=0.1)
    return net, g, grad(g, constraints=net.constraints)


@pytest.mark.parametrize("path", NETS, ids=[p.stem for p in NETS])
def test_every_net_satisfies_the_structural_invariants(path):
    net, g, back = backward(path)
    for f in inv.structural(back):
        assert f.ok, f.violations
    prim = decompose(specialize(g, net.binding(batch=2), net.constraints))
    count = inv.op_count(prim)
    assert count.ok, count.summary


def test_backward_nodes_record_their_forward_node():
    net, g, back = backward(NETS[0].parent / "mobilenet_v2.py")
    params = {v.name for v in g.params}
    added = g.nodes[len(back.forward_nodes):]
    # every backward node names its forward node, except the loss seed and the zero gradients of inputs
    assert all(n.adjoint_of is not None or n.loc.path == "loss" or n.loc.path in params for n in added)
    assert all(n.adjoint_of in back.forward_nodes for n in added if n.adjoint_of is not None)
    owners = {n.adjoint_of for n in g.nodes if n.adjoint_of is not None}
    assert {n.op for n in owners} >= {"conv2d", "depthwise_conv2d", "batch_norm", "relu6", "dense"}


@pytest.fixture
def patched(monkeypatch):
    def patch(op, fn):
        monkeypatch.setitem(ADJOINTS, op, fn)
    return patch


def test_a_depthwise_adjoint_with_a_channel_transpose_is_caught(patched):
    right = ADJOINTS["depthwise_conv2d"]

    def transposing(e, node, cts):
        x, w = node.inputs
        swapped = e.reshape(e.transpose(w, (1, 0, 2, 3)), w.type.shape)   # a needless [C,1] <-> [1,C] swap
        gx, gw = right(e, node, cts)
        return e.add(gx, e.mul(e.zeros(gx), e.bcast(e.reduce(swapped, "sum", (0, 1, 2, 3)), gx.type.shape, ()))), gw

    patched("depthwise_conv2d", transposing)
    _, _, back = backward(NETS[0].parent / "mobilenet_v2.py")
    f = inv.conv_transposes(back)
    assert not f.ok
    assert len(f.violations) == 17                   # every depthwise layer, each named
    assert any(v.startswith("input gradient of depthwise_conv2d at stage1.block1.dw.conv at ") for v in f.violations)
    assert all("mobilenet_v2.py:" in v and v.endswith("has 1 channel transpose(s); expected 0") for v in f.violations)


def test_an_adjoint_dropping_an_operand_is_caught(patched):
    patched("add", lambda e, node, cts: (cts[0], None))
    _, _, back = backward(NETS[0].parent / "mobilenet_v2.py")
    f = inv.completeness(back)
    assert not f.ok
    assert any(v.startswith("adjoint of add at stage3.block2 at nets/mobilenet_v2.py:") for v in f.violations)
    assert all(v.endswith("gave no cotangent for its active input 1") for v in f.violations)


def test_a_dropped_fan_out_contribution_is_caught():
    _, _, back = backward(NETS[0].parent / "mobilenet_v2.py")
    v = next(v for v, parts in back.parts.items() if len(parts) > 1 and v in back.cotangents)
    back.cotangents[v] = back.parts[v][0]            # as if the pass forgot the other uses
    f = inv.fan_in(back)
    assert not f.ok and "drops the contribution of the adjoint of" in f.violations[0]


def test_a_cotangent_of_the_wrong_type_is_caught(patched):
    patched("bias_add", lambda e, node, cts: (cts[0], e.reduce(cts[0], "sum", (0,))))   # forgot H, W
    _, _, back = backward(NETS[0].parent / "mnist_cnn.py")
    f = inv.cotangent_types(back)
    assert not f.ok
    assert any(v.startswith("adjoint of bias_add at conv1 at nets/mnist_cnn.py:") and "its primal is tensor<32xf32>" in v
               for v in f.violations)


def test_a_numerically_wrong_adjoint_is_caught(patched):
    patched("relu", lambda e, node, cts: (cts[0],))                     # forgot the mask
    r = check_adjoint("relu", None, [TensorType((3, 4))], rng=np.random.default_rng(0))
    assert any("jax.vjp" in m for m in r.failures()) and any("finite differences" in m for m in r.failures())


def test_a_non_linear_transpose_fails_the_dot_product_test(patched):
    right = ADJOINTS["transpose"]
    patched("transpose", lambda e, node, cts: (e.mul_scalar(right(e, node, cts)[0], 1.5),))
    r = check_adjoint("transpose", od.TransposeAttrs((1, 0)), [TensorType((3, 4))])
    assert r.linearity is not None and r.linearity > 0.1
