"""The driver: a user's (pattern, replacement) rule runs to a fixed point, replacements keep
provenance, every firing is traced, loops hit the bound with a clear error, pipelines resolve."""
from __future__ import annotations

import pytest

from gir.ir.verify import VerifyError
from gir.nn import Builder
from gir.rewrite import (
    PASSES,
    Context,
    Op,
    Pass,
    RewriteError,
    Rule,
    Var,
    apply_rules,
    dead_code_elimination,
    passes_for,
    resolve,
    run_pass,
    run_pipeline,
)


def _square_chain():
    """y = ((x*x)*x) under scope 'blk', plus an output."""
    b = Builder("t")
    x = b.input("x", (2, 3))
    with b.scope("blk"):
        y = b.add(b.multiply(x, x), b.multiply(x, x))
    b.graph.set_output("y", y)
    return b.graph


# a user's rule: x + x -> 2 * x, written as data
DOUBLE = Rule("double", Op("add", (Var("x"), Var("x"))), lambda e, m: e.mul_scalar(m["x"], 2.0), "x + x -> 2x")


def test_a_user_rule_runs_and_keeps_provenance(preserves):
    g = run_pass(run_pass(_square_chain(), "cse"), "dce")   # x*x twice -> once, so add(s, s) matches
    add = next(g.ops("add"))
    ctx = Context(trace=[])
    out = apply_rules(g, [DOUBLE], ctx, name="mine")
    assert [n.op for n in out.nodes] == ["multiply", "constant", "multiply"]
    assert all(n.loc == add.loc and n.loc.path == "blk" and n.loc.file.endswith("test_driver.py") for n in out.nodes[1:])
    preserves(g, out)
    [f] = ctx.trace
    assert (f.pass_name, f.rule, f.op, f.loc) == ("mine", "double", "add", add.loc)
    assert str(f).startswith("mine/double: add #") and "at blk (" in str(f) and "test_driver.py:" in str(f)


def test_replacements_keep_adjoint_of():
    g = _square_chain()
    fwd = g.nodes[0]
    add = next(g.ops("add"))
    add.adjoint_of = fwd
    g = run_pass(g, "cse")
    out = apply_rules(g, [DOUBLE])
    assert [n.adjoint_of.op for n in out.nodes if n.op in ("constant", "multiply") and n.adjoint_of] == [
        "multiply", "multiply"]


def test_rules_run_to_a_fixed_point():
    b = Builder("t")
    x = b.input("x", (4,))
    y = x
    for _ in range(5):
        y = b.unary("negate", b.unary("negate", y))
    b.graph.set_output("y", b.unary("exp", y))
    out = run_pass(b.graph, "simplify")
    assert [n.op for n in out.nodes] == ["exp"] and out.nodes[0].inputs[0] is out.inputs[0]


def test_rules_that_undo_each_other_hit_the_bound():
    flip = Rule("flip", Op("add", (Var("a"), Var("b"))), lambda e, m: e.add(m["b"], m["a"]))
    b = Builder("t")
    x, y = b.input("x", (2,)), b.input("y", (2,))
    b.graph.set_output("s", b.add(x, y))
    with pytest.raises(RewriteError, match=r"pass 'loop' did not reach a fixed point in 4 sweeps; still firing: flip"):
        apply_rules(b.graph, [flip], Context(trace=[], max_sweeps=4), name="loop")


def test_a_rule_that_changes_a_type_is_rejected():
    bad = Rule("to_scalar", Op("add"), lambda e, m: e.scalar(0.0))
    b = Builder("t")
    x = b.input("x", (2,))
    b.graph.set_output("s", b.add(x, x))
    with pytest.raises(RewriteError, match=r"rule bad/to_scalar turned add at .*test_driver.py:\d+ of type \['tensor<2xf32>'\] into \['tensor<f32>'\]"):
        apply_rules(b.graph, [bad], name="bad")


def test_declining_replacement_leaves_the_graph():
    never = Rule("never", Op("add"), lambda e, m: None)
    g = _square_chain()
    assert [n.op for n in apply_rules(g, [never]).nodes] == [n.op for n in g.nodes]


def test_dce_keeps_what_outputs_need():
    b = Builder("t")
    x = b.input("x", (2,))
    b.unary("exp", x)                     # dead
    live = b.unary("tanh", x)
    b.graph.set_output("y", live)
    ctx = Context(trace=[])
    out = dead_code_elimination(b.graph, ctx)
    assert [n.op for n in out.nodes] == ["tanh"] and [f.rule for f in ctx.trace] == ["dead"]
    assert out.inputs == b.graph.inputs   # inputs are the interface: never dropped


def test_pipelines_resolve_and_unknown_names_are_clear():
    assert resolve("default") == ("cse", "bn_fold", "simplify", "fold", "fusion", "fold", "layout_cnhw_small",
                                  "conv_crop", "nhwc_conv", "depthwise_spatial", "conv_forms", "pointwise_matmul",
                                  "dense_matmul", "weight_grad_matmul", "large_rhs_matmul", "long_contraction_matmul",
                                  "cse", "simplify", "dce")
    iree_only = ("layout_cnhw_small", "pointwise_matmul", "nhwc_conv", "depthwise_spatial", "dense_matmul",
                 "weight_grad_matmul", "large_rhs_matmul", "long_contraction_matmul")
    assert resolve("default_jax") == tuple(p for p in resolve("default") if p not in iree_only)
    assert resolve("default_avx2") == resolve("default")[:-3] + ("nn_matmul",) + resolve("default")[-3:]
    assert resolve("cse, dce") == ("cse", "dce")
    assert resolve("none") == ()
    with pytest.raises(RewriteError, match=r"unknown pass 'cs'; passes: .*cse.*; "
                                          r"pipelines: default, default_avx2, default_jax, default_gpu, none"):
        resolve("cs,dce")
    assert passes_for("none", bf16_conv=True) == ("bf16_conv",)
    assert passes_for("cse", bf16=True) == ("cse", "bf16", "simplify", "cse", "dce")


def test_pipeline_levels_pick_passes():
    ran: list[str] = []

    def spy(name):
        return Pass(name, "spy", {"l": "layer", "p": "primitive", "a": "any"}[name[0]],
                    transform=lambda g, ctx: ran.append(name) or g)

    for n in ("l1", "p1", "a1"):
        PASSES[n] = spy(n)
    try:
        g = _square_chain()
        run_pipeline(g, "l1,p1,a1", level="layer")
        run_pipeline(g, "l1,p1,a1", level="primitive")
        assert ran == ["l1", "a1", "p1", "a1"]
    finally:
        for n in ("l1", "p1", "a1"):
            del PASSES[n]


def test_check_mode_names_the_pass_that_broke_the_graph():
    def drop_input(g, ctx):
        g.inputs = g.inputs[1:]
        return g

    b = Builder("t")
    x, y = b.input("x", (2,)), b.input("y", (2,))
    b.graph.set_output("s", b.add(x, y))
    with pytest.raises(VerifyError, match=r"after pass breaker: node add"):
        run_pass(b.graph, Pass("breaker", "bad", "any", transform=drop_input), Context(check=True))


def test_pass_needs_rules_or_a_transform():
    with pytest.raises(ValueError, match="needs rules or a transform"):
        Pass("empty", "nothing", "any")
    with pytest.raises(ValueError, match="level must be one of"):
        Pass("odd", "x", "middle", transform=lambda g, c: g)


@pytest.mark.parametrize("avx2", [False, True])
@pytest.mark.parametrize("backend,target,want", [("iree", "cpu", "default"), ("jax", "cpu", "default_jax"),
                                                 ("iree", "vulkan", "default_gpu"), ("iree", "cuda", "default_gpu"),
                                                 ("iree", "rocm", "default_gpu"), ("jax", "vulkan", "default_jax")])
def test_default_means_each_backends_and_targets_pipeline(monkeypatch, avx2, backend, target, want):
    """`default` is the CPU-tuned pipeline on IREE's CPU (`default_avx2` on an AVX2 host), `default_jax` on JAX,
    `default_gpu` on IREE's GPU targets; anything else is kept as asked."""
    from gir import host
    from gir.rewrite import pipeline_for_backend
    monkeypatch.setattr(host, "host_is_avx2", lambda: avx2)
    assert pipeline_for_backend("default", backend, target) == ("default_avx2" if avx2 and want == "default" else want)
    assert pipeline_for_backend("cse,pointwise_matmul", backend, target) == "cse,pointwise_matmul"
