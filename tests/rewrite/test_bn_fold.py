"""BN folding alone: eval-mode BN after conv, depthwise conv and dense folds into scaled weights
plus a bias; train-mode BN, BN after something else, and a conv whose output has another use stay."""
from __future__ import annotations

from gir.nn import Builder, N, Net, batch_norm, conv_bn, dense, global_avg_pool
from gir.rewrite import Context, run_pass
from gir.shapes.specialize import specialize

K = 5


def _net() -> Net:
    return Net("fold", [
        conv_bn(3, 8, k=3, name="c1"),
        conv_bn(8, 8, k=3, stride=2, depthwise=True, act="relu6", name="dw"),
        conv_bn(8, 16, k=1, act="identity", name="pw"),
        global_avg_pool(name="gap"),
        dense(16, 12, bias=False, name="fc"),
        batch_norm(12, name="bn"),
        dense(12, K, name="head"),
    ], input_shape=(N, 3, 8, 8), num_classes=K)


def test_eval_bn_folds_into_conv_depthwise_and_dense(preserves):
    net = _net()
    g = specialize(net.build(mode="eval"), net.binding(batch=3), net.constraints)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "bn_fold", ctx)
    assert not list(out.ops("batch_norm"))
    assert [f.loc.path for f in ctx.trace] == ["c1.bn", "dw.bn", "pw.bn", "bn"]
    assert [n.loc.path for n in out.ops("conv2d")] == ["c1.conv", "pw.conv"]          # convs keep their own site
    assert [n.loc.path for n in out.ops("bias_add")] == ["c1.bn", "dw.bn", "pw.bn", "bn", "head"]
    assert {v.name for v in out.inputs} == {v.name for v in g.inputs}                  # same parameters and state
    preserves(g, out, rtol=1e-4, atol=1e-5)


def test_train_mode_bn_is_not_folded():
    net = _net()
    g = specialize(net.build(mode="train"), net.binding(batch=3), net.constraints)
    out = run_pass(g, "bn_fold")
    assert len(list(out.ops("batch_norm"))) == 4


def test_a_conv_output_with_another_use_is_not_folded(preserves):
    b = Builder("t", mode="eval")
    x = b.input("x", (2, 3, 6, 6))
    w = b.input("w", (4, 3, 3, 3), role="param")
    stats = [b.input(n, (4,), role="state") for n in ("gamma", "beta", "running_mean", "running_var")]
    y = b.conv2d(x, w)
    b.graph.set_output("bn", b.batch_norm(y, *stats))
    b.graph.set_output("raw", y)
    out = run_pass(b.graph, "bn_fold")
    assert len(list(out.ops("batch_norm"))) == 1
    preserves(b.graph, out)


def test_bn_after_a_non_linear_op_is_not_folded():
    b = Builder("t", mode="eval")
    x = b.input("x", (2, 4, 6, 6))
    stats = [b.input(n, (4,), role="state") for n in ("gamma", "beta", "running_mean", "running_var")]
    b.graph.set_output("o", b.batch_norm(b.unary("tanh", x), *stats))
    assert len(list(run_pass(b.graph, "bn_fold").ops("batch_norm"))) == 1
