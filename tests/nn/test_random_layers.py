"""dropout and drop_path: masks from (seed, step, layer path) equal to an independent NumPy computation of the same
threefry bits, the same on IREE and JAX, new at every step, the identity in eval mode; gradients through the mask."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from jax.extend.random import threefry_2x32

from gir.autodiff import vjp
from gir.lower.iree_compile import compile_text
from gir.lower.iree_runtime import IreeSession
from gir.lower.jax_backend import evaluate
from gir.lower.pipeline import lower_graph
from gir.nn import Builder, drop_path, dropout
from gir.shapes.dims import N

SEED = 5
X = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
X4 = np.random.default_rng(1).standard_normal((4, 2, 3, 3)).astype(np.float32)


def np_uniform(seed: int, step: int, path: str, n: int) -> np.ndarray:
    """What the layers draw, computed here with JAX's threefry and NumPy: 24 bits per element into [0, 1)."""
    salt = zlib.crc32(path.encode()) & 0x7FFFFFFF
    key = np.array([seed, step], np.int32).view(np.uint32)
    counts = np.concatenate([np.arange(n, dtype=np.uint32), np.full(n, salt, np.uint32)])
    bits = np.asarray(threefry_2x32(key, counts))[:n]
    return (bits >> 8).astype(np.float32) * np.float32(2.0**-24)


def layer_path(graph) -> str:
    """The layer path of the graph's random layer (its provenance), which salts its numbers."""
    return next(n.loc.path for n in graph.nodes if n.op == "random_bits")


def build(layer, shape, mode="train", grad=False):
    b = Builder("t", mode=mode, seed=SEED)
    x = b.input("x", (N, *shape[1:]))
    y = layer(b, x)
    b.graph.set_output("y", y)
    if grad:
        w = b.input("w", (N, *shape[1:]))
        back = vjp(b.graph, {"y": w}, [x])
        b.graph.set_output("dx", back.grads[x])
    return b.graph


def run_both(graph, shape, feeds):
    """(IREE outputs, JAX outputs) of `graph` at batch shape[0], by output name."""
    mod = lower_graph(graph, {N: shape[0]}, "f")
    session = IreeSession(compile_text(mod.text, "cpu"))
    names = list(mod.primitive.outputs)
    iree = dict(zip(names, session.call_numpy("f", *[feeds[v.name] for v in mod.primitive.inputs])))
    return iree, evaluate(mod.primitive, feeds)


@pytest.mark.parametrize("p", [0.5, 0.1])
def test_dropout_mask_matches_numpy_on_iree_and_jax(p):
    graph = build(dropout(p), X.shape, grad=True)
    w = np.random.default_rng(2).standard_normal(X.shape).astype(np.float32)
    for step in (1, 2):
        iree, jax = run_both(graph, X.shape, {"x": X, "w": w, "step": np.int32(step)})
        keep = np_uniform(SEED, step, layer_path(graph), X.size).reshape(X.shape) >= np.float32(p)
        want = np.where(keep, X * np.float32(1 / (1 - p)), 0)
        np.testing.assert_array_equal(jax["y"], iree["y"])          # the same bits on both backends
        np.testing.assert_allclose(iree["y"], want, rtol=1e-6)
        np.testing.assert_allclose(iree["dx"], np.where(keep, w * np.float32(1 / (1 - p)), 0), rtol=1e-6)
        assert 0 < keep.mean() < 1
    _, other = run_both(graph, X.shape, {"x": X, "w": w, "step": np.int32(3)})
    assert not np.array_equal(other["y"] == 0, jax["y"] == 0)   # a new mask every step


def test_drop_path_drops_whole_examples():
    graph = build(drop_path(0.5), X4.shape)
    iree, jax = run_both(graph, X4.shape, {"x": X4, "step": np.int32(7)})
    keep = np_uniform(SEED, 7, layer_path(graph), 4) >= np.float32(0.5)
    want = np.where(keep[:, None, None, None], X4 * 2, 0)
    np.testing.assert_array_equal(iree["y"], jax["y"])
    np.testing.assert_allclose(iree["y"], want, rtol=1e-6)


@pytest.mark.parametrize("layer", [dropout(0.3), drop_path(0.3), dropout(0.0)])
def test_eval_mode_is_the_identity(layer):
    graph = build(layer, X4.shape, mode="eval")
    assert graph.outputs["y"] is graph.input("x") and not any(n.op == "random_bits" for n in graph.nodes)


def test_finite_differences_agree_with_the_gradient():
    """Linear in x for a fixed mask: central differences in float64 give the backward pass's numbers."""
    graph = build(dropout(0.4), X.shape, grad=True)
    w = np.random.default_rng(3).standard_normal(X.shape).astype(np.float32)
    out = evaluate(lower_graph(graph, {N: 4}, "f").primitive, {"x": X, "w": w, "step": np.int32(4)})
    fwd = lower_graph(build(dropout(0.4), X.shape), {N: 4}, "g").primitive
    eps = 1e-2
    for i in [(0, 0), (1, 3), (3, 5), (2, 2)]:
        hi, lo = X.copy(), X.copy()
        hi[i] += eps
        lo[i] -= eps
        f = [float(np.sum(evaluate(fwd, {"x": v, "step": np.int32(4)})["y"].astype(np.float64) * w)) for v in (hi, lo)]
        assert (f[0] - f[1]) / (2 * eps) == pytest.approx(float(out["dx"][i]), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("p", [-0.1, 1.0, "0.5"])
def test_bad_probability(p):
    with pytest.raises(ValueError, match="p must be in \\[0, 1\\)"):
        build(dropout(p), X.shape)


NET_FILE = """from gir.nn import H, N, W, Net, conv_bn, dense, dropout, global_avg_pool
from gir.train import TrainConfig

net = Net("drop_cnn", [conv_bn(1, 16, k=3), conv_bn(16, 32, k=3, stride=2), global_avg_pool(), dropout(0.2),
                       dense(32, 10)], input_shape=(N, 1, H, W), num_classes=10, sizes={"H": 16, "W": 16})
config = TrainConfig(image_size=16, epochs=1, batch_size=32, learning_rate=0.05)
"""


def test_a_net_with_dropout_trains_the_same_on_iree_and_jax(tmp_path):
    from gir.cli import main
    from gir.train.runlog import read_trace

    (tmp_path / "drop_cnn.py").write_text(NET_FILE)
    for backend in ("iree", "jax"):
        assert main(["train", str(tmp_path / "drop_cnn.py"), "-q", "--backend", backend,
                     "--out", str(tmp_path / backend)]) == 0
    losses = [[r["loss"] for r in read_trace(tmp_path / b / "trace.jsonl") if "loss" in r and not r.get("eval")]
              for b in ("iree", "jax")]
    assert len(losses[0]) == 45
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


def test_a_run_with_dropout_resumes_bit_exactly(tmp_path):
    """Stopped by SIGINT mid-epoch and resumed, a dropout net's losses equal the uninterrupted run's: its masks
    are functions of (seed, step, layer), nothing else."""
    import signal
    import subprocess
    import sys
    import time

    from gir.cli import main
    from gir.train.runlog import read_trace

    (tmp_path / "drop_cnn.py").write_text(NET_FILE)
    net_file, args = str(tmp_path / "drop_cnn.py"), ["--epochs", "2", "-q"]

    def losses(run):
        return {r["step"]: r["loss"] for r in read_trace(run / "trace.jsonl") if "loss" in r and not r.get("eval")}

    assert main(["train", net_file, *args, "--out", str(tmp_path / "full")]) == 0
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "gir", "train", net_file, *args, "--out", str(cut)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not ((cut / "trace.jsonl").exists() and max(losses(cut), default=0) >= 50) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert max(losses(cut)) < 90
    assert main(["train", net_file, "--resume", str(cut), "-q"]) == 0
    assert losses(cut) == losses(tmp_path / "full")      # every step, bit for bit
