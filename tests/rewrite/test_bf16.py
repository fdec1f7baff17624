"""The bf16 policy. Alone on tiny graphs: which ops get casts. On an inverted-residual net's train
step: every convolution (stem, 1x1 expand, depthwise, 1x1 project, and their gradients) runs on
bf16 operands in the emitted StableHLO while parameters, optimizer state, BN statistics, reductions
and the loss stay f32; loss, logits and gradients agree with f32 within the stated tolerance; and
a short IREE training run with bf16 convolutions lowers the loss like the f32 run does.

Tolerances (relative L2 error against f32): bf16 keeps 8 significant bits (rounding 2^-9 ~ 2e-3
per cast; a 27-term convolution of N(0, 1) data lands near 5e-3), so one op: 1e-2; the loss 2e-2;
logits 5e-2; all gradients together 0.1 (measured 0.071: batch norm's backward subtracts the mean
cotangent, which cancels most of it, and several BN scales have an f32 gradient that is zero up to
rounding because the next BN normalizes their channel away, so bf16 noise is all there is).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from gir.ir import DType
from gir.lower.decompose import decompose
from gir.lower.iree_compile import compile_text
from gir.lower.iree_runtime import IreeSession
from gir.lower.jax_backend import compile_jax, evaluate
from gir.nn import Builder, N, Net, conv_bn, dense, global_avg_pool, inverted_residual
from gir.nn.params import init_params
from gir.rewrite import Context, run_pass
from gir.train import TrainConfig
from gir.train.step import lower_train_step

K = 5
BATCH, IMAGE = 8, 16


def _net() -> Net:
    return Net("bf16_ir", [
        conv_bn(3, 8, k=3, stride=2, act="relu6", name="stem"),
        inverted_residual(8, 12, t=4, stride=2, n=2, name="s1"),
        global_avg_pool(name="gap"),
        dense(12, K, name="head"),
    ], input_shape=(N, 3, 16, 16), num_classes=K)


def _tiny():
    b = Builder("t")
    x, w = b.input("x", (2, 3, 6, 6)), b.input("w", (4, 3, 3, 3))
    m, v = b.input("m", (2, 6)), b.input("v", (6, 5))
    b.graph.set_output("conv", b.conv2d(x, w))
    b.graph.set_output("dot", b.dense(m, v))
    return decompose(b.graph)


@pytest.mark.parametrize("pass_name,ops", [("bf16", {"dot_general"}), ("bf16_conv", {"dot_general", "convolution"})])
def test_policy_alone(pass_name, ops, same_interface, inputs_for):
    g = _tiny()
    ctx = Context(trace=[], check=True)
    out = run_pass(g, pass_name, ctx)
    cast = {n.op for n in out.nodes if n.op in ("dot_general", "convolution") and n.inputs[0].type.dtype == DType.bf16}
    assert cast == ops and {f.op for f in ctx.trace} == ops
    assert all(v.type.dtype == DType.f32 for v in out.outputs.values())
    same_interface(g, out)
    feeds = inputs_for(g)
    want, got = evaluate(g, feeds), evaluate(out, feeds)
    for k in want:
        assert _rel_l2(got[k], want[k]) < 1e-2, k
    assert len(run_pass(out, pass_name).nodes) == len(out.nodes)   # already bf16: nothing more to do


def _feed(mod, seed=0, lr=1.0, step=1):
    g = mod.primitive
    rng = np.random.default_rng(seed + 1)
    vals = init_params(g, seed)
    vals["images"] = rng.standard_normal((BATCH, 3, IMAGE, IMAGE)).astype(np.float32)
    vals["labels"] = rng.integers(0, K, BATCH).astype(np.int32)
    vals["lr"], vals["step"] = np.float32(lr), np.int32(step)
    return vals


SGD = TrainConfig(optimizer="sgd", momentum=0.0, weight_decay=0.0)


@pytest.fixture(scope="module")
def modules():
    net = _net()
    return {name: lower_train_step(net, SGD.replace(**flags), batch=BATCH, image=IMAGE)
            for name, flags in (("f32", {}), ("bf16_conv", {"bf16_conv": True}))}


def test_every_convolution_runs_in_bf16_and_the_rest_stays_f32(modules):
    text = modules["bf16_conv"].text
    # after conv_forms, pointwise convolutions are dot_generals: the same count in both modules
    def is_conv(ln: str) -> bool:
        return '"stablehlo.convolution"' in ln or ('"stablehlo.dot_general"' in ln and ".conv" in ln)

    convs = [ln for ln in text.splitlines() if is_conv(ln)]
    assert len(convs) == len([ln for ln in modules["f32"].text.splitlines() if is_conv(ln)])
    for ln in convs:
        assert re.search(r": \(tensor<[0-9x]+xbf16>, tensor<[0-9x]+xbf16>\) -> tensor<[0-9x]+xbf16>", ln), ln
    paths = {m.group(1) for ln in convs for m in [re.search(r'loc\("([^"]+)"', ln)] if m}
    for part in ("stem.conv", "s1.block1.expand.conv", "s1.block1.project.conv"):
        assert part in paths, f"no bf16 convolution at {part}: {sorted(paths)}"
    # depthwise convs are per-tap multiply-adds after conv_forms (block1's 8x8 input) or matmuls with a spatial
    # matrix after depthwise_spatial (block2's 4x4 maps): in bf16 too (the spatial matrix's integer math aside)
    for part in ("s1.block1.dw.conv", "s1.block2.dw.conv"):
        ops = [ln for ln in text.splitlines() if ('"stablehlo.multiply"' in ln or '"stablehlo.dot_general"' in ln)
               and f'loc("{part}"' in ln and "xi32>" not in ln]
        assert ops and all(ln.count("xbf16>") == 3 for ln in ops), part
    to_bf16 = re.findall(r'"stablehlo.convert"\(\S+\) : \(tensor<[0-9x]*xf32>\) -> tensor<[0-9x]*xbf16>', text)
    to_f32 = re.findall(r'"stablehlo.convert"\(\S+\) : \(tensor<[0-9x]*xbf16>\) -> tensor<[0-9x]*xf32>', text)
    dense = [ln for ln in text.splitlines() if '"stablehlo.dot_general"' in ln and not is_conv(ln)]
    # every result back to f32, but for those fed straight to another bf16 matmul (depthwise_spatial's w @ P)
    outs = [re.match(r"\s*(%\d+) =", ln).group(1) for ln in convs]
    chained = [o for o in outs if any(re.search(rf"\({o}, |, {o}\)", ln) for ln in convs)]
    assert len(to_f32) >= len(convs) + len(dense) - len(chained)
    assert len(to_bf16) >= len(convs)
    header = text.split("{", 2)[1]
    assert "bf16" not in header.split("->")[0] and "bf16" not in header.split("->")[1].split(")")[0]  # f32 args/results
    for ln in text.splitlines():
        if '"stablehlo.reduce"' in ln:
            assert "bf16" not in ln, ln
    g = modules["bf16_conv"].primitive
    assert all(v.type.dtype != DType.bf16 for v in g.inputs) and all(
        v.type.dtype != DType.bf16 for v in g.outputs.values())


def _rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def test_outputs_and_gradients_match_f32_within_tolerance(modules):
    vals = _feed(modules["f32"])
    out = {k: compile_jax(m.primitive)(vals) for k, m in modules.items()}
    params = [v.name for v in modules["f32"].primitive.params]
    assert _rel_l2(out["bf16_conv"]["loss"], out["f32"]["loss"]) < 2e-2
    assert _rel_l2(out["bf16_conv"]["logits"], out["f32"]["logits"]) < 5e-2
    # SGD without momentum or decay at lr 1: new parameter = parameter - gradient
    g32 = np.concatenate([(vals[p] - out["f32"][p]).ravel() for p in params])
    g16 = np.concatenate([(vals[p] - out["bf16_conv"][p]).ravel() for p in params])
    assert np.linalg.norm(g32) > 0 and _rel_l2(g16, g32) < 0.1
    for p in params:
        assert out["bf16_conv"][p].dtype == np.float32


def _train(mod, steps: int) -> list[float]:
    vals = _feed(mod, lr=0.05)
    session = IreeSession(compile_text(mod.text))
    ins, outs = [v.name for v in mod.primitive.inputs], list(mod.primitive.outputs)
    carried = [v.name for v in mod.primitive.inputs if v.role in ("param", "state")]
    losses = []
    for t in range(1, steps + 1):
        vals["step"] = np.int32(t)
        res = dict(zip(outs, session.call_numpy("train_step", *[vals[k] for k in ins])))
        losses.append(float(res["loss"]))
        vals.update({k: res[k] for k in carried})
    return losses


def test_short_training_with_bf16_convs_lowers_the_loss(modules):
    f32, b16 = _train(modules["f32"], 15), _train(modules["bf16_conv"], 15)
    assert b16[-1] < 0.6 * b16[0], b16
    assert abs(b16[-1] - f32[-1]) < 0.25 * f32[0], (f32, b16)
