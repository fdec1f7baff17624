"""Every net in nets/ lowers; its forward and eval modules compile with IREE llvm-cpu, run, and agree
with the JAX backend; its train step and eval module cross-compile for rocm gfx1100 and cuda sm_80 with the GPU
pipeline, as `gir lower --target rocm|cuda` builds them."""
import glob
import os

import numpy as np
import pytest
from conftest import slow_run

from gir.lower.iree_compile import compile_text
from gir.lower.iree_runtime import IreeSession
from gir.lower.jax_backend import evaluate
from gir.lower.pipeline import lower_net
from gir.netfile import load_net_file
from gir.nn import T
from gir.nn.params import init_params
from gir.rewrite import pipeline_for_backend
from gir.train.step import lower_train_step

NETS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "nets", "*.py")))
# ViT's input size is fixed. Train-mode BN over very few values (batch 2 at a 1x1 map) is
# ill-conditioned, so deep nets run at 64x64 with batch 4 to keep the comparison meaningful.
SIZES = {"vit_tiny": (2, None), "mobilenet_v2": (8, 64), "efficientnet_b0": (4, 64), "resnet34": (4, 64),
         "resnet50": (4, 64), "resnet18": (4, 64), "mobilenet_v3_large": (4, 64), "mobilenet_v4_conv_s": (4, 64),
         "efficientnet_v2_s": (4, 64)}


def _args(module, seed=0, state=None):
    """Inputs for a module: initial parameters, `state` (by name) over the initial state, random data."""
    params = {**init_params(module.graph, seed), **(state or {})}
    rng = np.random.default_rng(seed)
    out = []
    for v in module.primitive.inputs:
        if v.role in ("param", "state"):
            out.append(params[v.name])
        elif v.name == "tokens":   # ids into the vocabulary, which a language model predicts as its classes
            out.append(rng.integers(0, module.graph.outputs["logits"].type.shape[-1], v.type.shape).astype(np.int32))
        elif v.type.dtype.is_float:
            out.append(rng.standard_normal(tuple(v.type.shape)).astype(np.float32))
        else:   # the step number that keys dropout and drop path
            out.append(np.full(tuple(v.type.shape), 1, np.int32))
    return out


@pytest.mark.parametrize("path", NETS, ids=lambda p: os.path.basename(p)[:-3])
def test_net_forward_and_eval_run_on_iree_and_match_jax(path):
    name = os.path.basename(path)[:-3]
    net, _ = load_net_file(path)
    batch, image = SIZES.get(name, (2, 32))
    if not net.image_sized:
        image = None   # a fixed-size input takes no image size
    modules = lower_net(net, batch=batch, image=image)
    # Eval runs on the forward pass's batch statistics as running statistics: with the initial ones (mean 0,
    # variance 1) nothing normalizes, and 40 residual blocks (EfficientNetV2-S) grow logits into the thousands,
    # where two correct float32 orders of summation no longer agree.
    running: dict[str, np.ndarray] = {}
    for fname, mod in modules.items():
        assert "select_and_scatter" not in mod.text and "stablehlo.batch_norm" not in mod.text
        assert f'("{os.path.relpath(path)}":' in mod.text  # ops carry the net file's locations
        args = _args(mod, state=running if fname == "eval" else None)
        got = IreeSession(compile_text(mod.text, "cpu")).call_numpy(fname, *args)
        want = evaluate(mod.graph, {v.name: a for v, a in zip(mod.primitive.inputs, args)})
        assert len(got) == len(want)
        for (k, w), g in zip(want.items(), got):
            w = np.asarray(w)
            assert g.shape == w.shape and np.isfinite(g).all(), (fname, k)
            scale = max(1.0, float(np.abs(w).max()))
            np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * scale, err_msg=f"{name} {fname} {k}")
        assert got[0].shape == ((batch, net.sizes[T], net.num_classes) if T in net.symbols else (batch, 10))
        if fname == "forward":
            running = {f"{k.split(':', 1)[1]}.running_{k.split(':', 1)[0][3:]}": np.asarray(w)
                       for k, w in want.items() if k.startswith(("bn_mean:", "bn_var:"))}


GPUS = (("rocm", "gfx1100"), ("cuda", "sm_80"))
GPU_BATCH, GPU_IMAGE = 2, 32
"""The cross-compile size: compile time hardly depends on it, and 32x32 meets every image-sized net's constraints."""


def _gpu_cases() -> list[tuple[str, str, str, str]]:
    """(net file, module, target, chip): each net's train step for one GPU and its eval module for the other, the GPUs
    alternating over the nets (under --slow both modules for both). With -n 2 on 2 cores shared with other jobs these
    28 cases took 6.2 min: train steps from 2 s (MLP) to 146 s (EfficientNetV2-S), 616 s together, eval modules
    97 s; both targets for every module would double that."""
    cases = []
    for i, path in enumerate(NETS):
        step_gpu, eval_gpu = GPUS[i % 2], GPUS[1 - i % 2]
        pairs = [(m, g) for m in ("train_step", "eval") for g in GPUS] if slow_run() else [
            ("train_step", step_gpu), ("eval", eval_gpu)]
        cases += [(path, module, *gpu) for module, gpu in pairs]
    return cases


@pytest.mark.parametrize("path, module, target, chip", _gpu_cases(),
                         ids=lambda v: os.path.basename(v)[:-3] if str(v).endswith(".py") else str(v))
def test_net_cross_compiles_for_gpus(path, module, target, chip):
    net, config = load_net_file(path)
    image = GPU_IMAGE if net.image_sized else None
    passes = pipeline_for_backend("default", "iree", target)   # what `gir lower --target rocm|cuda` runs
    mod = (lower_train_step(net, config, batch=GPU_BATCH, image=image, passes=passes) if module == "train_step"
           else lower_net(net, batch=GPU_BATCH, image=image, passes=passes)["eval"])
    vmfb = compile_text(mod.text, target, chip)
    assert len(vmfb) > 10_000 and vmfb[:2] == b"PK"  # a .vmfb is a zip-aligned flatbuffer archive
