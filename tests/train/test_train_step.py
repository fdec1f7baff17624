"""The train step: each optimizer's update against NumPy, and MobileNetV2's whole step on IREE and the
JAX backend against jax.grad of the forward graph."""
from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np
import pytest
from lockstep import train_in_lockstep

from gir.lower.iree_compile import compile_text
from gir.lower.iree_runtime import IreeSession
from gir.lower.jax_backend import as_jax_function, compile_jax
from gir.netfile import load_net_file
from gir.nn import N, Net, dense
from gir.nn.params import init_params
from gir.shapes.specialize import specialize
from gir.train import TrainConfig
from gir.train.step import LARGE_GRADIENT, build_train_step, lower_train_step

NETS = Path(__file__).resolve().parents[2] / "nets"
MLP = Net("mlp2", [dense(6, 5, act="relu"), dense(5, 3)], input_shape=(N, 6), num_classes=3)


def _feed(graph, seed=0, batch=4, lr=0.1, step=1, classes=3):
    rng = np.random.default_rng(seed)
    vals = init_params(graph, seed)
    images = graph.input("images")
    vals["images"] = rng.standard_normal(tuple(images.type.shape)).astype(np.float32)
    vals["labels"] = rng.integers(0, classes, batch).astype(np.int32)
    vals["lr"], vals["step"] = np.float32(lr), np.int32(step)
    return vals


def _grads(net, cfg, vals):
    """jax.grad of the forward graph (through the JAX rules, not gir's adjoints)."""
    fwd = specialize(net.build(mode="train", loss=True, label_smoothing=cfg.label_smoothing), net.binding(batch=4))
    f = as_jax_function(fwd)
    fixed = {v.name: vals[v.name] for v in fwd.inputs if v.role != "param"}
    return jax.grad(lambda p: f({**fixed, **p})["loss"])({v.name: vals[v.name] for v in fwd.params})


def _numpy_update(cfg: TrainConfig, p, g, state, lr, t):
    wd = cfg.weight_decay
    if cfg.optimizer == "sgd":
        v = cfg.momentum * state[0] + g + wd * p
        return p - lr * v, (v,)
    if cfg.optimizer == "rmsprop":
        g = g + wd * p
        s = cfg.rms_decay * state[0] + (1 - cfg.rms_decay) * g * g
        return p - lr * g / (np.sqrt(s) + cfg.eps), (s,)
    gg = g + wd * p if cfg.optimizer == "adam" else g
    m = cfg.beta1 * state[0] + (1 - cfg.beta1) * gg
    v = cfg.beta2 * state[1] + (1 - cfg.beta2) * gg * gg
    d = (m / (1 - cfg.beta1 ** t)) / (np.sqrt(v / (1 - cfg.beta2 ** t)) + cfg.eps)
    if cfg.optimizer == "adamw":
        d = d + wd * p
    return p - lr * d, (m, v)


SLOTS = {"sgd": ("momentum",), "adam": ("adam_m", "adam_v"), "adamw": ("adam_m", "adam_v"), "rmsprop": ("rms",)}


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_optimizer_update_matches_numpy(optimizer, clip):
    cfg = TrainConfig(optimizer=optimizer, weight_decay=0.01, clip_norm=clip, label_smoothing=0.1)
    step = specialize(build_train_step(MLP, cfg).graph, MLP.binding(batch=4))
    vals = _feed(step, step=3, lr=0.05)
    rng = np.random.default_rng(1)
    for v in step.inputs:                                   # a non-trivial optimizer state
        if ":" in v.name:
            vals[v.name] = np.abs(rng.standard_normal(tuple(v.type.shape))).astype(np.float32) * 0.1
    out = compile_jax(step)(vals)
    grads = {k: np.asarray(g, np.float64) for k, g in _grads(MLP, cfg, vals).items()}
    norm = np.sqrt(sum((g * g).sum() for g in grads.values()))
    if clip:
        assert out["grad_norm"] == pytest.approx(norm, rel=1e-5)
        grads = {k: g * clip / max(norm, clip) for k, g in grads.items()}
    for name, g in grads.items():
        state = tuple(vals[f"{s}:{name}"].astype(np.float64) for s in SLOTS[optimizer])
        new_p, new_state = _numpy_update(cfg, vals[name].astype(np.float64), g, state, 0.05, 3)
        np.testing.assert_allclose(out[name], new_p, rtol=2e-5, atol=1e-6)
        for s, want in zip(SLOTS[optimizer], new_state):
            np.testing.assert_allclose(out[f"{s}:{name}"], want, rtol=2e-5, atol=1e-6)


def test_large_gradients_reach_the_optimizer_through_a_barrier_that_the_pipeline_keeps():
    """A weight of LARGE_GRADIENT elements (1024 x 512) is updated from its gradient read through an optimization
    barrier, which the default pipeline keeps (so IREE cannot fuse the weight-gradient matmul with the update); a
    1023 x 512 weight, just under it, and the small head are read directly."""
    def walled(graph):
        users = graph.users()
        return sorted(math.prod(n.inputs[0].type.shape) for n in graph.nodes if n.op == "optimization_barrier"
                      and all(u.loc.path.startswith("optimizer.") for u in users[n.outputs[0]]))

    for width, want in ((1024, [LARGE_GRADIENT]), (1023, [])):
        net = Net("wide", [dense(width, 512, act="relu"), dense(512, 3)], input_shape=(N, width), num_classes=3)
        cfg = TrainConfig(optimizer="adamw")
        assert walled(build_train_step(net, cfg).graph) == want
        assert walled(lower_train_step(net, cfg, batch=4).primitive) == want


def test_running_statistics_are_updated_in_the_step():
    net, cfg = load_net_file(NETS / "cifar_cnn.py")
    step = specialize(build_train_step(net, cfg).graph, net.binding(batch=4, image=8))
    vals = _feed(step, batch=4, classes=10)
    out = compile_jax(step)(vals)
    path = next(k.split(":", 1)[1] for k in out if k.startswith("bn_mean:"))
    m = 4 * 8 * 8                                              # N*H*W of the first BN layer
    np.testing.assert_allclose(out[f"{path}.running_mean"], 0.1 * out[f"bn_mean:{path}"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[f"{path}.running_var"], 0.9 + 0.1 * out[f"bn_var:{path}"] * m / (m - 1),
                               rtol=1e-6)


def test_mobilenet_v2_train_step_on_iree_and_jax_against_jax_grad():
    """Batch 8 at 64x64, SGD (the momentum output is the gradient exactly, so gradients come back
    without the rounding of p - lr * g)."""
    net, cfg = load_net_file(NETS / "mobilenet_v2.py")
    cfg = cfg.replace(optimizer="sgd", weight_decay=0.0, label_smoothing=0.1)
    mod = lower_train_step(net, cfg, batch=8, image=64)
    vals = _feed(mod.primitive, batch=8, lr=0.01, classes=10)
    iree = dict(zip(mod.primitive.outputs, IreeSession(compile_text(mod.text)).call_numpy(
        "train_step", *[vals[v.name] for v in mod.primitive.inputs])))
    jx = compile_jax(mod.graph)(vals)   # the step before rewrites: XLA's convolutions, as the reference's
    fwd = specialize(net.build(mode="train", loss=True, label_smoothing=0.1), net.binding(batch=8, image=64))
    f = as_jax_function(fwd)
    fixed = {v.name: vals[v.name] for v in fwd.inputs if v.role != "param"}
    params = {v.name: vals[v.name] for v in fwd.params}
    ref_loss, ref = jax.jit(jax.value_and_grad(lambda p: f({**fixed, **p})["loss"]))(params)
    assert abs(iree["loss"] - jx["loss"]) < 1e-4
    assert abs(iree["loss"] - ref_loss) < 1e-4
    flat = lambda d: np.concatenate([np.asarray(d[k]).ravel() for k in params])  # noqa: E731
    r = flat(ref)
    rel = lambda g: np.linalg.norm(g - r) / np.linalg.norm(r)  # noqa: E731
    jax_err = rel(flat({k: jx[f"momentum:{k}"] for k in params}))
    iree_err = rel(flat({k: iree[f"momentum:{k}"] for k in params}))
    assert jax_err < 1e-4
    # This step is sensitive to rounding: perturbing the images by 1e-6 (relative) moves jax.grad's own
    # gradient by about 3e-2 (docs/performance.md). IREE's different f32 rounding lands within that.
    assert iree_err < 5e-2


def test_a_single_value_per_channel_still_lowers():
    """At batch 1 the last stages of MobileNetV2 at 32x32 are 1x1: one value per BN channel. The unbiased
    variance factor n/(n-1) would divide by zero; with nothing to correct it is 1."""
    net, cfg = load_net_file(str(NETS / "mobilenet_v2.py"))
    mod = lower_train_step(net, cfg, batch=1, image=32, passes="none", check=True)
    assert "inf" not in mod.text and "nan" not in mod.text.lower()


def test_char_gpt_train_step_at_n2_t16_trains_on_iree_in_lockstep_with_jax():
    """The token net's step with T bound by `seq`: i32 tokens and per-token labels [N, T], lowered with the default
    pipeline, compiled for the CPU, three steps beside the JAX backend (tests/lockstep.py)."""
    net, config = load_net_file(str(NETS / "char_gpt.py"))
    config = config.replace(batch_size=2)
    step = lower_train_step(net, config, batch=2, seq=16)
    types = {v.name: v.type.short() for v in step.primitive.inputs}
    assert types["tokens"] == types["labels"] == "[2,16] i32"
    assert step.primitive.outputs["logits"].type.short() == "[2,16,65]"
    assert '"stablehlo.gather"' in step.text and '"stablehlo.scatter"' in step.text
    train_in_lockstep(net, config, 2, None, 3, "char_gpt", seq=16)
